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


def upper_half(lengths: list[int]) -> list[int]:
    """The lengths at or above the median: where the asymptotic growth shows (fixed per-step costs fade)."""
    ordered = sorted(set(lengths))
    return ordered if len(ordered) <= 2 else ordered[(len(ordered) - 1) // 2 :]


def decode_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Decode-phase rows with tokens/s, achieved bandwidth and its fraction of the measured ceiling."""
    if df.empty or "p_phase" not in df:
        return pd.DataFrame()
    d = df[(df["study"] == "decode") & (df["p_phase"] == "decode")].copy()
    if d.empty:
        return d
    for col in ("p_decode_tokens", "p_batch"):
        d[col] = d[col].astype(int)
    d["tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / d[TIME]
    d["achieved_Bps"] = d["m_bytes_read"] / d[TIME]
    d["bandwidth_fraction"] = d["achieved_Bps"] / d["m_ceiling_Bps"]
    d["bound_tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / (d["m_bytes_read"] / d["m_ceiling_Bps"])
    return d


def slopes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, variant, backend, batch, dtype, cache): log-log slopes of decode time vs T.

    `slope`: least squares over the upper half of the lengths (with its standard error); `slope_all`:
    over every length; `end_slope`: between the two longest lengths, where the asymptotic growth
    shows most (fixed per-forward costs flatten the uncached curve at short lengths).
    """
    d = decode_rows(df)
    rows = []
    if d.empty:
        return pd.DataFrame()
    for key, g in d.groupby([*GROUP, "p_cache"]):
        g = g.sort_values("p_decode_tokens")
        all_fit = fit_loglog(g["p_decode_tokens"].tolist(), g[TIME].tolist())
        upper = upper_half(g["p_decode_tokens"].tolist())
        gu = g[g["p_decode_tokens"].isin(upper)]
        fit = fit_loglog(gu["p_decode_tokens"].tolist(), gu[TIME].tolist())
        end = fit_loglog(g["p_decode_tokens"].tolist()[-2:], g[TIME].tolist()[-2:])
        rows.append(dict(zip([*GROUP, "p_cache"], key, strict=True), slope=fit.slope, slope_stderr=fit.stderr,
                         slope_points=fit.n, slope_lengths=fit.lengths, slope_all=all_fit.slope,
                         slope_all_stderr=all_fit.stderr, end_slope=end.slope,
                         longest=int(g["p_decode_tokens"].max())))
    return pd.DataFrame(rows)


def cache_payoff(df: pd.DataFrame) -> pd.DataFrame:
    """Per group: the cache's speed-up (uncached time / cached time) at each common length, the speed-up
    at the longest one, and the first length at which the cache is faster."""
    d = decode_rows(df)
    rows = []
    if d.empty:
        return pd.DataFrame()
    for key, g in d.groupby(GROUP):
        raw = g[g["p_cache"] == "raw"].set_index("p_decode_tokens")[TIME]
        none = g[g["p_cache"] == "none"].set_index("p_decode_tokens")[TIME]
        common = sorted(set(raw.index) & set(none.index))
        if not common:
            continue
        speedups = {int(t): float(none[t] / raw[t]) for t in common}
        pays = [t for t in common if speedups[t] > 1.0]
        rows.append(dict(zip(GROUP, key, strict=True), lengths=tuple(common), speedups=speedups,
                         longest=int(common[-1]), speedup_longest=speedups[common[-1]],
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
    rows = []
    for key, g in d.groupby(["machine", "variant", "backend", "p_cache", "p_decode_tokens"]):
        by_impl = g.set_index("p_impl")
        if not {"archbench", "transformers"} <= set(by_impl.index):
            continue
        tokens = key[-1]
        ours = tokens / float(by_impl.loc["archbench", TIME])
        theirs = tokens / float(by_impl.loc["transformers", TIME])
        rows.append(dict(zip(["machine", "variant", "backend", "p_cache", "p_decode_tokens"], key, strict=True),
                         ours_tokens_per_s=ours, transformers_tokens_per_s=theirs, ratio=ours / theirs,
                         tokens_identical=bool(g["m_tokens_identical"].all())))
    return pd.DataFrame(rows)


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
