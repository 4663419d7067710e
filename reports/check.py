"""Regression gates: machine-independent figures of a run against a baseline run.

Gates (decode study):
- `cached slope`: the fitted log-log slope of cached decode time vs T is <= 1.3, and not above the
  baseline's by more than 0.15.
- `uncached slope`: without a cache the slope between the two longest lengths is >= 1.6 (groups
  whose longest length is at least 256: below that, fixed per-forward costs hide the T^2 growth).
- `cache speed-up`: the speed-up of the cache at the longest common T is >= 0.8x the baseline's.
- `identical tokens`: cached and uncached decode agree; ours and transformers agree.
- `time` (only when the machine info matches the baseline's): no benchmark's fastest round slower
  than 2x the baseline's (benchmarks of at least 10 ms; shorter ones are mostly scheduler jitter).
Every time used is pytest-benchmark's `min` (the fastest round).
A group present in the baseline and missing from the run fails (`missing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import analysis
from .analysis import TIME
from .load import Results, to_frame

CACHED_SLOPE_MAX = 1.3
CACHED_SLOPE_DRIFT = 0.15
UNCACHED_SLOPE_MIN = 1.6
UNCACHED_MIN_LENGTH = 256
SPEEDUP_KEEP = 0.8
TIME_FACTOR_MAX = 2.0
TIME_MIN_SECONDS = 0.01  # shorter benchmarks are dominated by scheduler jitter: not time-gated
KEY = ["variant", "backend", "p_batch", "p_dtype"]


@dataclass(frozen=True)
class Gate:
    """One checked figure."""

    gate: str
    subject: str
    value: str
    limit: str
    passed: bool


def _key_text(row: pd.Series | dict, cols: list[str]) -> str:
    return " ".join(f"{row[c]}" if not c.startswith("p_") else f"{c[2:]}={row[c]}" for c in cols)


def machines_match(a: Results, b: Results) -> bool:
    """Whether absolute times are comparable: same CPU, GPUs, threads and torch build."""
    pa, pb = a.archbench_info.get("profile", {}), b.archbench_info.get("profile", {})
    keys = ("cpu_model", "cpu_count_logical", "torch_threads", "torch")
    gpus = lambda p: [g.get("name") for g in p.get("gpus") or []]  # noqa: E731
    return bool(pa) and all(pa.get(k) == pb.get(k) for k in keys) and gpus(pa) == gpus(pb)


def check(baseline: Results, current: Results) -> list[Gate]:
    """Every gate of `current` against `baseline`."""
    gates: list[Gate] = []
    base_df, cur_df = to_frame([baseline]), to_frame([current])
    base_fits, cur_fits = analysis.slopes(base_df), analysis.slopes(cur_df)
    if not base_fits.empty:
        cur_index = {tuple(r[c] for c in [*KEY, "p_cache"]): r for _, r in cur_fits.iterrows()} \
            if not cur_fits.empty else {}
        for _, b in base_fits.iterrows():
            key = tuple(b[c] for c in [*KEY, "p_cache"])
            subject = _key_text(b, [*KEY, "p_cache"])
            c = cur_index.get(key)
            if c is None:
                gates.append(Gate("missing", subject, "not measured", "measured as in the baseline", False))
                continue
            if b["p_cache"] == "raw":
                gates.append(Gate("cached slope", subject, f"{c['slope']:.3f}", f"<= {CACHED_SLOPE_MAX}",
                                  bool(c["slope"] <= CACHED_SLOPE_MAX)))
                limit = b["slope"] + CACHED_SLOPE_DRIFT
                gates.append(Gate("cached slope vs baseline", subject, f"{c['slope']:.3f}",
                                  f"<= {limit:.3f} (baseline {b['slope']:.3f} + {CACHED_SLOPE_DRIFT})",
                                  bool(c["slope"] <= limit)))
            elif c["longest"] >= UNCACHED_MIN_LENGTH:
                gates.append(Gate("uncached slope", f"{subject} (two longest T)", f"{c['end_slope']:.3f}",
                                  f">= {UNCACHED_SLOPE_MIN}", bool(c["end_slope"] >= UNCACHED_SLOPE_MIN)))
    base_pay, cur_pay = analysis.cache_payoff(base_df), analysis.cache_payoff(cur_df)
    if not base_pay.empty:
        cur_index = {tuple(r[c] for c in KEY): r for _, r in cur_pay.iterrows()} if not cur_pay.empty else {}
        for _, b in base_pay.iterrows():
            subject = _key_text(b, KEY)
            c = cur_index.get(tuple(b[k] for k in KEY))
            if c is None:
                gates.append(Gate("missing", subject + " (cache speed-up)", "not measured", "measured", False))
                continue
            limit = SPEEDUP_KEEP * b["speedup_longest"]
            gates.append(Gate("cache speed-up", f"{subject} T={c['longest']}", f"{c['speedup_longest']:.2f}x",
                              f">= {limit:.2f}x ({SPEEDUP_KEEP} x baseline {b['speedup_longest']:.2f}x)",
                              bool(c["speedup_longest"] >= limit)))
    agree = analysis.token_agreement(cur_df)
    for _, r in agree.iterrows() if not agree.empty else []:
        if not r["identical"]:
            gates.append(Gate("identical tokens", _key_text(r, [*KEY, "p_decode_tokens"]) + " cached vs uncached",
                              "different", "identical", False))
    if not agree.empty and agree["identical"].all():
        gates.append(Gate("identical tokens", f"{len(agree)} cached/uncached pairs", "identical", "identical", True))
    peers = analysis.peers(cur_df)
    for _, r in peers.iterrows() if not peers.empty else []:
        gates.append(Gate("identical tokens", f"{r['variant']} {r['p_cache']} T={r['p_decode_tokens']} vs transformers",
                          "identical" if r["tokens_identical"] else "different", "identical",
                          bool(r["tokens_identical"])))
    if machines_match(baseline, current):
        base_times = base_df.set_index("name")[TIME]
        cur_times = cur_df.set_index("name")[TIME]
        for name in sorted(set(base_times.index) & set(cur_times.index)):
            if base_times[name] < TIME_MIN_SECONDS:
                continue
            ratio = float(cur_times[name] / base_times[name])
            gates.append(Gate("time", name, f"{ratio:.2f}x baseline", f"<= {TIME_FACTOR_MAX}x",
                              ratio <= TIME_FACTOR_MAX))
    else:
        gates.append(Gate("time", "absolute times", "skipped: machine info differs from the baseline's",
                          "same machine", True))
    return gates


def format_table(gates: list[Gate]) -> str:
    """The gates as an aligned text table, failures marked."""
    header = ("status", "gate", "subject", "value", "limit")
    rows = [("PASS" if g.passed else "FAIL", g.gate, g.subject, g.value, g.limit) for g in gates]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
