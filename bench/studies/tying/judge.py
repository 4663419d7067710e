"""The tying study's judge half: the article's sentence in its parts, against its own numbers, and the
regression gates (parameter counts equal to the baseline's).

The article: tying "saves about 38.6M parameters (~30%) at 124M" and that is "less than 0.05% of a 70B
model". The second part is judged both ways it can be read: as the article's own arithmetic (GPT-2's
38.6M embedding against a 70B-class model) and as what a real 70B model saves by tying its own head
(docs/references.md).
"""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext, exact_gate
from reports.page import study_rows
from reports.verdicts import FAILS, HOLDS, Claim, Verdict, unmeasured

SMALL = "gpt2-small"  # the 124M model the article names
ARTICLE_SAVED = 38_597_376  # "about 38.6M": GPT-2's token embedding, 50,257 x 768
ARTICLE_SHARE = 0.0005  # "less than 0.05%"
SEVENTY = (70e9, 75e9)  # what counts as a 70B-class model (parameters, untied)


def _counts(df: pd.DataFrame) -> pd.DataFrame:
    d = study_rows(df, "tying", "params")
    return d if d.empty else d.drop_duplicates("variant").set_index("variant")


def _seventies(by: pd.DataFrame) -> pd.DataFrame:
    """The 70B-class shapes among the counted ones (70-75B parameters untied, give or take a billion)."""
    return by[(by["m_untied_params"] >= SEVENTY[0] - 2e9) & (by["m_untied_params"] < SEVENTY[1])]


def saves_at_124m(df: pd.DataFrame) -> Verdict:
    """Exact: the parameters tying saves at GPT-2 124M equal the article's 38.6M."""
    by = _counts(df)
    if by.empty or SMALL not in by.index:
        return unmeasured(f"tying counts of {SMALL}")
    r = by.loc[SMALL]
    saved = int(r["m_saved_params"])
    return Verdict(HOLDS if saved == ARTICLE_SAVED else FAILS,
                   f"{saved:,} parameters saved ({100 * r['m_saved_share_of_tied']:.1f}% of the tied model); the "
                   f"article: {ARTICLE_SAVED:,}",
                   model=f"{SMALL}'s shape ({int(r['m_tied_params']):,} parameters tied), counted exactly")


def _seventy_counts(df: pd.DataFrame) -> pd.DataFrame:
    """The counts of the 70B-class shapes, by name (empty when none were counted)."""
    by = _counts(df)
    return _seventies(by) if not by.empty else by


def arithmetic_at_70b(df: pd.DataFrame) -> Verdict:
    """The article's arithmetic: GPT-2's 38.6M embedding as a share of a 70B-class model, under 0.05%?"""
    seventy = _seventy_counts(df)
    if seventy.empty:
        return unmeasured("tying counts of a 70B-class shape")
    name = seventy["m_untied_params"].idxmin()
    share = ARTICLE_SAVED / float(seventy.loc[name, "m_untied_params"])
    return Verdict(HOLDS if share < ARTICLE_SHARE else FAILS,
                   f"38.6M of {name}'s {int(seventy.loc[name, 'm_untied_params']):,} is {100 * share:.3f}% "
                   f"(of exactly 70e9: {100 * ARTICLE_SAVED / 70e9:.3f}%); the article: under 0.05%",
                   model=f"{SMALL}'s embedding against {name}'s shape, counted exactly")


def own_tying_at_70b(df: pd.DataFrame) -> Verdict:
    """A real 70B model's own tying (its vocabulary x its width) as a share of it, under 0.05%?"""
    seventy = _seventy_counts(df)
    if seventy.empty:
        return unmeasured("tying counts of a 70B-class shape")
    shares = {name: float(r["m_saved_share_of_untied"]) for name, r in seventy.iterrows()}
    text = "; ".join(f"{name}: {int(seventy.loc[name, 'm_saved_params']):,} saved, {100 * s:.2f}%"
                     for name, s in shares.items())
    below = [s < ARTICLE_SHARE for s in shares.values()]
    return Verdict(HOLDS if all(below) else FAILS, text + "; the article: under 0.05%",
                   model=", ".join(f"{name}'s shape" for name in shares) + ", counted exactly")


CLAIMS = (
    Claim("tying-124m", "Weight tying saves about 38.6M parameters (~30%) at GPT-2 124M.", "tying", saves_at_124m),
    Claim("tying-70b-arithmetic", "Those 38.6M parameters are less than 0.05% of a 70B model.", "tying",
          arithmetic_at_70b),
    Claim("tying-70b-own", "At 70B, what tying saves is negligible (under 0.05%).", "tying", own_tying_at_70b),
)


def gates(ctx: GateContext) -> list[Gate]:
    """Exact tied and untied parameter counts per variant."""
    out: list[Gate] = []
    base, cur = study_rows(ctx.fullest_base, "tying", "params"), study_rows(ctx.cur_df, "tying", "params")
    if base.empty or cur.empty:
        return out
    for column in ("m_tied_params", "m_untied_params"):
        index = cur.drop_duplicates("variant").set_index("variant")[column]
        for r in base.drop_duplicates("variant").itertuples():
            out.append(exact_gate(f"tying {column[2:]}", str(r.variant), index.get(r.variant), getattr(r, column)))
    return out
