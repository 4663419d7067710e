"""The LoRA study's judge half: its claims and its regression gates (the variance slopes within 0.1 of -1
and 0; at the top rank rsLoRA still ends below LoRA if it did in the baseline)."""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext
from reports.page import study_rows
from reports.verdicts import FAILS, HOLDS, MIXED, Claim, Verdict, unmeasured

VARIANCE_SLOPE_TOLERANCE = 0.1


def variance_slopes(df: pd.DataFrame) -> Verdict:
    """Var(gamma BA) vs rank: slope within 0.1 of -1 for LoRA and of 0 for rsLoRA."""
    d = study_rows(df, "lora", "variance")
    if d.empty or not {"lora", "rslora"} <= set(d["p_scaling"]):
        return unmeasured("LoRA variance records")
    slopes = d.set_index("p_scaling")["m_loglog_slope"]
    text = f"log-log slope of the update's variance vs rank: LoRA {slopes['lora']:.2f}, rsLoRA {slopes['rslora']:.2f}"
    ok = abs(slopes["lora"] + 1) <= VARIANCE_SLOPE_TOLERANCE and abs(slopes["rslora"]) <= VARIANCE_SLOPE_TOLERANCE
    return Verdict(HOLDS if ok else FAILS, text)


def rslora_high_rank(df: pd.DataFrame) -> Verdict:
    """At the largest rank rsLoRA ends lower than LoRA, and rsLoRA improves from the smallest to the largest."""
    d = study_rows(df, "lora", "finetune")
    if d.empty or not {"lora", "rslora"} <= set(d["p_scaling"]):
        return unmeasured("LoRA fine-tuning records")
    top = int(d["p_rank"].max())
    lo = int(d["p_rank"].min())
    at = d.set_index(["p_scaling", "p_rank"])["m_final_train_bpb"]
    better = at[("rslora", top)] < at[("lora", top)]
    improves = at[("rslora", top)] < at[("rslora", lo)]
    text = (f"final training loss at r={top}: rsLoRA {at[('rslora', top)]:.3f} vs LoRA {at[('lora', top)]:.3f} "
            f"bits/byte; rsLoRA from r={lo} to r={top}: {at[('rslora', lo)]:.3f} -> {at[('rslora', top)]:.3f}")
    return Verdict(HOLDS if better and improves else (MIXED if better or improves else FAILS), text)


CLAIMS = (
    Claim("lora-variance", "LoRA's scaled update shrinks with rank (α/r); rsLoRA's (α/√r) does not.", "lora",
          variance_slopes),
    Claim("rslora-rank", "rsLoRA learns better at high rank, where LoRA stalls.", "lora", rslora_high_rank),
)


def gates(ctx: GateContext) -> list[Gate]:
    """The variance slopes, and rsLoRA's lead at the top rank where the baseline had it."""
    out: list[Gate] = []
    for r in study_rows(ctx.cur_df, "lora", "variance").itertuples():
        expected = 0.0 if r.p_scaling == "rslora" else -1.0
        out.append(Gate("lora variance slope", r.p_scaling, f"{r.m_loglog_slope:.3f}",
                        f"{expected:+.0f} ± {VARIANCE_SLOPE_TOLERANCE}",
                        bool(abs(r.m_loglog_slope - expected) <= VARIANCE_SLOPE_TOLERANCE)))
    tops = []
    for df in (ctx.fullest_base, ctx.cur_df):
        fine = study_rows(df, "lora", "finetune")
        tops.append(None if fine.empty else
                    fine[fine["p_rank"] == fine["p_rank"].max()].set_index("p_scaling")["m_final_train_bpb"])
    base, cur = tops
    if base is not None and cur is not None and {"lora", "rslora"} <= set(base.index) & set(cur.index) \
            and base["rslora"] < base["lora"]:
        out.append(Gate("rslora at the top rank", "final training loss rsLoRA < LoRA",
                        f"{cur['rslora']:.3f} vs {cur['lora']:.3f}", "rsLoRA lower (as in the baseline)",
                        bool(cur["rslora"] < cur["lora"])))
    return out
