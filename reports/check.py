"""Regression gates: machine-independent figures of a run against a baseline.

The baseline is one run or several runs of the same code (a directory of results files): each
decode gate's reference figure is then the median over the runs (`reference_figures`), the time
gate's the median fastest round, and the other studies' the run that measured most of each.

Gates (decode study), each on the statistic that is steadiest on a noisy machine:
- `cached slope`: the log-log slope of cached decode time vs T, fitted over every length, is <= 1.3
  and not above the baseline's by more than 0.15.
- `uncached slope`: without a cache, the local slope at the longest length of a*T + b*T^2 fitted to
  every length is >= 1.6 (groups of at least 3 lengths reaching 256 or more; below that, fixed
  per-forward costs hide the T^2 growth).
- `cache speed-up`: the cache's speed-up at the longest uncached length is >= 0.8x the baseline's:
  the median ratio of paired rounds (each uncached round timed right after a cached run of the same
  length) where both runs have them, else from those fitted curves (or the measured times where
  fewer than 3 lengths).
- `identical tokens`: cached and uncached decode agree; ours and transformers agree.
- `time` (only when the machine info matches the baseline's): no benchmark of at least 10 ms has a
  fastest round slower than 3x the baseline's (shared machines do slow down by 2x for seconds).
- `decode layouts` / `decode layout` (only when the machine info matches; which weight layout streams
  fastest is a property of the machine): every layout the baseline tuned a model among is still a
  candidate (one that drops out is support that broke, e.g. archbench's gemv kernel no longer builds),
  and where one layout won every baseline run, by at least 10% in the median run, the run chose it too
  (one tuning in a slow second can narrow a clear lead: gemv led GPT-2 124M by 9-46% over eight runs
  here, median 31%). This is the gate for a fall-back to a slower layout: the cache speed-up moves by
  20% from one hour to the next on a shared machine, the tuner's lead does not vanish.
  Benchmarks whose time is not the measurement (training that a disk cache may skip, accuracy
  evaluations, counts, fresh-process memory probes) are left out (`UNTIMED`).
A group present in the baseline and missing from the run fails (`missing`).

Gates of the other studies, all machine-independent (exact counts, seeded accuracy figures with a
tolerance, and relations that held in the baseline):
- KV caches: exact bytes per token of every kind equal the baseline's; tq3 >= 4.9x smaller than fp16;
  the accuracy figures (KL vs the raw cache) at most 25% (+1e-4) above the baseline's.
- INT8: KL vs fp32 at most 25% (+1e-4) above the baseline's per backend, scheme and policy; the
  quantized layers >= 3.5x smaller than fp32; quantizing the norms no better than keeping them.
- LoRA: the variance slopes within 0.1 of -1 (LoRA) and 0 (rsLoRA); at the top rank rsLoRA still
  ends below LoRA if it did in the baseline.
- Positions: parameter counts equal the baseline's; learned positions refuse past their table.
- Norms: under Xavier init Post-LN's last/first gradient ratio > 1 and Pre-LN's < 1 where the baseline
  had it so; Pre-LN fails no more often than Post-LN.
- Tying: parameter counts equal the baseline's.
Slopes and fitted speed-ups use each round's time divided by a calibration workload timed just before it
(`time_norm`, the median over rounds): a shared machine's slow phases scale both alike. Runs without
calibrations fall back to pytest-benchmark's `min` (the fastest round), as the time gates always do.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
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


def gate_time(*frames: pd.DataFrame) -> str:
    """`time_norm` (round time over the calibration measured just before it) when every run that has
    decode rows has it for all of them, else the fastest round in seconds."""
    decode = [d for d in (analysis.decode_rows(df) for df in frames) if not d.empty]
    if not decode or any(d["time_norm"].isna().any() for d in decode):
        return TIME
    return "time_norm"


def check(baseline: Results | Sequence[Results], current: Results) -> list[Gate]:
    """Every gate of `current` against `baseline`: one run, or several runs of the same code (see
    `reference_figures`: each decode gate's reference is the median over the runs that measured it)."""
    baselines = [baseline] if isinstance(baseline, Results) else list(baseline)
    if not baselines:
        raise ValueError("check needs at least one baseline run")
    gates: list[Gate] = []
    base_frames, cur_df = [to_frame([b]) for b in baselines], to_frame([current])
    time_col = gate_time(*base_frames, cur_df)
    base_fits, base_pay = reference_figures(base_frames, time_col)
    cur_fits = analysis.slopes(cur_df, time_col)
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
                                  f"<= {limit:.3f} (baseline {_spread(b, 'slope_all', '.3f')} "
                                  f"+ {CACHED_SLOPE_DRIFT})",
                                  bool(c["slope_all"] <= limit)))
            elif c["longest"] >= UNCACHED_MIN_LENGTH and c["points"] >= 3:
                gates.append(Gate("uncached slope", f"{subject} (at T={c['longest']})", f"{c['model_end_slope']:.3f}",
                                  f">= {UNCACHED_SLOPE_MIN}", bool(c["model_end_slope"] >= UNCACHED_SLOPE_MIN)))
    cur_pay = analysis.cache_payoff(cur_df, time_col)
    if not base_pay.empty:
        cur_index = {tuple(r[c] for c in KEY): r for _, r in cur_pay.iterrows()} if not cur_pay.empty else {}
        for _, b in base_pay.iterrows():
            subject = _key_text(b, KEY)
            c = cur_index.get(tuple(b[k] for k in KEY))
            if c is None:
                gates.append(Gate("missing", subject + " (cache speed-up)", "not measured", "measured", False))
                continue
            # paired rounds where both runs have them, else the fitted curves (the same kind on both sides)
            column = "speedup_paired" if _finite(b["speedup_paired"]) and _finite(c["speedup_paired"]) \
                else "speedup_fit"
            how = "paired" if column == "speedup_paired" else "fitted"
            limit = SPEEDUP_KEEP * b[column]
            gates.append(Gate("cache speed-up", f"{subject} T={c['longest']}", f"{c[column]:.2f}x ({how})",
                              f">= {limit:.2f}x ({SPEEDUP_KEEP} x baseline {_spread(b, column, '.2f', 'x')})",
                              bool(c[column] >= limit)))
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
    matches = [machines_match(b, current) for b in baselines]
    same_machine = [df for df, match in zip(base_frames, matches, strict=True) if match]
    if same_machine:
        base_times = pd.concat([_timed(df)[["name", TIME]] for df in same_machine]).groupby("name")[TIME].median()
        cur_times = _timed(cur_df).set_index("name")[TIME]
        for name in sorted(set(base_times.index) & set(cur_times.index)):
            if base_times[name] < TIME_MIN_SECONDS:
                continue
            ratio = float(cur_times[name] / base_times[name])
            gates.append(Gate("time", name, f"{ratio:.2f}x baseline", f"<= {TIME_FACTOR_MAX}x",
                              ratio <= TIME_FACTOR_MAX))
    else:
        gates.append(Gate("time", "absolute times", "skipped: machine info differs from the baseline's",
                          "same machine", True))
    gates += layout_gates(base_frames, matches, cur_df)
    gates += study_gates(fullest_run_per_study(base_frames), cur_df)
    return gates


LAYOUT_MARGIN = 0.10


def _layouts_by_model(df: pd.DataFrame) -> dict[tuple, tuple[str, dict[str, float]]]:
    """(variant, backend, batch) -> the chosen layout and each candidate's seconds per step (one run)."""
    return {key[1:]: choice for key, choice in analysis.tuned_layouts(df).items()}


def _margin(chosen: str, timings: dict[str, float]) -> float:
    """How far ahead the chosen layout was: the next fastest candidate's time over its own, minus 1
    (negative where the tuner kept a preferred layout that was within its tie of a faster one)."""
    others = [t for name, t in timings.items() if name != chosen]
    return min(others) / timings[chosen] - 1 if others and chosen in timings else float("nan")


def layout_gates(base_frames: list[pd.DataFrame], same_machine: list[bool], cur_df: pd.DataFrame) -> list[Gate]:
    """The tuned weight layouts of `cur_df` against the baseline runs measured on the same machine (those
    whose `same_machine` flag is set): the same candidates, and the same winner where it won clearly every
    time."""
    tuned = [(_layouts_by_model(df), match) for df, match in zip(base_frames, same_machine, strict=True)]
    if not any(layouts for layouts, _ in tuned):
        return []
    runs = [layouts for layouts, match in tuned if match]
    if not runs:
        return [Gate("decode layout", "tuned weight layouts", "skipped: machine info differs from the baseline's",
                     "same machine", True)]
    current = _layouts_by_model(cur_df)
    decode = analysis.decode_rows(cur_df)
    measured = set() if decode.empty else set(zip(decode["variant"], decode["backend"], decode["p_batch"].astype(int),
                                                  strict=True))
    gates = []
    for key in dict.fromkeys(k for run in runs for k in run):
        if key not in measured:  # a model the run did not decode at all: the `missing` gates say so
            continue
        subject = f"{key[0]} {key[1]} batch={key[2]}"
        base = [run[key] for run in runs if key in run]
        expected = sorted({name for _, timings in base for name in timings})
        if key not in current:
            gates.append(Gate("decode layout", subject, "not tuned", f"tuned among {', '.join(expected)}", False))
            continue
        chosen, timings = current[key]
        dropped = [name for name in expected if name not in timings]
        gates.append(Gate("decode layouts", subject, ", ".join(sorted(timings)) or "none",
                          f"includes {', '.join(expected)} (the baseline's candidates)", not dropped))
        winners = {c for c, _ in base}
        margins = [_margin(c, t) for c, t in base]
        known = all(m == m for m in margins)  # a margin is NaN where the tuner's timings lack the winner
        if len(winners) == 1 and known and statistics.median(margins) >= LAYOUT_MARGIN:
            winner = winners.pop()
            ahead = _margin(chosen, timings)
            gates.append(Gate("decode layout", subject,
                              f"{chosen} (next fastest {ahead:+.0%} per step)" if ahead == ahead else chosen,
                              f"{winner} (won all {len(base)} baseline runs by {min(margins):.0%}-{max(margins):.0%}, "
                              f"median {statistics.median(margins):.0%})", chosen == winner))
    return gates


def _median_over_runs(tables: list[pd.DataFrame], key: list[str], columns: list[str]) -> pd.DataFrame:
    """Per `key`: the median of each of `columns` over the runs' tables (NaN left out), with its min, max
    and number of runs (`<column>_min`, `_max`, `_runs`)."""
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame()
    stacked = pd.concat(tables, ignore_index=True)
    parts = []
    for column in columns:
        agg = stacked.groupby(key, sort=False)[column].agg(["median", "min", "max", "count"])
        parts.append(agg.rename(columns={"median": column, "min": f"{column}_min", "max": f"{column}_max",
                                         "count": f"{column}_runs"}))
    return pd.concat(parts, axis=1).reset_index()


def reference_figures(base_frames: list[pd.DataFrame], time_col: str = TIME) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The decode gates' references from one or more baseline runs: per group and cache mode the median
    cached slope, and per group the median cache speed-up (paired rounds, and from the fitted curves),
    each with its range and number of runs.

    One run's figure is one draw from a shared machine's spread (the speed-up of GPT-2 124M on
    onnxruntime moved between 3.0x and 4.1x from one run to the next here), and a gate relative to a
    draw near the top of that spread fails runs that are merely ordinary. The median of several runs
    is the figure a regression has to move.
    """
    fits = _median_over_runs([analysis.slopes(df, time_col) for df in base_frames], [*KEY, "p_cache"], ["slope_all"])
    pays = _median_over_runs([analysis.cache_payoff(df, time_col) for df in base_frames], KEY,
                             ["speedup_paired", "speedup_fit"])
    return fits, pays


def _spread(row: pd.Series, column: str, fmt: str, unit: str = "") -> str:
    """A reference figure as text: the value, and with several runs their median and range."""
    value = format(row[column], fmt) + unit
    runs = int(row[f"{column}_runs"])
    if runs < 2:
        return value
    low, high = format(row[f"{column}_min"], fmt), format(row[f"{column}_max"], fmt)
    return f"{value}, median of {runs} runs {low}-{high}{unit}"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and value == value


def fullest_run_per_study(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per study, the rows of the run with the most records of it (the first such run on a tie). The
    other studies' gates compare exact counts and seeded figures, which do not vary between runs of
    the same code; a smaller preset's run of a study (fewer variants) must not stand in for a fuller one."""
    counts = [df["study"].value_counts() if not df.empty else pd.Series(dtype=int) for df in frames]
    parts = []
    for study in dict.fromkeys(s for c in counts for s in c.index):
        best = max(range(len(frames)), key=lambda i: (counts[i].get(study, 0), -i))
        parts.append(frames[best][frames[best]["study"] == study])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


KL_TOLERANCE, KL_FLOOR = 1.25, 1e-4
TQ3_COMPRESSION_MIN = 4.9
INT8_LAYER_SIZE_MIN = 3.5
VARIANCE_SLOPE_TOLERANCE = 0.1


def _kl_gate(name: str, subject: str, base: float, cur: float) -> Gate:
    limit = KL_TOLERANCE * base + KL_FLOOR
    return Gate(name, subject, f"{cur:.3g}", f"<= {limit:.3g} (baseline {base:.3g})", bool(cur <= limit))


def _missing(study: str, base_df: pd.DataFrame, cur_df: pd.DataFrame) -> Gate | None:
    has = lambda df: not df.empty and (df["study"] == study).any()  # noqa: E731
    if has(base_df) and not has(cur_df):
        return Gate("missing", f"{study} study", "not measured", "measured as in the baseline", False)
    return None


def study_gates(base_df: pd.DataFrame, cur_df: pd.DataFrame) -> list[Gate]:
    """Gates of the KV-cache, INT8, LoRA, positions, norms and tying studies (see the module docstring)."""
    gates: list[Gate] = []
    for study in ("kv_memory", "kv_accuracy", "int8", "lora", "positions", "norms", "tying"):
        gate = _missing(study, base_df, cur_df)
        if gate:
            gates.append(gate)
    base_cap, cur_cap = analysis.kv_capacity(base_df), analysis.kv_capacity(cur_df)
    if not base_cap.empty and not cur_cap.empty:
        cur = cur_cap.drop_duplicates(["variant", "kind"]).set_index(["variant", "kind"])["bytes_per_token"]
        for r in base_cap.drop_duplicates(["variant", "kind"]).itertuples():
            value = cur.get((r.variant, r.kind))
            gates.append(Gate("kv exact bytes", f"{r.variant} {r.kind}", fmt_int(value), f"== {int(r.bytes_per_token)}",
                              value == r.bytes_per_token))
        small = cur_cap[cur_cap["variant"] == cur_cap["variant"].iloc[0]].set_index("kind")["bytes_per_token"]
        if {"tq3", "raw-fp16"} <= set(small.index):
            ratio = small["raw-fp16"] / small["tq3"]
            gates.append(Gate("kv compression", f"{cur_cap['variant'].iloc[0]} tq3 vs raw fp16", f"{ratio:.2f}x",
                              f">= {TQ3_COMPRESSION_MIN}x", bool(ratio >= TQ3_COMPRESSION_MIN)))
    base_acc, cur_acc = analysis.kv_accuracy(base_df), analysis.kv_accuracy(cur_df)
    if not base_acc.empty and not cur_acc.empty:
        cur = cur_acc.set_index(["variant", "p_cache"])["m_kl_mean_nats"]
        for r in base_acc[base_acc["p_cache"] != "raw-fp32"].itertuples():
            if (r.variant, r.p_cache) in cur.index:
                gates.append(_kl_gate("kv accuracy", f"{r.variant} {r.p_cache} KL", r.m_kl_mean_nats,
                                      cur[(r.variant, r.p_cache)]))
    gates += _int8_gates(base_df, cur_df)
    gates += _arch_gates(base_df, cur_df)
    return gates


def fmt_int(value: object) -> str:
    return "not measured" if value is None or value != value else f"{int(value)}"


def _int8_gates(base_df: pd.DataFrame, cur_df: pd.DataFrame) -> list[Gate]:
    gates: list[Gate] = []
    base, cur = analysis.int8(base_df), analysis.int8(cur_df)
    if base.empty or cur.empty:
        return gates
    key = ["variant", "backend", "p_scheme", "p_norms"]
    index = cur.set_index(key)
    for r in base[base["p_scheme"] != "fp32"].itertuples():
        k = (r.variant, r.backend, r.p_scheme, r.p_norms)
        if k in index.index:
            gates.append(_kl_gate("int8 accuracy", " ".join(map(str, k)) + " KL", r.m_kl_mean_nats,
                                  float(index.loc[k, "m_kl_mean_nats"])))
    sizes = cur[(cur["p_scheme"] != "fp32")]["layers_size_vs_fp32"].dropna()
    if not sizes.empty:
        gates.append(Gate("int8 layer size", "quantized layers vs fp32 (smallest ratio)", f"{sizes.min():.2f}x",
                          f">= {INT8_LAYER_SIZE_MIN}x", bool(sizes.min() >= INT8_LAYER_SIZE_MIN)))
    effect, base_effect = analysis.int8_norm_effect(cur_df), analysis.int8_norm_effect(base_df)
    cols = {"m_kl_mean_nats_keep", "m_kl_mean_nats_quantize"}
    if cols <= set(effect.columns) and cols <= set(base_effect.columns):
        held = {(r.backend, r.p_scheme) for r in base_effect.itertuples()
                if r.m_kl_mean_nats_quantize >= r.m_kl_mean_nats_keep}
        for r in effect.dropna(subset=list(cols)).itertuples():
            if (r.backend, r.p_scheme) in held:
                gates.append(Gate("int8 norm policy", f"{r.backend} {r.p_scheme}: KL quantize >= keep",
                                  f"{r.m_kl_mean_nats_quantize:.3g} vs {r.m_kl_mean_nats_keep:.3g}", "quantize >= keep",
                                  bool(r.m_kl_mean_nats_quantize >= r.m_kl_mean_nats_keep)))
    return gates


def _arch_gates(base_df: pd.DataFrame, cur_df: pd.DataFrame) -> list[Gate]:
    gates: list[Gate] = []
    var = analysis.arch_rows(cur_df, "lora", "variance")
    for r in var.itertuples():
        expected = 0.0 if r.p_scaling == "rslora" else -1.0
        gates.append(Gate("lora variance slope", r.p_scaling, f"{r.m_loglog_slope:.3f}",
                          f"{expected:+.0f} ± {VARIANCE_SLOPE_TOLERANCE}",
                          bool(abs(r.m_loglog_slope - expected) <= VARIANCE_SLOPE_TOLERANCE)))
    for df, role in ((base_df, "base"), (cur_df, "cur")):
        fine = analysis.arch_rows(df, "lora", "finetune")
        if fine.empty:
            break
        top = fine[fine["p_rank"] == fine["p_rank"].max()].set_index("p_scaling")["m_final_train_bpb"]
        if role == "base":
            base_better = {"lora", "rslora"} <= set(top.index) and top["rslora"] < top["lora"]
        elif base_better and {"lora", "rslora"} <= set(top.index):
            gates.append(Gate("rslora at the top rank", "final training loss rsLoRA < LoRA",
                              f"{top['rslora']:.3f} vs {top['lora']:.3f}", "rsLoRA lower (as in the baseline)",
                              bool(top["rslora"] < top["lora"])))
    for study, phase, value_col, group in (("positions", "params", "m_position_params", "p_pos"),
                                           ("tying", "params", "m_tied_params", "variant"),
                                           ("tying", "params", "m_untied_params", "variant")):
        base, cur = analysis.arch_rows(base_df, study, phase), analysis.arch_rows(cur_df, study, phase)
        if base.empty or cur.empty:
            continue
        index = cur.drop_duplicates(group).set_index(group)[value_col]
        for r in base.drop_duplicates(group).itertuples():
            value = index.get(getattr(r, group))
            expected = getattr(r, value_col)
            gates.append(Gate(f"{study} {value_col[2:]}", str(getattr(r, group)), fmt_int(value), f"== {int(expected)}",
                              value == expected))
    extra = analysis.arch_rows(cur_df, "positions", "extrapolation")
    for r in extra[extra["p_pos"] == "learned"].itertuples() if not extra.empty else []:
        past = [k for k in r.m_by_length if int(k) > r.p_train_len]
        refused = all("error" in r.m_by_length[k] for k in past)
        gates.append(Gate("learned positions refuse past the table", f"trained at {int(r.p_train_len)}",
                          "refused" if refused else "evaluated", "refused", refused))
    base_grads, grads = analysis.arch_rows(base_df, "norms", "gradients"), analysis.arch_rows(cur_df, "norms",
                                                                                            "gradients")
    if not base_grads.empty and not grads.empty:
        index = grads.set_index(["p_init", "p_norm", "p_depth"])["m_last_over_first"]
        for r in base_grads[base_grads["p_init"] == "xavier"].itertuples():
            key = (r.p_init, r.p_norm, r.p_depth)
            if key not in index.index or r.p_norm == "pre_rms":
                continue
            rising = r.m_last_over_first > 1
            value = float(index[key])
            gates.append(Gate("gradient trend at init", f"{r.p_norm} depth {int(r.p_depth)} (xavier)", f"{value:.2f}",
                              "> 1 (as in the baseline)" if rising else "< 1 (as in the baseline)",
                              bool(value > 1 if rising else value < 1)))
    stab = analysis.norm_stability(cur_df)
    if not stab.empty and {"post_ln", "pre_ln"} <= set(stab["p_norm"]):
        by = stab.set_index("p_norm")
        pre, post = by.loc["pre_ln", "failed"] / by.loc["pre_ln", "runs"], by.loc["post_ln", "failed"] / \
            by.loc["post_ln", "runs"]
        gates.append(Gate("stability", "Pre-LN failure rate <= Post-LN's", f"{pre:.2f} vs {post:.2f}",
                          "Pre-LN <= Post-LN", bool(pre <= post)))
    return gates


# Benchmarks whose time is not the measurement: training (cached on disk between runs), accuracy
# evaluations, counts, and fresh-process memory probes. The time gate leaves them out.
UNTIMED = {("positions", "extrapolation"), ("positions", "params"), ("tying", "quality"), ("tying", "params"),
           ("lora", "finetune"), ("lora", "variance"), ("norms", "stability"), ("norms", "gradients"),
           ("int8", "sensitivity"), ("kv_memory", "rss"), ("kv_memory", "vram"), ("kv_memory", "capacity")}
UNTIMED_STUDIES = {"kv_accuracy"}


def _timed(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose fastest round is a measurement worth gating (see UNTIMED)."""
    if df.empty:
        return df
    phase = df["p_phase"] if "p_phase" in df else pd.Series([None] * len(df), index=df.index)
    keep = [study not in UNTIMED_STUDIES and (study, ph) not in UNTIMED
            for study, ph in zip(df["study"], phase, strict=True)]
    return df[keep]


def combine(runs: list[list[Gate]]) -> list[Gate]:
    """Gates of several runs of the same code on the same machine: a gate passes when it passes in any
    run. A regression fails in every run; a slow patch of a shared machine does not."""
    combined: dict[tuple[str, str], Gate] = {}
    for gates in runs:
        for g in gates:
            key = (g.gate, g.subject)
            if key not in combined or (g.passed and not combined[key].passed):
                combined[key] = g
    # a re-measurement of one study reports the others as missing: a subject is missing only when
    # every run missed it
    missing_everywhere = set.intersection(*[{g.subject for g in gates if g.gate == "missing"} for gates in runs]) \
        if runs else set()
    return [g for g in combined.values() if g.gate != "missing" or g.subject in missing_everywhere]


def format_table(gates: list[Gate]) -> str:
    """The gates as an aligned text table, failures marked."""
    header = ("status", "gate", "subject", "value", "limit")
    rows = [("PASS" if g.passed else "FAIL", g.gate, g.subject, g.value, g.limit) for g in gates]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
