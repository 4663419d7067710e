"""The tying study's judge half: its claim and its regression gates (parameter counts equal to the
baseline's)."""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext, exact_gate
from reports.page import study_rows
from reports.verdicts import FAILS, HOLDS, MIXED, Claim, Verdict, unmeasured

SMALL, LARGE = "gpt2-small", "llama-2-70b"  # the two shapes the claim names


def tying_saves(df: pd.DataFrame) -> Verdict:
    """GPT-2 small: 25-35% of the tied model saved; the 70B-class shape: under 1%."""
    d = study_rows(df, "tying", "params")
    if d.empty:
        return unmeasured("tying parameter counts")
    by = d.drop_duplicates("variant").set_index("variant")
    parts, ok = [], []
    if SMALL in by.index:
        r = by.loc[SMALL]
        parts.append(f"{SMALL}: {int(r['m_saved_params']):,} saved ({100 * r['m_saved_share_of_tied']:.1f}% of the "
                     "tied model)")
        ok.append(0.25 <= r["m_saved_share_of_tied"] <= 0.35)
    if LARGE in by.index:
        parts.append(f"{LARGE}: {100 * by.loc[LARGE, 'm_saved_share_of_untied']:.2f}% of the untied model")
        ok.append(by.loc[LARGE, "m_saved_share_of_untied"] < 0.01)
    if not ok:
        return unmeasured(f"the {SMALL} or {LARGE} counts")
    return Verdict(HOLDS if all(ok) else (MIXED if any(ok) else FAILS), "; ".join(parts))


CLAIMS = (
    Claim("tying", "Weight tying saves about 38M parameters (~30%) at 124M and a negligible share at 70B.",
          "tying", tying_saves),
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
