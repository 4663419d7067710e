"""The decode study's report half: frames (tokens/s, bandwidth, fitted complexity, the cache's pay-off,
the engines side by side, transformers), figures, its section and summary lines."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from reports.fits import fit_linear_quadratic, fit_loglog, median_ratio, model_slope, upper_half
from reports.load import TIME
from reports.page import Section, Table, facet_grid, fmt, fmt_bytes, length_axis, to_png_base64

GROUP = ["machine", "variant", "backend", "p_batch", "p_dtype"]
CACHE_LABELS = {"raw": "KV cache (raw)", "none": "no cache (recompute)"}
TARGET_COMPILED_SPEEDUP = 1.2  # a compiled engine of eager torch's family against eager torch
TARGET_VARIANT = "gpt2-small"  # the decode targets are stated for GPT-2 124M, fp32, batch 1, on a CPU
TARGET_PEER_RATIO_EAGER = 0.9  # eager: ours within 10% of transformers' generate (the same kernels, overhead apart)
TARGET_PEER_RATIO_COMPILED = 1.0  # compiled: ours at least as fast as transformers' own compiled fast path
TARGET_CEILING_FRACTION = 0.70  # each engine's cached decode: achieved read bandwidth over the probed ceiling
TARGET_BEST_CEILING_FRACTION = 0.85  # the best engine on a machine


# ---- frames -------------------------------------------------------------------------------------------

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
    (fixed per-forward costs flatten the uncached curve at short lengths; this sees past them). Groups
    measured at one length have no slope and no row.
    """
    d = _timed_decode_rows(df, time_col)
    rows = []
    if d.empty:
        return d
    for key, g in d.groupby([*GROUP, "p_cache"]):
        g = g.sort_values("p_decode_tokens")
        if g["p_decode_tokens"].nunique() < 2:
            continue
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
    """Ours vs transformers per (machine, variant, backend, cache, length): tokens/s each and the ratio."""
    if df.empty or "p_phase" not in df:
        return pd.DataFrame()
    d = df[(df["study"] == "decode") & (df["p_phase"] == "peer")].copy()
    if d.empty:
        return pd.DataFrame()
    d["p_decode_tokens"] = d["p_decode_tokens"].astype(int)
    keys = ["machine", "variant", "backend", "device_type", "p_cache", "p_decode_tokens"]
    rows = []
    for key, g in d.groupby(keys, dropna=False):
        by_impl = g.set_index("p_impl")
        if not {"archbench", "transformers"} <= set(by_impl.index):
            continue
        tokens = key[-1]
        ours = tokens / float(by_impl.loc["archbench", TIME])
        theirs = tokens / float(by_impl.loc["transformers", TIME])
        rows.append(dict(zip(keys, key, strict=True), ours_tokens_per_s=ours, transformers_tokens_per_s=theirs,
                         ratio=ours / theirs, tokens_identical=bool(g["m_tokens_identical"].all())))
    return pd.DataFrame(rows)


def decode_targets(df: pd.DataFrame) -> pd.DataFrame:
    """The decode study's targets per machine and CPU backend: the peer ratio at each length, and the
    median fraction of the bandwidth ceiling over the cached lengths: of the ceiling probed beside each
    round where the results have probes, else of the session's ceiling."""
    rows = []
    peer = peers(df)
    if not peer.empty:
        peer = peer[(peer["variant"] == TARGET_VARIANT) & (peer["p_cache"] == "raw") & (peer["device_type"] == "cpu")]
        references = _reference_names()
        for r in peer.itertuples():
            eager = r.backend in references
            need = TARGET_PEER_RATIO_EAGER if eager else TARGET_PEER_RATIO_COMPILED
            theirs = "transformers' eager generate" if eager else "transformers' compiled generate (static cache)"
            rows.append({"machine": r.machine, "backend": r.backend,
                         "target": f"cached tokens/s >= {need}x {theirs} (T={r.p_decode_tokens})",
                         "measured": f"{r.ratio:.2f}x", "met": bool(r.ratio >= need)})
    d = decode_rows(df)
    if not d.empty:
        d = d[(d["variant"] == TARGET_VARIANT) & (d["p_cache"] == "raw") & (d["p_batch"] == 1)
              & (d["p_dtype"] == "fp32") & (d["device_type"] == "cpu")]
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
                         "met": fraction >= TARGET_CEILING_FRACTION, "fraction": fraction})
        for machine in d["machine"].unique():  # the best engine on each machine
            mine = [r for r in rows if r["machine"] == machine and "fraction" in r]
            if mine:
                best = max(mine, key=lambda r: r["fraction"])
                rows.append({"machine": machine, "backend": best["backend"],
                             "target": f"the best engine >= {TARGET_BEST_CEILING_FRACTION:.0%} of the read ceiling",
                             "measured": f"{best['fraction']:.0%} ({best['backend']}, the best of {len(mine)})",
                             "met": best["fraction"] >= TARGET_BEST_CEILING_FRACTION})
        references = _reference_names()
        for machine, g in d.groupby("machine"):
            wide = g.pivot_table(index="p_decode_tokens", columns="backend", values="tokens_per_s", aggfunc="first")
            for ref in [b for b in wide.columns if b in references]:
                compiled = [b for b in wide.columns if b not in references
                            and (g.loc[g["backend"] == b, "backend_family"] == g.loc[g["backend"] == ref,
                                                                                    "backend_family"].iloc[0]).all()]
                for backend in compiled:
                    ratio = float((wide[backend] / wide[ref]).dropna().median())
                    if ratio == ratio:
                        rows.append({"machine": machine, "backend": backend,
                                     "target": f"tokens/s >= {TARGET_COMPILED_SPEEDUP}x {ref}'s (median over T)",
                                     "measured": f"{ratio:.2f}x", "met": ratio >= TARGET_COMPILED_SPEEDUP})
    return pd.DataFrame(rows).drop(columns="fraction", errors="ignore")


def _reference_names() -> set[str]:
    """The backends others are compared with (eager torch on each device type)."""
    from bench import backends

    return {b.name for b in backends.BACKENDS.values() if b.reference}


def engines_side_by_side(df: pd.DataFrame) -> pd.DataFrame:
    """Tokens/s of every backend for the same (machine, variant, cache, T, batch) on one device type, and
    each one's ratio to that device's reference engine (eager torch)."""
    d = decode_rows(df)
    if d.empty or d["backend"].nunique() < 2:
        return pd.DataFrame()
    keys = ["machine", "device_type", "variant", "p_cache", "p_decode_tokens", "p_batch"]
    d = d.assign(device_type=d["device_type"].fillna("?"))
    wide = d.pivot_table(index=keys, columns="backend", values="tokens_per_s", aggfunc="first")
    wide = wide.dropna(thresh=2).reset_index()
    references = [b for b in wide.columns if b in _reference_names()]
    for ref in references:
        for b in [c for c in wide.columns if c not in keys and c not in references]:
            wide[f"{b} / {ref}"] = wide[b] / wide[ref]
    return wide


def _fused_text(ops: object) -> str:
    """An exported graph's fused op counts as text ('–' for engines without a graph file)."""
    if not isinstance(ops, dict) or not ops:
        return "–"
    return ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))


def engine_summary(df: pd.DataFrame, variant: str = TARGET_VARIANT) -> pd.DataFrame:
    """One row per (machine, engine) for `variant`'s cached decode (batch 1): median tokens/s and share of
    the probed read ceiling over the lengths, the prefill of the shortest prompt timed (the first token's
    latency without its sampling), and the untimed warm-up before the rounds, where a compiled engine
    compiles (with the graphs it compiled)."""
    d = decode_rows(df)
    if d.empty:
        return pd.DataFrame()
    d = d[(d["variant"] == variant) & (d["p_cache"] == "raw") & (d["p_batch"] == 1)]
    pre = df[(df["study"] == "decode") & (df["p_phase"] == "prefill") & (df["variant"] == variant)] \
        if "p_phase" in df else pd.DataFrame()
    rows = []
    for (machine, backend), g in d.groupby(["machine", "backend"], sort=False):
        p = pre[(pre["machine"] == machine) & (pre["backend"] == backend)] if not pre.empty else pre
        shortest = p.loc[p["p_prompt_tokens"].astype(int).idxmin()] if not p.empty else None
        warm = g["m_warmup_s"] if "m_warmup_s" in g else pd.Series(dtype=float)
        graphs = g["m_graphs_compiled"] if "m_graphs_compiled" in g else pd.Series(dtype=float)
        rows.append({"machine": machine, "backend": backend, "device_type": g["device_type"].iloc[0],
                     "tokens_per_s": float(g["tokens_per_s"].median()),
                     "probed_fraction": float(g["probed_fraction"].median()),
                     "lengths": ", ".join(str(t) for t in sorted(g["p_decode_tokens"])),
                     "prefill_tokens": int(shortest["p_prompt_tokens"]) if shortest is not None else None,
                     "prefill_s": float(shortest[TIME]) if shortest is not None else math.nan,
                     "warmup_s": float(warm.max()) if warm.notna().any() else math.nan,
                     "graphs": int(graphs.fillna(0).sum()) if len(graphs) else 0,
                     "prepare_s": float(g["m_prepare_s"].max()) if "m_prepare_s" in g else math.nan,
                     "fused_ops": _fused_text(g["m_fused_ops"].iloc[0] if "m_fused_ops" in g else None)})
    return pd.DataFrame(rows)


SERVING = ("m_ttft_s", "m_tpot_p50_s", "m_tpot_p90_s", "m_tpot_p99_s")


def serving_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The serving figures (TTFT, TPOT percentiles) of the cached batch-1 decodes of the largest model
    decoded (GPT-2 124M in the presets), one row per machine, engine and length; empty for records that
    predate them."""
    d = decode_rows(df)
    if d.empty or not set(SERVING) <= set(d.columns):
        return pd.DataFrame()
    d = d[(d["p_cache"] == "raw") & (d["p_batch"] == 1) & d["m_ttft_s"].notna()]
    if d.empty:
        return pd.DataFrame()
    largest = d.loc[d["m_weight_bytes"].idxmax(), "variant"]
    d = d[d["variant"] == largest].copy()
    rounds_j = d["m_energy_j"] if "m_energy_j" in d else pd.Series([[]] * len(d), index=d.index)
    d["energy_per_token_j"] = [float(np.median(j)) / (t * b) if isinstance(j, list) and j else math.nan
                               for j, t, b in zip(rounds_j, d["p_decode_tokens"], d["p_batch"], strict=True)]
    return d[["machine", "variant", "backend", "p_decode_tokens", *SERVING, "energy_per_token_j"]].sort_values(
        ["machine", "backend", "p_decode_tokens"]).reset_index(drop=True)


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


# ---- figures ------------------------------------------------------------------------------------------

def _panel(d: pd.DataFrame) -> pd.Series:
    return d["variant"] + " · " + d["backend"] + " · B" + d["p_batch"].astype(str) + " · " + d["machine"]


def _with_lengths(d: pd.DataFrame, panel: str = "panel") -> pd.DataFrame:
    """Rows of the panels that span two or more lengths: one length is a point on a log axis, which a table
    row reads better (`single_length_engines`, the cached-decode table)."""
    return d[d.groupby(panel)["p_decode_tokens"].transform("nunique") > 1] if not d.empty else d


def fig_scaling(df: pd.DataFrame) -> str | None:
    """Log-log total decode time vs tokens decoded, per cache mode, with the fitted slopes in the legend."""
    d = decode_rows(df)
    if d.empty:
        return None
    fits = slopes(df)
    d["panel"] = _panel(d)
    d = _with_lengths(d)
    if d.empty:
        return None
    fits["panel"] = _panel(fits) if not fits.empty else pd.Series(dtype=str)
    d["mode"] = d["p_cache"].map(CACHE_LABELS)
    panels = sorted(d["panel"].unique())
    fig, panel_axes = facet_grid(len(panels), height=3.8)
    for ax, panel in zip(panel_axes, panels, strict=True):
        sub = d[d["panel"] == panel]
        sns.lineplot(data=sub, x="p_decode_tokens", y=TIME, hue="mode", marker="o", ax=ax,
                     hue_order=[v for v in CACHE_LABELS.values() if v in set(sub["mode"])])
        ax.set(xscale="log", yscale="log", xlabel="tokens decoded T (tokens, log scale)",
               ylabel="total decode time, fastest round (s, log scale)", title=panel)
        length_axis(ax, sub["p_decode_tokens"].tolist())
        handles, labels = ax.get_legend_handles_labels()
        new_labels = []
        for label in labels:
            cache = next(k for k, v in CACHE_LABELS.items() if v == label)
            fit = fits[(fits["panel"] == panel) & (fits["p_cache"] == cache)]
            slope = fit["slope"].iloc[0] if len(fit) else float("nan")
            new_labels.append(f"{label}: slope {slope:.2f}" if slope == slope else f"{label}: one length")
        ax.legend(handles, new_labels, fontsize=8)
    fig.tight_layout()
    return to_png_base64(fig)


def fig_latency(df: pd.DataFrame) -> str | None:
    """Per-token latency at traced positions of the longest run of each variant."""
    lat = latency_rows(df)
    if lat.empty:
        return None
    longest = lat.groupby(["machine", "variant", "backend", "batch", "cache"])["decode_tokens"].transform("max")
    lat = lat[lat["decode_tokens"] == longest].copy()
    lat["latency_ms"] = lat["latency_s"] * 1e3
    lat["mode"] = lat["cache"].map(CACHE_LABELS)
    lat["panel"] = lat["variant"] + " · " + lat["backend"] + " · B" + lat["batch"].astype(str) + " · " + lat["machine"]
    panels = sorted(lat["panel"].unique())
    fig, panel_axes = facet_grid(len(panels), height=3.6)
    for ax, panel in zip(panel_axes, panels, strict=True):
        sns.lineplot(data=lat[lat["panel"] == panel], x="position", y="latency_ms", hue="mode", marker="o", ax=ax)
        ax.set(xlabel="position of the new token (tokens)", ylabel="latency of one decode step (ms)", title=panel)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    return to_png_base64(fig)


def fig_roofline(df: pd.DataFrame) -> str | None:
    """Cached decode tokens/s against the bandwidth bound (weights + KV cache read per token)."""
    d = decode_rows(df)
    if d.empty:
        return None
    d = d[d["p_cache"] == "raw"].copy()
    if d.empty:
        return None
    d["label"] = d["variant"] + " B" + d["p_batch"].astype(str) + " · " + d["backend"] + " · " + d["machine"]
    long = pd.concat([
        d.assign(kind="measured", tps=d["tokens_per_s"]),
        d.assign(kind="bandwidth bound (measured ceiling)", tps=d["bound_tokens_per_s"]),
    ])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.lineplot(data=long, x="p_decode_tokens", y="tps", hue="label", style="kind", marker="o", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="tokens decoded T (tokens, log scale)",
           ylabel="decode throughput (tokens/s, log scale)", title="Cached decode vs the roofline bound")
    length_axis(ax, long["p_decode_tokens"].tolist())
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return to_png_base64(fig)


def _engine_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Decode rows of the comparisons two or more engines ran, each with its `panel` (variant, cache, batch,
    machine)."""
    d = decode_rows(df)
    if d.empty or d["backend"].nunique() < 2:
        return d.iloc[0:0]
    multi = d.groupby(["machine", "variant", "p_cache", "p_batch"])["backend"].transform("nunique") > 1
    d = d[multi].copy()
    d["panel"] = (d["variant"] + " · " + d["p_cache"].map(CACHE_LABELS) + " · B" + d["p_batch"].astype(str)
                  + " · " + d["machine"])
    return d


def single_length_engines(df: pd.DataFrame) -> pd.DataFrame:
    """The engines compared at one length only (the figure leaves them to a table): one row per engine."""
    d = _engine_rows(df)
    if d.empty:
        return d
    return d[d.groupby("panel")["p_decode_tokens"].transform("nunique") == 1].sort_values(
        ["machine", "variant", "p_cache", "p_batch", "tokens_per_s"], ascending=[True, True, True, True, False])


def fig_engines(df: pd.DataFrame) -> str | None:
    """Decode tokens/s vs length for every engine, per variant and cache mode (comparisons of two or more
    lengths)."""
    d = _with_lengths(_engine_rows(df))
    if d.empty:
        return None
    panels = sorted(d["panel"].unique())
    fig, panel_axes = facet_grid(len(panels), height=3.6)
    for ax, panel in zip(panel_axes, panels, strict=True):
        sub = d[d["panel"] == panel]
        sns.lineplot(data=sub, x="p_decode_tokens", y="tokens_per_s", hue="backend", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="tokens decoded T (tokens, log scale)",
               ylabel="decode throughput (tokens/s, log scale)", title=panel)
        length_axis(ax, sub["p_decode_tokens"].tolist())
    fig.tight_layout()
    return to_png_base64(fig)


def fig_peers(df: pd.DataFrame) -> str | None:
    """Tokens/s of ours and transformers' generate on the same weights and engine."""
    p = peers(df)
    if p.empty:
        return None
    long = pd.concat([
        p.assign(impl="archbench", tps=p["ours_tokens_per_s"]),
        p.assign(impl="transformers generate", tps=p["transformers_tokens_per_s"]),
    ])
    long["case"] = (long["variant"] + " · " + long["backend"] + " · " + long["p_cache"].map(CACHE_LABELS) + " · T"
                    + long["p_decode_tokens"].astype(str) + " · " + long["machine"])
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * long["case"].nunique() * 2))
    sns.barplot(data=long, y="case", x="tps", hue="impl", ax=ax, orient="h")
    ax.set(xlabel="generate throughput, prefill included (tokens/s)", ylabel="", title="archbench vs transformers")
    ax.legend(title="implementation", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the bars
    return to_png_base64(fig)


# ---- section and summary ------------------------------------------------------------------------------

def section(df: pd.DataFrame) -> Section | None:
    """The decode study: complexity, cache pay-off, roofline, latency by position, engines, transformers."""
    d = decode_rows(df)
    p = peers(df)
    if d.empty and p.empty:
        return None
    out = Section("decode", "Decode scaling: KV cache vs recomputation",
                  "Greedy decode of T tokens after an untimed prompt prefill, with a preallocated KV cache "
                  "(each step attends over the cache: O(T) work per token, O(T^2) in all for attention but "
                  "linear while weights dominate) and without one (each step recomputes the whole prefix), on "
                  "every engine (backend) that ran. Slopes are least-squares fits of log time on log T over the "
                  "upper half of the lengths; the bound assumes every weight and the cache up to the position is "
                  "read once per step at the bandwidth measured on this machine.")
    out.add_figures(df, (
        ("Total decode time vs length", fig_scaling,
         "Log-log: a slope of 1 is linear growth, 2 quadratic. Legends give the fitted slope."),
        ("Per-token latency vs position", fig_latency,
         "One decode step timed (device synchronised) at positions through the longest run."),
        ("Throughput vs the bandwidth bound", fig_roofline,
         "Cached decode tokens/s (solid) and the roofline bound from the measured memory bandwidth (dashed)."),
        ("Engines side by side", fig_engines,
         "The same weights decoded by every engine that ran (eager torch, onnxruntime on the exported graph)."),
        ("archbench vs transformers", fig_peers,
         "Same weights and engine, greedy, same lengths; transformers' GPT2LMHeadModel.generate vs ours, prefill "
         "included."),
    ))
    fits = slopes(df)
    if not fits.empty:
        out.tables.append(Table(
            "Fitted complexity (log-log slope of decode time vs T)",
            ["machine", "variant", "backend", "batch", "cache", "slope (upper half)", "± stderr", "lengths fitted",
             "slope (all lengths)", "slope (two longest)"],
            [[r.machine, r.variant, r.backend, fmt(r.p_batch), r.p_cache, fmt(r.slope), fmt(r.slope_stderr),
              ", ".join(map(str, r.slope_lengths)), fmt(r.slope_all), fmt(r.end_slope)] for r in fits.itertuples()]))
    pay = cache_payoff(df)
    if not pay.empty:
        out.tables.append(Table(
            "Where the cache pays",
            ["machine", "variant", "backend", "batch", "speed-up at longest T (fastest rounds)",
             "same, paired rounds (median)", "longest T", "first T where cached is faster"],
            [[r.machine, r.variant, r.backend, fmt(r.p_batch), f"{r.speedup_longest:.2f}x",
              f"{r.speedup_paired:.2f}x" if r.speedup_paired == r.speedup_paired else "not paired", fmt(r.longest),
              ("≤ " if r.pays_from_first else "") + fmt(r.break_even) if r.break_even else "never (in range)"]
             for r in pay.itertuples()],
            note="Paired rounds: each uncached round at the longest length is timed right after a cached run of "
                 "the same length, and the speed-up is the median of the per-round ratios (both sides see the "
                 "machine in the same state; the regression gate uses it)."))
    if not d.empty:
        cached = d[d["p_cache"] == "raw"].sort_values(["machine", "variant", "backend", "p_batch", "p_decode_tokens"])
        out.tables.append(Table(
            "Cached decode against the measured ceiling",
            ["machine", "variant", "backend", "batch", "T", "tokens/s", "bound tokens/s", "achieved bandwidth",
             "of session ceiling", "ceiling probed beside rounds", "of probed ceiling", "KV cache"],
            [[r.machine, r.variant, r.backend, fmt(r.p_batch), fmt(r.p_decode_tokens), fmt(r.tokens_per_s),
              fmt(r.bound_tokens_per_s), f"{r.achieved_Bps / 1e9:.1f} GB/s", f"{100 * r.bandwidth_fraction:.0f}%",
              *((f"{r.probed_ceiling_Bps / 1e9:.1f} GB/s", f"{100 * r.probed_fraction:.0f}%")
                if r.probed_fraction == r.probed_fraction else ("not probed", "")),
              fmt_bytes(r.m_kv_bytes)] for r in cached.itertuples()],
            note="The session ceiling is the fastest read measured once, when the session first used the device "
                 "(fastest round against it). A shared machine's bandwidth moves by tens of percent within "
                 "seconds, so each cached round is also set against the read bandwidth probed right before and "
                 "right after it (the mean of the two; the median over rounds is shown)."))
    single = single_length_engines(df)
    if not single.empty:
        out.tables.append(Table(
            "Engines side by side at one length",
            ["machine", "variant", "cache", "batch", "T", "engine", "tokens/s", "vs the fastest"],
            [[r.machine, r.variant, CACHE_LABELS.get(r.p_cache, r.p_cache), fmt(r.p_batch), fmt(r.p_decode_tokens),
              r.backend, fmt(r.tokens_per_s), f"{r.tokens_per_s / best:.2f}x"]
             for (_, g) in single.groupby("panel", sort=False) for best in [g["tokens_per_s"].max()]
             for r in g.itertuples()],
            note="Comparisons measured at one length (the figure above shows those of several lengths); "
                 "fastest round of each engine."))
    targets = decode_targets(df)
    if not targets.empty:
        out.tables.append(Table(
            f"Targets: {TARGET_VARIANT}, fp32, batch 1, on the CPU",
            ["machine", "backend", "target", "measured", "met"],
            [[r.machine, r.backend, r.target, r.measured, "yes" if r.met else "no"] for r in targets.itertuples()]))
    if not p.empty:
        out.tables.append(Table(
            "archbench vs transformers (same weights, same engine, greedy)",
            ["machine", "variant", "backend", "cache", "T", "archbench tokens/s", "transformers tokens/s", "ratio",
             "identical tokens"],
            [[r.machine, r.variant, r.backend, r.p_cache, fmt(r.p_decode_tokens), fmt(r.ours_tokens_per_s),
              fmt(r.transformers_tokens_per_s), f"{r.ratio:.2f}x", fmt(r.tokens_identical)] for r in p.itertuples()]))
    side = engines_side_by_side(df)
    if not side.empty:
        keys = ["machine", "device_type", "variant", "p_cache", "p_decode_tokens", "p_batch"]
        value_cols = [c for c in side.columns if c not in keys]
        out.tables.append(Table(
            "Engines side by side (tokens/s; ratios to eager torch on the same device)",
            ["machine", "device", "variant", "cache", "T", "batch", *value_cols],
            [[r["machine"], r["device_type"], r["variant"], r["p_cache"], fmt(int(r["p_decode_tokens"])),
              fmt(int(r["p_batch"])),
              *[(f"{r[c]:.2f}x" if "/" in c and r[c] == r[c] else fmt(r[c])) for c in value_cols]]
             for _, r in side.iterrows()]))
    engines = engine_summary(df)
    if not engines.empty:
        out.tables.append(Table(
            f"Engines for {TARGET_VARIANT} (fp32, batch 1, cached decode)",
            ["machine", "engine", "device", "tokens/s (median)", "of the probed read ceiling", "lengths",
             "prefill (first-token latency)", "prepare (export, fusion, session)", "warm-up before the rounds",
             "graphs compiled", "fused ops in the graph file"],
            [[r.machine, r.backend, r.device_type, fmt(r.tokens_per_s),
              f"{100 * r.probed_fraction:.0f}%" if r.probed_fraction == r.probed_fraction else "not probed",
              r.lengths, f"{1000 * r.prefill_s:.1f} ms for {r.prefill_tokens} tokens" if r.prefill_tokens else "–",
              f"{r.prepare_s:.1f} s" if r.prepare_s == r.prepare_s else "–",
              f"{r.warmup_s:.1f} s" if r.warmup_s == r.warmup_s else "–", fmt(r.graphs), r.fused_ops]
             for r in engines.itertuples()],
            note="Engine settings are in the hardware table. Prepare is the engine taking the model: copying it "
                 "(torch), exporting and fusing it (onnxruntime; a graph cached on disk from an earlier run is "
                 "loaded instead) and opening a session. The warm-up is the untimed correctness check and one "
                 "full decode before the timed rounds (the longest length's): a compiled engine compiles there, so "
                 "it is its compile time plus one run; with inductor's on-disk cache warm it is much shorter. "
                 "The fused ops are those in the file; onnxruntime fuses more as it loads a graph (ORT_ENABLE_ALL)."))
    serving = serving_rows(df)
    if not serving.empty:
        out.tables.append(Table(
            f"Serving figures for {serving['variant'].iloc[0]} (batch 1, cached decode)",
            ["machine", "engine", "tokens decoded", "TTFT", "TPOT p50", "TPOT p90", "TPOT p99", "energy per token"],
            [[r.machine, r.backend, fmt(int(r.p_decode_tokens)),
              *[f"{1000 * v:.2f} ms" for v in (r.m_ttft_s, r.m_tpot_p50_s, r.m_tpot_p90_s, r.m_tpot_p99_s)],
              f"{1000 * r.energy_per_token_j:.2f} mJ" if r.energy_per_token_j == r.energy_per_token_j
              else "no counter (see the hardware table)"]
             for r in serving.itertuples()],
            note="As serving benchmarks name them, for one request: TTFT (time to first token) is the prompt's "
                 "prefill plus the first decode step; TPOT (time per output token) is each later step, its median "
                 "and 90th and 99th percentiles over the steps. They come from one untimed instrumented run after "
                 "the timed rounds, each step timed on its own with the device synchronised; tokens/s above comes "
                 "from the timed rounds. Energy per token is the median over the timed rounds of the device's own "
                 "energy counter's rise (NVML on NVIDIA GPUs, RAPL on CPUs) over the tokens decoded; where the "
                 "device has no readable counter the hardware table says why (no estimate from a TDP)."))
    agree = token_agreement(df)
    if not agree.empty and not agree["identical"].all():
        bad = agree[~agree["identical"]]
        out.notes.append(f"Cached and uncached decode produced different tokens in {len(bad)} case(s).")
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """Key findings of the decode study, a sentence each."""
    lines = []
    fits = slopes(df)
    for (machine, backend), g in fits.groupby(["machine", "backend"]) if not fits.empty else []:
        raw, none = g[g["p_cache"] == "raw"], g[g["p_cache"] == "none"]
        raw, none = raw[raw["slope"].notna()], none[none["slope"].notna()]  # a fit needs two lengths or more
        if len(raw) and len(none):
            lines.append(f"{machine} / {backend}: decode time grows with log-log slope {raw['slope'].median():.2f} "
                         f"with a KV cache and {none['slope'].median():.2f} without "
                         f"({none['end_slope'].median():.2f} between the two longest lengths; medians over variants).")
        elif len(raw):
            lines.append(f"{machine} / {backend}: decode time grows with log-log slope {raw['slope'].median():.2f} "
                         "with a KV cache (without one it was timed at fewer than two lengths: no slope).")
    pay = cache_payoff(df)
    if not pay.empty:  # the paired figure where measured (both sides timed together), else the fastest rounds'
        speedup = pay["speedup_paired"].where(pay["speedup_paired"].notna(), pay["speedup_longest"])
        best = pay.loc[speedup.idxmax()]
        how = "paired rounds" if best.speedup_paired == best.speedup_paired else "fastest rounds"
        lines.append(f"Largest cache speed-up: {speedup[best.name]:.1f}x ({how}) for {best.variant} at "
                     f"T={best.longest} on {best.machine} / {best.backend}.")
    p = peers(df)
    for r in p.itertuples() if not p.empty else []:
        lines.append(f"{r.variant}, {r.p_cache} cache, T={r.p_decode_tokens}: archbench {r.ratio:.2f}x transformers' "
                     f"tokens/s on {r.machine} / {r.backend} (identical tokens: {fmt(r.tokens_identical)}).")
    side = engines_side_by_side(df)
    for column in [c for c in side.columns if " / " in c] if not side.empty else []:
        cached = side[(side["p_cache"] == "raw") & side[column].notna()]
        engine, reference = column.split(" / ")
        for (machine, variant), g in cached.groupby(["machine", "variant"]):
            lines.append(f"{variant} cached decode: {engine} at {g[column].median():.2f}x {reference}'s tokens/s on "
                         f"{machine} (median over lengths).")
    d = decode_rows(df)
    if not d.empty:
        big = d[(d["p_cache"] == "raw") & (d["p_batch"] == 1)]
        if not big.empty:
            top = big.loc[big["m_weight_bytes"].idxmax()]
            top_rows = big[(big["variant"] == top.variant) & (big["machine"] == top.machine)]
            parts = [f"{backend} at {100 * g['bandwidth_fraction'].max():.0f}% of the session's bandwidth ceiling"
                     + (f", {100 * g['probed_fraction'].max():.0f}% of the ceiling probed beside its rounds"
                        if g["probed_fraction"].notna().any() else "")
                     for backend, g in top_rows.groupby("backend")]
            lines.append(f"{top.variant} cached decode on {top.machine} (best length): {'; '.join(parts)}.")
    return lines


def figures(df: pd.DataFrame) -> list:
    """Key figures for CI summaries and history: per engine, GPT-2 124M's cached tokens/s and share of the
    probed ceiling, the fitted cached and uncached slopes, the cache's speed-up, and ours vs transformers."""
    from reports.summary import KeyFigure

    found = []
    for r in engine_summary(df).itertuples():
        found.append(KeyFigure(f"decode {TARGET_VARIANT} cached tokens/s ({r.backend})", r.tokens_per_s,
                               "tokens/s", True, r.machine))
        found.append(KeyFigure(f"decode {TARGET_VARIANT} share of probed read ceiling ({r.backend})",
                               100 * r.probed_fraction, "%", True, r.machine))
    serving = serving_rows(df)
    for (machine, variant, backend), g in serving.groupby(["machine", "variant", "backend"]) if not serving.empty \
            else []:
        longest = g.loc[g["p_decode_tokens"].idxmax()]
        where = f"{variant}, T={int(longest.p_decode_tokens)}, {backend}"
        found.append(KeyFigure(f"decode TTFT ({where})", 1000 * longest.m_ttft_s, "ms", False, machine))
        found.append(KeyFigure(f"decode TPOT p99 ({where})", 1000 * longest.m_tpot_p99_s, "ms", False, machine))
    fits = slopes(df)
    for (machine, backend, cache), g in fits.groupby(["machine", "backend", "p_cache"]) if not fits.empty else []:
        slope = g["slope"].dropna()
        if len(slope):
            found.append(KeyFigure(f"decode log-log slope, {CACHE_LABELS.get(cache, cache)} ({backend}, median over "
                                   "variants)", float(slope.median()), "slope", False, machine))
    pay = cache_payoff(df)
    for (machine, backend), g in pay.groupby(["machine", "backend"]) if not pay.empty else []:
        speedup = g["speedup_paired"].where(g["speedup_paired"].notna(), g["speedup_longest"])
        found.append(KeyFigure(f"decode largest cache speed-up ({backend})", float(speedup.max()), "x", True,
                               machine))
    p = peers(df)
    for r in p.itertuples() if not p.empty else []:
        name = f"decode {r.variant} archbench / transformers tokens/s ({r.backend}, T={r.p_decode_tokens})"
        found.append(KeyFigure(name, r.ratio, "x", True, r.machine))
    return found
