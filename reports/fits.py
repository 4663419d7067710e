"""Fits and robust statistics the studies share: log-log slopes, a*T + b*T^2 growth, medians of ratios."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
