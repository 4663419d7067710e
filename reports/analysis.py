"""Derived figures of the decode study: tokens/s, bandwidth, fitted complexity, cache break-even, peers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

GROUP = ["machine", "variant", "backend", "p_batch", "p_dtype"]
# The time every derived figure uses: the fastest round. Noise on a shared machine only ever adds
# time, so the minimum is the most repeatable of pytest-benchmark's statistics.
TIME = "time_min"


@dataclass(frozen=True)
class SlopeFit:
    """Log-log slope of time vs length, with its standard error (NaN with fewer than 3 points)."""

    slope: float
    stderr: float
    n: int
    lengths: tuple[int, ...]


def fit_loglog(lengths: list[float], times: list[float]) -> SlopeFit:
    """Least-squares slope of log(time) against log(length)."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(times, float))
    n = len(x)
    if n < 2:
        return SlopeFit(math.nan, math.nan, n, tuple(int(v) for v in lengths))
    sxx = float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    stderr = math.nan
    if n >= 3:
        resid = y - (y.mean() + slope * (x - x.mean()))
        stderr = math.sqrt(float((resid**2).sum()) / (n - 2) / sxx)
    return SlopeFit(slope, stderr, n, tuple(int(v) for v in lengths))


def fit_linear_quadratic(lengths: list[float], times: list[float]) -> tuple[float, float]:
    """Non-negative a, b of time = a*T + b*T^2 by least squares on relative errors.

    Decode time is a per-token cost (weights, fixed overheads) plus a part that grows with the
    length (attention over the prefix, or the whole prefix again without a cache); the fitted model
    uses every length at once, so one noisy point moves it less than a two-point slope.
    """
    T, t = np.asarray(lengths, float), np.asarray(times, float)
    design = np.stack([T, T**2], axis=1) / t[:, None]  # rows scaled: relative residuals
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    if a >= 0 and b >= 0:
        return float(a), float(b)
    only_a = float((T / t).sum() / ((T / t) ** 2).sum())  # one-term fits when a term would go negative
    only_b = float((T**2 / t).sum() / ((T**2 / t) ** 2).sum())
    err_a, err_b = ((only_a * T / t - 1) ** 2).sum(), ((only_b * T**2 / t - 1) ** 2).sum()
    return (only_a, 0.0) if err_a <= err_b else (0.0, only_b)


def model_slope(a: float, b: float, length: float) -> float:
    """Local log-log slope of a*T + b*T^2 at T = length: (a + 2bT) / (a + bT)."""
    return (a + 2 * b * length) / (a + b * length)


def upper_half(lengths: list[int]) -> list[int]:
    """The lengths at or above the median: where the asymptotic growth shows (fixed per-step costs fade)."""
    ordered = sorted(set(lengths))
    return ordered if len(ordered) <= 2 else ordered[(len(ordered) - 1) // 2 :]


def median_ratio(numerators: object, denominators: object) -> float:
    """Median over rounds of (numerator / its denominator); NaN where the lists are absent, empty or of
    different lengths. Used for each round over the calibration timed just before it (`time_norm`) and
    for each uncached round over the cached run paired with it (`speedup_paired`).

    The median, not the minimum: a denominator caught by a momentary stall would make one ratio tiny.
    """
    if not isinstance(numerators, list) or not isinstance(denominators, list) or not numerators \
            or len(numerators) != len(denominators):
        return math.nan
    return float(np.median([n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]))


def decode_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Decode-phase rows with tokens/s, achieved bandwidth and its fraction of the measured ceiling."""
    if df.empty or "p_phase" not in df:
        return pd.DataFrame()
    d = df[(df["study"] == "decode") & (df["p_phase"] == "decode")].copy()
    if d.empty:
        return d
    for col in ("p_decode_tokens", "p_batch"):
        d[col] = d[col].astype(int)
    d["time_norm"] = [median_ratio(r.time_data, getattr(r, "m_calibration_s", None)) for r in d.itertuples()]
    d["tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / d[TIME]
    d["achieved_Bps"] = d["m_bytes_read"] / d[TIME]
    d["bandwidth_fraction"] = d["achieved_Bps"] / d["m_ceiling_Bps"]
    d["bound_tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / (d["m_bytes_read"] / d["m_ceiling_Bps"])
    probed = [probed_ceilings(getattr(r, "m_ceiling_before_Bps", None), getattr(r, "m_ceiling_after_Bps", None),
                              r.time_data) for r in d.itertuples()]
    d["probed_ceiling_Bps"] = [float(np.median(c)) if c else math.nan for c in probed]
    d["probed_fraction"] = [median_ratio([r.m_bytes_read / t for t in r.time_data], c) if c else math.nan
                            for r, c in zip(d.itertuples(), probed, strict=True)]
    return d


def probed_ceilings(before: object, after: object, rounds: object) -> list[float]:
    """Each timed round's ceiling: the mean of the read bandwidth probed right before it and right after
    it (`profiles.ceilings.ReadProbe`); empty where the record has no probes (uncached rounds, results
    written before probing existed) or their counts do not match the rounds'."""
    if not all(isinstance(v, list) for v in (before, after, rounds)) or not rounds \
            or not len(before) == len(after) == len(rounds):
        return []
    return [(b + a) / 2 for b, a in zip(before, after, strict=True)]


def _timed_decode_rows(df: pd.DataFrame, time_col: str) -> pd.DataFrame:
    """Decode rows with `time_col` as their time (empty when any row lacks it: no mixed units)."""
    d = decode_rows(df)
    if d.empty:
        return d
    d = d.assign(**{TIME: d[time_col]}) if time_col != TIME else d
    return pd.DataFrame() if d[TIME].isna().any() else d


def slopes(df: pd.DataFrame, time_col: str = TIME) -> pd.DataFrame:
    """One row per (machine, variant, backend, batch, dtype, cache): log-log slopes of decode time vs T.

    `slope`: least squares over the upper half of the lengths (with its standard error); `slope_all`:
    over every length (the steadiest against noise); `end_slope`: between the two longest lengths;
    `model_end_slope`: the local slope at the longest length of a*T + b*T^2 fitted to every length
    (fixed per-forward costs flatten the uncached curve at short lengths; this sees past them).
    """
    d = _timed_decode_rows(df, time_col)
    rows = []
    if d.empty:
        return d
    for key, g in d.groupby([*GROUP, "p_cache"]):
        g = g.sort_values("p_decode_tokens")
        all_fit = fit_loglog(g["p_decode_tokens"].tolist(), g[TIME].tolist())
        upper = upper_half(g["p_decode_tokens"].tolist())
        gu = g[g["p_decode_tokens"].isin(upper)]
        fit = fit_loglog(gu["p_decode_tokens"].tolist(), gu[TIME].tolist())
        end = fit_loglog(g["p_decode_tokens"].tolist()[-2:], g[TIME].tolist()[-2:])
        longest = int(g["p_decode_tokens"].max())
        model_end = math.nan
        if len(g) >= 3:
            a, b = fit_linear_quadratic(g["p_decode_tokens"].tolist(), g[TIME].tolist())
            model_end = model_slope(a, b, longest)
        rows.append(dict(zip([*GROUP, "p_cache"], key, strict=True), slope=fit.slope, slope_stderr=fit.stderr,
                         slope_points=fit.n, slope_lengths=fit.lengths, slope_all=all_fit.slope,
                         slope_all_stderr=all_fit.stderr, end_slope=end.slope, model_end_slope=model_end,
                         points=len(g), longest=longest))
    return pd.DataFrame(rows)


def cache_payoff(df: pd.DataFrame, time_col: str = TIME) -> pd.DataFrame:
    """Per group: the cache's speed-up (uncached time / cached time) at each common length, the speed-up
    at the longest one (`speedup_longest` measured, `speedup_model` from a*T + b*T^2 fitted to both
    curves, `speedup_fit` the fitted one where there are 3 lengths or more, else the measured one, and
    `speedup_paired` the median ratio of uncached rounds to the cached runs paired with them, NaN where
    not paired), and the first length at which the cache is faster."""
    d = _timed_decode_rows(df, time_col)
    rows = []
    if d.empty:
        return d
    for key, g in d.groupby(GROUP):
        raw = g[g["p_cache"] == "raw"].set_index("p_decode_tokens")[TIME]
        none_rows = g[g["p_cache"] == "none"].set_index("p_decode_tokens")
        none = none_rows[TIME]
        common = sorted(set(raw.index) & set(none.index))
        if not common:
            continue
        speedups = {int(t): float(none[t] / raw[t]) for t in common}
        pays = [t for t in common if speedups[t] > 1.0]
        modeled = math.nan
        if len(raw) >= 3 and len(none) >= 3:  # both curves fitted on every length, compared at the longest
            a_r, b_r = fit_linear_quadratic(list(raw.index), list(raw.values))
            a_n, b_n = fit_linear_quadratic(list(none.index), list(none.values))
            t = common[-1]
            modeled = (a_n * t + b_n * t * t) / (a_r * t + b_r * t * t)
        longest = none_rows.loc[common[-1]]
        rows.append(dict(zip(GROUP, key, strict=True), lengths=tuple(common), speedups=speedups,
                         longest=int(common[-1]), speedup_longest=speedups[common[-1]], speedup_model=modeled,
                         speedup_fit=modeled if modeled == modeled else speedups[common[-1]],
                         speedup_paired=median_ratio(longest.get("time_data"), longest.get("m_paired_cached_s")),
                         break_even=int(pays[0]) if pays else None,
                         pays_from_first=bool(pays and pays[0] == common[0])))
    return pd.DataFrame(rows)


def token_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per group and length: whether the cached and uncached runs produced the same tokens."""
    d = decode_rows(df)
    rows = []
    if d.empty or "m_tokens_sha1" not in d:
        return pd.DataFrame()
    for key, g in d.groupby([*GROUP, "p_decode_tokens"]):
        hashes = g.set_index("p_cache")["m_tokens_sha1"].to_dict()
        if {"raw", "none"} <= set(hashes):
            rows.append(dict(zip([*GROUP, "p_decode_tokens"], key, strict=True),
                             identical=hashes["raw"] == hashes["none"]))
    return pd.DataFrame(rows)


def peers(df: pd.DataFrame) -> pd.DataFrame:
    """Ours vs transformers per (machine, variant, backend, cache, length): tokens/s each, the ratio, and
    the weight layout ours ran in."""
    if df.empty or "p_phase" not in df:
        return pd.DataFrame()
    d = df[(df["study"] == "decode") & (df["p_phase"] == "peer")].copy()
    if d.empty:
        return pd.DataFrame()
    d["p_decode_tokens"] = d["p_decode_tokens"].astype(int)
    rows = []
    for key, g in d.groupby(["machine", "variant", "backend", "p_cache", "p_decode_tokens"]):
        by_impl = g.set_index("p_impl")
        if not {"archbench", "transformers"} <= set(by_impl.index):
            continue
        tokens = key[-1]
        ours = tokens / float(by_impl.loc["archbench", TIME])
        theirs = tokens / float(by_impl.loc["transformers", TIME])
        layout = by_impl.loc["archbench"].get("p_weight_layout", "")
        rows.append(dict(zip(["machine", "variant", "backend", "p_cache", "p_decode_tokens"], key, strict=True),
                         ours_tokens_per_s=ours, transformers_tokens_per_s=theirs, ratio=ours / theirs,
                         ours_layout=layout if isinstance(layout, str) else "",
                         tokens_identical=bool(g["m_tokens_identical"].all())))
    return pd.DataFrame(rows)


TARGET_VARIANT = "gpt2-small"  # the decode targets are stated for GPT-2 124M, fp32, batch 1, on a CPU
TARGET_PEER_RATIO = 1.2  # cached tokens/s against transformers' generate on the same weights
TARGET_CEILING_FRACTION = 0.70  # cached decode's achieved read bandwidth over the measured ceiling


def decode_targets(df: pd.DataFrame) -> pd.DataFrame:
    """The decode study's targets per machine and CPU backend (torch-cuda excluded): the peer ratio at
    each length, and the median fraction of the bandwidth ceiling over the cached lengths: of the ceiling
    probed beside each round where the results have probes, else of the session's ceiling."""
    rows = []
    peer = peers(df)
    if not peer.empty:
        peer = peer[(peer["variant"] == TARGET_VARIANT) & (peer["p_cache"] == "raw")
                    & (peer["backend"] != "torch-cuda")]
        for r in peer.itertuples():
            rows.append({"machine": r.machine, "backend": r.backend,
                         "target": f"cached tokens/s >= {TARGET_PEER_RATIO}x transformers' (T={r.p_decode_tokens})",
                         "measured": f"{r.ratio:.2f}x", "met": bool(r.ratio >= TARGET_PEER_RATIO)})
    d = decode_rows(df)
    if not d.empty:
        d = d[(d["variant"] == TARGET_VARIANT) & (d["p_cache"] == "raw") & (d["p_batch"] == 1)
              & (d["p_dtype"] == "fp32") & (d["backend"] != "torch-cuda")]
        for (machine, backend), g in d.groupby(["machine", "backend"]):
            session = float(g["bandwidth_fraction"].median())
            session_text = f"{session:.0%} of {float(g['m_ceiling_Bps'].iloc[0]) / 1e9:.1f} GB/s"
            lengths = ", ".join(str(t) for t in sorted(g["p_decode_tokens"]))
            probed = g["probed_fraction"].dropna()
            if len(probed) == len(g):  # every length probed: the ceiling of each round's own moment
                fraction = float(probed.median())
                target = (f">= {TARGET_CEILING_FRACTION:.0%} of the read ceiling probed beside each round "
                          f"(median over T = {lengths})")
                measured = (f"{fraction:.0%} of {float(g['probed_ceiling_Bps'].median()) / 1e9:.1f} GB/s "
                            f"(of the session's ceiling: {session_text})")
            else:  # results without probes: the session's ceiling only
                fraction = session
                target = (f">= {TARGET_CEILING_FRACTION:.0%} of the measured read ceiling (median over "
                          f"T = {lengths})")
                measured = session_text
            rows.append({"machine": machine, "backend": backend, "target": target, "measured": measured,
                         "met": fraction >= TARGET_CEILING_FRACTION})
    return pd.DataFrame(rows)


def backends_side_by_side(df: pd.DataFrame, reference: str = "torch-cpu") -> pd.DataFrame:
    """Tokens/s of every backend for the same (machine, variant, cache, T, batch), and each one's ratio
    to `reference` (torch eager on the CPU, by default)."""
    d = decode_rows(df)
    if d.empty or d["backend"].nunique() < 2:
        return pd.DataFrame()
    keys = ["machine", "variant", "p_cache", "p_decode_tokens", "p_batch"]
    wide = d.pivot_table(index=keys, columns="backend", values="tokens_per_s", aggfunc="first")
    wide = wide.dropna(thresh=2).reset_index()
    others = [b for b in wide.columns if b not in keys and b != reference]
    if reference in wide.columns:
        for b in others:
            wide[f"{b} / {reference}"] = wide[b] / wide[reference]
    return wide


def latency_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Per-step latency at traced positions, long form: one row per (benchmark, position)."""
    d = decode_rows(df)
    rows = []
    if d.empty or "m_step_latency_s" not in d:
        return pd.DataFrame()
    for _, r in d.iterrows():
        latencies = r["m_step_latency_s"]
        if not isinstance(latencies, dict):
            continue
        for position, seconds in latencies.items():
            rows.append({"machine": r["machine"], "variant": r["variant"], "backend": r["backend"],
                         "cache": r["p_cache"], "batch": r["p_batch"], "decode_tokens": r["p_decode_tokens"],
                         "position": int(position), "latency_s": float(seconds)})
    return pd.DataFrame(rows)


def tuned_layouts(df: pd.DataFrame) -> dict[tuple[str, str, str, int], tuple[str, dict[str, float]]]:
    """(machine, variant, backend, batch) -> the weight layout tuned for that model and the seconds per
    cached decode step each candidate measured (older results without timings: empty)."""
    d = decode_rows(df)
    if d.empty or "m_layout_step_s" not in d:
        return {}
    tuned = {}
    for r in d.itertuples():
        if isinstance(r.m_layout_step_s, dict) and r.m_layout_step_s:
            tuned[(r.machine, r.variant, r.backend, int(r.p_batch))] = (
                r.p_weight_layout, {k: float(v) for k, v in r.m_layout_step_s.items()})
    return tuned


def layout_choices(df: pd.DataFrame) -> pd.DataFrame:
    """`tuned_layouts` as a table: machine, variant, backend, batch, the chosen layout and one
    "<layout> s/step" column per candidate."""
    return pd.DataFrame([{"machine": m, "variant": v, "backend": b, "batch": n, "chosen": chosen,
                          **{f"{k} s/step": t for k, t in timings.items()}}
                         for (m, v, b, n), (chosen, timings) in tuned_layouts(df).items()])


def _study(df: pd.DataFrame, study: str, phase: str | None = None) -> pd.DataFrame:
    if df.empty or "study" not in df:
        return pd.DataFrame()
    d = df[df["study"] == study].copy()
    if phase is not None and not d.empty:
        d = d[d["p_phase"] == phase] if "p_phase" in d else d.iloc[0:0]
    return d


def kv_peak(df: pd.DataFrame) -> pd.DataFrame:
    """Measured peak memory of filled caches (CPU resident set: phase `rss`; CUDA allocator: `vram`),
    with the ratio to the exact bytes held and the saving against raw fp16 at the same tokens and batch."""
    parts = [_study(df, "kv_memory", phase) for phase in ("rss", "vram")]
    d = pd.concat([p for p in parts if not p.empty]) if any(not p.empty for p in parts) else pd.DataFrame()
    if d.empty:
        return d
    if "m_peak_delta_bytes" not in d:
        d["m_peak_delta_bytes"] = float("nan")
    if "m_peak_rss_delta_bytes" in d:  # results written before the probe measured CUDA too
        d["m_peak_delta_bytes"] = d["m_peak_delta_bytes"].fillna(d["m_peak_rss_delta_bytes"])
    if "p_batch" not in d:
        d["p_batch"] = 1
    d["p_batch"] = d["p_batch"].fillna(1).astype(int)
    d["peak_over_held"] = d["m_peak_delta_bytes"] / d["m_kv_bytes"]
    keys = ["machine", "backend", "variant", "p_phase", "p_tokens", "p_batch"]
    fp16 = d[d["p_cache"] == "raw-fp16"].set_index(keys)
    d["saving_vs_fp16"] = [fp16["m_peak_delta_bytes"].get(tuple(getattr(r, k) for k in keys), float("nan"))
                           / r.m_peak_delta_bytes for r in d.itertuples()]
    d["exact_saving_vs_fp16"] = [fp16["m_kv_bytes"].get(tuple(getattr(r, k) for k in keys), float("nan"))
                                 / r.m_kv_bytes for r in d.itertuples()]
    return d.sort_values(["machine", "backend", "p_phase", "p_batch", "p_tokens", "p_cache"]).reset_index(drop=True)


def kv_memory(df: pd.DataFrame) -> pd.DataFrame:
    """Per cache kind: bytes per token, compression vs raw fp16/fp32, decode tokens/s and its ratio to
    the raw fp32 cache of the same run (the overhead of quantizing and reading codes)."""
    d = _study(df, "kv_memory", "decode")
    if d.empty:
        return d
    d["tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / d[TIME]
    d["vs_fp16"] = d["m_raw_fp16_bytes_per_token"] / d["m_bytes_per_token"]
    d["vs_fp32"] = d["m_raw_fp32_bytes_per_token"] / d["m_bytes_per_token"]
    keys = ["machine", "variant", "backend", "p_decode_tokens", "p_batch"]
    speeds = {kind: d[d["p_cache"] == kind].set_index(keys)["tokens_per_s"] for kind in ("raw-fp32", "raw-fp16")}
    ratios, refs = [], []
    for r in d.itertuples():  # against raw fp32 where the run has it, else raw fp16
        key = tuple(getattr(r, k) for k in keys)
        ref = next((kind for kind in speeds if key in speeds[kind].index), None)
        ratios.append(r.tokens_per_s / speeds[ref][key] if ref else float("nan"))
        refs.append(ref or "–")
    d["speed_vs_raw"], d["speed_ref"] = ratios, refs
    return d


def kv_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows of the cache kinds, with the quantizer family (raw, tq, uniform) for plotting."""
    d = _study(df, "kv_accuracy")
    if d.empty:
        return d
    d["family"] = d["p_cache"].map(lambda k: "raw" if k.startswith("raw") else ("TurboQuant" if k.startswith("tq")
                                                                                else "uniform (KIVI-style)"))
    return d


def kv_capacity(df: pd.DataFrame) -> pd.DataFrame:
    """Capacity rows: one per (variant, kind) with bytes per token, the length where the cache outgrows
    fp16 weights and the longest context per memory budget."""
    d = _study(df, "kv_memory", "capacity")
    rows = []
    for r in d.itertuples():
        for kind, per_token in r.m_bytes_per_token.items():
            row = {"machine": r.machine, "variant": r.variant, "params": r.m_params, "kind": kind,
                   "bytes_per_token": per_token, "outgrows_weights_at": r.m_outgrows_weights_at_tokens[kind]}
            row.update({f"max_context_{gib}GiB": v for gib, v in r.m_max_context_tokens[kind].items()})
            rows.append(row)
    return pd.DataFrame(rows)


def int8(df: pd.DataFrame) -> pd.DataFrame:
    """INT8 rows (not the sensitivity sweep), with tokens/s, and the size ratio and speed-up against the
    same backend's fp32 model of the same run."""
    d = _study(df, "int8")
    if d.empty:
        return d
    if "p_phase" in d:
        d = d[d["p_phase"].isna()].copy()
    if d.empty:
        return d
    d["tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / d[TIME]
    base = d[d["p_scheme"] == "fp32"].set_index(["machine", "backend"])
    keys = list(zip(d["machine"], d["backend"], strict=True))
    d["size_vs_fp32"] = [base["m_model_bytes"].get(k, float("nan")) / b for k, b in zip(keys, d["m_model_bytes"],
                                                                                      strict=True)]
    d["speed_vs_fp32"] = [t / base["tokens_per_s"].get(k, float("nan")) for k, t in zip(keys, d["tokens_per_s"],
                                                                                      strict=True)]
    if "m_quantized_weights_bytes" in d:
        d["layers_size_vs_fp32"] = d["m_quantized_weights_fp32_bytes"] / d["m_quantized_weights_bytes"].where(
            d["m_quantized_weights_bytes"] > 0)
    else:
        d["layers_size_vs_fp32"] = float("nan")
    order = {s: i for i, s in enumerate(("fp32", "weight_only", "w8a8", "llm_int8", "torch_dynamic",
                                         "ort_dynamic", "ort_static"))}
    d["_order"] = d["p_scheme"].map(lambda s: order.get(s, 99))
    return d.sort_values(["machine", "backend", "_order", "p_norms"]).drop(columns="_order").reset_index(drop=True)


def int8_norm_effect(df: pd.DataFrame) -> pd.DataFrame:
    """Per machine, backend and scheme: KL and bits-per-byte change with norms kept vs quantized, side by side."""
    d = int8(df)
    if d.empty:
        return d
    d = d[d["p_scheme"] != "fp32"]
    wide = d.pivot_table(index=["machine", "backend", "p_scheme"], columns="p_norms",
                         values=["m_kl_mean_nats", "m_bpb_delta", "m_top1_agreement"], aggfunc="first")
    wide.columns = [f"{metric}_{policy}" for metric, policy in wide.columns]
    return wide.reset_index()


def int8_sensitivity(df: pd.DataFrame) -> pd.DataFrame:
    """The per-layer sweep: one module quantized at a time, its KL against fp32."""
    return _study(df, "int8", "sensitivity")


def arch_rows(df: pd.DataFrame, study: str, phase: str) -> pd.DataFrame:
    """Rows of one phase of the architecture studies (lora, positions, norms, tying)."""
    return _study(df, study, phase).reset_index(drop=True)


def lora_variance(df: pd.DataFrame) -> pd.DataFrame:
    """Long form of the variance study: one row per machine, scaling and rank."""
    d = arch_rows(df, "lora", "variance")
    rows = [{"machine": r.machine, "scaling": r.p_scaling, "rank": rank, "variance": v, "slope": r.m_loglog_slope}
            for r in d.itertuples() for rank, v in zip(r.p_ranks, r.m_variance, strict=True)]
    return pd.DataFrame(rows)


def norm_stability(df: pd.DataFrame) -> pd.DataFrame:
    """Per machine and placement: runs, runs that failed, and the final loss of the others."""
    d = arch_rows(df, "norms", "stability")
    if d.empty:
        return d
    d["final"] = pd.to_numeric(d["m_final_train_bpb"], errors="coerce")
    return (d.groupby(["machine", "p_norm"], sort=False)
            .agg(runs=("p_seed", "count"), failed=("m_failed", "sum"), lr=("p_lr", "first"),
                 steps=("p_steps", "first"), final_bpb_mean=("final", "mean"), final_bpb_max=("final", "max"),
                 unigram_bpb=("m_unigram_bpb", "first"))
            .reset_index())
