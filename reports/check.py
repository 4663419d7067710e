"""Regression gates: machine-independent figures of a run against a baseline run.

Gates (decode study), each on the statistic that is steadiest on a noisy machine:
- `cached slope`: the log-log slope of cached decode time vs T, fitted over every length, is <= 1.3
  and not above the baseline's by more than 0.15.
- `uncached slope`: without a cache, the local slope at the longest length of a*T + b*T^2 fitted to
  every length is >= 1.6 (groups of at least 3 lengths reaching 256 or more; below that, fixed
  per-forward costs hide the T^2 growth).
- `cache speed-up`: the cache's speed-up at the longest common T, from those fitted curves (or the
  measured times where fewer than 3 lengths), is >= 0.8x the baseline's.
- `identical tokens`: cached and uncached decode agree; ours and transformers agree.
- `time` (only when the machine info matches the baseline's): no benchmark of at least 10 ms has a
  fastest round slower than 3x the baseline's (shared machines do slow down by 2x for seconds).
A group present in the baseline and missing from the run fails (`missing`).
Slopes and speed-ups use each round's time divided by a calibration workload timed just before it
(`time_norm`, the median over rounds): a shared machine's slow phases scale both alike. Runs without
calibrations fall back to pytest-benchmark's `min` (the fastest round), as the time gates always do.
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
TIME_FACTOR_MAX = 3.0
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


def _gate_time(*frames: pd.DataFrame) -> str:
    """`time_norm` (round time over the calibration measured just before it) when both runs have it,
    else the fastest round in seconds."""
    for df in frames:
        d = analysis.decode_rows(df)
        if d.empty or d["time_norm"].isna().any():
            return TIME
    return "time_norm"


def check(baseline: Results, current: Results) -> list[Gate]:
    """Every gate of `current` against `baseline`."""
    gates: list[Gate] = []
    base_df, cur_df = to_frame([baseline]), to_frame([current])
    time_col = _gate_time(base_df, cur_df)
    base_fits, cur_fits = analysis.slopes(base_df, time_col), analysis.slopes(cur_df, time_col)
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
                gates.append(Gate("cached slope", subject, f"{c['slope_all']:.3f}", f"<= {CACHED_SLOPE_MAX}",
                                  bool(c["slope_all"] <= CACHED_SLOPE_MAX)))
                limit = b["slope_all"] + CACHED_SLOPE_DRIFT
                gates.append(Gate("cached slope vs baseline", subject, f"{c['slope_all']:.3f}",
                                  f"<= {limit:.3f} (baseline {b['slope_all']:.3f} + {CACHED_SLOPE_DRIFT})",
                                  bool(c["slope_all"] <= limit)))
            elif c["longest"] >= UNCACHED_MIN_LENGTH and c["points"] >= 3:
                gates.append(Gate("uncached slope", f"{subject} (at T={c['longest']})", f"{c['model_end_slope']:.3f}",
                                  f">= {UNCACHED_SLOPE_MIN}", bool(c["model_end_slope"] >= UNCACHED_SLOPE_MIN)))
    base_pay, cur_pay = analysis.cache_payoff(base_df, time_col), analysis.cache_payoff(cur_df, time_col)
    if not base_pay.empty:
        cur_index = {tuple(r[c] for c in KEY): r for _, r in cur_pay.iterrows()} if not cur_pay.empty else {}
        for _, b in base_pay.iterrows():
            subject = _key_text(b, KEY)
            c = cur_index.get(tuple(b[k] for k in KEY))
            if c is None:
                gates.append(Gate("missing", subject + " (cache speed-up)", "not measured", "measured", False))
                continue
            base_speedup = b["speedup_model"] if b["speedup_model"] == b["speedup_model"] else b["speedup_longest"]
            speedup = c["speedup_model"] if c["speedup_model"] == c["speedup_model"] else c["speedup_longest"]
            limit = SPEEDUP_KEEP * base_speedup
            gates.append(Gate("cache speed-up", f"{subject} T={c['longest']}", f"{speedup:.2f}x",
                              f">= {limit:.2f}x ({SPEEDUP_KEEP} x baseline {base_speedup:.2f}x)",
                              bool(speedup >= limit)))
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


def combine(runs: list[list[Gate]]) -> list[Gate]:
    """Gates of several runs of the same code on the same machine: a gate passes when it passes in any
    run. A regression fails in every run; a slow patch of a shared machine does not."""
    combined: dict[tuple[str, str], Gate] = {}
    for gates in runs:
        for g in gates:
            key = (g.gate, g.subject)
            if key not in combined or (g.passed and not combined[key].passed):
                combined[key] = g
    return list(combined.values())


def format_table(gates: list[Gate]) -> str:
    """The gates as an aligned text table, failures marked."""
    header = ("status", "gate", "subject", "value", "limit")
    rows = [("PASS" if g.passed else "FAIL", g.gate, g.subject, g.value, g.limit) for g in gates]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
