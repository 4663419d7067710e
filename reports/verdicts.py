"""The claims scoreboard's generic parts: a claim, its verdict, the statistics verdicts are judged with,
and judging every claim per machine.

Each study declares its claims (`judge.py` in its folder): an id, the statement (one part of an
article's sentence: a sentence with two parts is two claims), the report section its evidence lives
in, and a judge from one machine's records (the tidy frame of `reports.load`) to a `Verdict`:
- `holds`: the measured effect is on the claimed side and past the claim's practical threshold (for
  repeated measurements: the whole 95% interval is);
- `does not hold`: it is on the other side of that threshold (the whole interval is);
- `inconclusive`: the interval straddles the threshold (too few repeats, or too noisy to tell);
- `not testable here`: the effect cannot show itself in this setup (an arm that learned nothing, a
  model without the outlier features a claim is about...), with the reason and what would make it
  testable;
- `not measured`: the records this claim needs are not in these results.
Every verdict names what it was judged on (the model, its size, its training), the number of repeats
and the interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
NOT_TESTABLE, UNMEASURED = "not testable here", "not measured"
STATUSES = (HOLDS, FAILS, INCONCLUSIVE, NOT_TESTABLE, UNMEASURED)
LEVEL = 0.95  # every interval is a two-sided 95% interval
UNIGRAM_MARGIN_BITS = 0.5  # a trained arm must beat the byte-frequency model by this much to show an effect


@dataclass(frozen=True)
class Verdict:
    status: str  # one of STATUSES
    figures: str  # the key figures behind the verdict, in a sentence
    model: str = ""  # what it was judged on: the model and its size or training, or the shapes counted
    n: int | None = None  # repeats behind it (seeds, windows, rounds); None for exact counts
    interval: tuple[float, float] | None = None  # the 95% interval of the judged quantity
    unit: str = ""  # the interval's unit
    reason: str = ""  # why not testable here, and what would make it testable

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r} is not valid; allowed values: {', '.join(STATUSES)}")

    @property
    def evidence(self) -> str:
        """n and the interval, in words ("exact" where there is nothing to repeat)."""
        if self.interval is None:
            return "exact" if self.n is None else f"n = {self.n}"
        lo, hi = self.interval
        return f"n = {self.n}, 95% interval [{lo:.4g}, {hi:.4g}]{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    section: str  # anchor of the report section with the evidence
    judge: Callable[[pd.DataFrame], Verdict | list[Verdict]]  # a list: one verdict per model judged on


def unmeasured(what: str) -> Verdict:
    """The verdict where the records lack `what`."""
    return Verdict(UNMEASURED, f"no {what} in these results")


def not_testable(figures: str, reason: str, model: str = "") -> Verdict:
    """The verdict where the effect cannot show itself here: `reason` says why and what would make it testable."""
    return Verdict(NOT_TESTABLE, figures, model=model, reason=reason)


# Student's t: the two-sided 95% quantile by degrees of freedom (standard tables); beyond 30, 1.96 at infinity.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(df: float) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom (conservative between rows)."""
    if df < 1:
        return math.inf
    rows = sorted(_T95)
    below = [r for r in rows if r <= df + 1e-6]  # a Welch df of 3.9999999 (rounding) is 4
    return _T95[below[-1]] if df <= rows[-1] else 1.96


def t_quantile(df: float, confidence: float) -> float:
    """The two-sided `confidence` quantile of Student's t with `df` degrees of freedom, rounded down to a whole
    number (conservative; at most 1000): exact, from the closed form of P(|T| <= t) for whole degrees of
    freedom (Abramowitz & Stegun 26.7.3-4), solved by bisection. For levels the 95% table lacks."""
    if df < 1:
        return math.inf
    nu = min(int(df + 1e-6), 1000)  # a Welch df of 3.9999999 (rounding) is 4

    def covered(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(nu))
        c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
        if nu % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 c^2 + 2.4/(3.5) c^4 + ...))
            for k in range(1, (nu - 1) // 2):
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
            return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if nu > 1 else 0.0))
        for k in range(1, nu // 2):  # even: sin (1 + 1/2 c^2 + 1.3/(2.4) c^4 + ...)
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total

    low, high = 0.0, 1.0
    while covered(high) < confidence:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if covered(mid) < confidence else (low, mid)
    return high


def _t(df: float, confidence: float) -> float:
    """The table at 95% (what every interval used before other levels existed), the closed form otherwise."""
    return t95(df) if confidence == 0.95 else t_quantile(df, confidence)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its two-sided t-interval, 95% or `confidence` (infinite
    with one value)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(x) == 0:
        return math.nan, -math.inf, math.inf
    mean = float(x.mean())
    if len(x) < 2:
        return mean, -math.inf, math.inf
    half = _t(len(x) - 1, confidence) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def log_ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
                       ) -> tuple[float, float, float]:
    """(ratio, low, high): the ratio of the geometric means of positive samples a / b, with a Welch interval
    (95%, or `confidence`) on the difference of their logs (for timings: unpaired rounds of two
    configurations)."""
    la, lb = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    diff = float(la.mean() - lb.mean())
    if len(la) < 2 or len(lb) < 2:
        return math.exp(diff), 0.0, math.inf
    va, vb = la.var(ddof=1) / len(la), lb.var(ddof=1) / len(lb)
    se = math.sqrt(va + vb)
    if se == 0:
        return math.exp(diff), math.exp(diff), math.exp(diff)
    df = (va + vb) ** 2 / ((va**2 / (len(la) - 1)) + (vb**2 / (len(lb) - 1)))
    half = _t(df, confidence) * se
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half)


def judge_interval(low: float, high: float, threshold: float, *, claimed_above: bool = True) -> str:
    """holds when the whole interval is past `threshold` on the claimed side, does not hold when it is
    wholly on the other side, inconclusive when it straddles it."""
    if claimed_above:
        return HOLDS if low > threshold else (FAILS if high < threshold else INCONCLUSIVE)
    return HOLDS if high < threshold else (FAILS if low > threshold else INCONCLUSIVE)


def judge_values(values: Sequence[float], threshold: float, *, claimed_above: bool = True, figures: str,
                 model: str, unit: str = "") -> Verdict:
    """A verdict from repeated measurements (seeds, windows: each a paired difference or a ratio): their
    mean's 95% interval against the claim's practical threshold."""
    _, low, high = mean_interval(values)
    n = sum(1 for v in values if v is not None and math.isfinite(v))
    status = judge_interval(low, high, threshold, claimed_above=claimed_above) if n >= 2 else INCONCLUSIVE
    return Verdict(status, figures, model=model, n=n, interval=(low, high), unit=unit)


def learned_something(arms: dict[str, tuple[float, float]], margin: float = UNIGRAM_MARGIN_BITS,
                      remedy: str = "train longer (the standard preset) or on more data") -> str | None:
    """None when every arm's held-out loss beats the byte-frequency model by `margin` bits/byte, else the
    reason the effect cannot show itself: the arms that learned too little, and `remedy`. `arms`: name ->
    (held-out bits/byte, unigram bits/byte)."""
    weak = {name: (bpb, unigram) for name, (bpb, unigram) in arms.items()
            if not (math.isfinite(bpb) and bpb <= unigram - margin)}
    if not weak:
        return None
    parts = "; ".join(f"{name} {bpb:.3f} against unigram {unigram:.3f}" for name, (bpb, unigram) in weak.items())
    return (f"an arm learned too little to show the effect (held-out bits/byte must beat the unigram model by "
            f"{margin} bits/byte): {parts}; {remedy}")


def scoreboard(df: pd.DataFrame, claims: Iterable[Claim]) -> list[dict]:
    """One row per claim and machine: id, statement, section, machine, status, figures, model, evidence, reason."""
    rows = []
    machines = list(dict.fromkeys(df["machine"])) if not df.empty and "machine" in df else []
    for claim in claims:
        for machine in machines or ["–"]:
            part = df[df["machine"] == machine] if machines else df
            try:
                verdicts = claim.judge(part)
            except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:  # records of another shape
                verdicts = Verdict(UNMEASURED, f"the records could not be read for this claim "
                                               f"({type(exc).__name__}: {exc})")
            for verdict in verdicts if isinstance(verdicts, list) else [verdicts]:
                rows.append({"id": claim.id, "statement": claim.statement, "section": claim.section,
                             "machine": machine, "status": verdict.status, "figures": verdict.figures,
                             "model": verdict.model or "–",
                             "evidence": verdict.evidence if verdict.status != UNMEASURED else "–",
                             "reason": verdict.reason})
    return rows
