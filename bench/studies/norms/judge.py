"""The norms study's judge half: its claims and its regression gates (under Xavier init Post-LN's
last/first gradient ratio > 1 and Pre-LN's < 1 where the baseline had it so; Pre-LN fails no more often
than Post-LN)."""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext
from reports.load import TIME
from reports.page import study_rows
from reports.verdicts import FAILS, HOLDS, MIXED, Claim, Verdict, unmeasured

from .report import stability


def preln_stable(df: pd.DataFrame) -> Verdict:
    """Fewer failed runs for Pre-LN than Post-LN without warm-up (or as few, with a lower final loss)."""
    s = stability(df)
    if s.empty or not {"post_ln", "pre_ln"} <= set(s["p_norm"]):
        return unmeasured("stability runs of both placements")
    by = s.set_index("p_norm")
    post, pre = by.loc["post_ln"], by.loc["pre_ln"]
    text = (f"lr {post['lr']:g} without warm-up: Post-LN failed {int(post['failed'])}/{int(post['runs'])} runs "
            f"(final {post['final_bpb_mean']:.2f} bits/byte), Pre-LN {int(pre['failed'])}/{int(pre['runs'])} "
            f"({pre['final_bpb_mean']:.2f})")
    post_rate, pre_rate = post["failed"] / post["runs"], pre["failed"] / pre["runs"]
    if pre_rate < post_rate:
        return Verdict(HOLDS, text)
    if pre_rate == post_rate and pre["final_bpb_mean"] < post["final_bpb_mean"]:
        return Verdict(MIXED, text)
    return Verdict(FAILS, text)


def rmsnorm_faster(df: pd.DataFrame) -> Verdict:
    """The faster RMSNorm (ours or torch's) beats LayerNorm at most widths, per backend."""
    d = study_rows(df, "norms", "speed")
    if d.empty:
        return unmeasured("norm speed records")
    t = d.pivot_table(index=["backend", "p_width"], columns="p_impl", values=TIME, aggfunc="min")
    if "layernorm" not in t:
        return unmeasured("LayerNorm timings")
    rms = t[[c for c in ("rmsnorm", "torch_rmsnorm") if c in t]].min(axis=1)
    ratio = (t["layernorm"] / rms).groupby(level=0).median()  # > 1: RMSNorm faster
    text = "; ".join(f"{b}: RMSNorm {r:.2f}x LayerNorm's speed (median over widths)" for b, r in ratio.items())
    if (ratio > 1.0).all():
        return Verdict(HOLDS, text)
    return Verdict(MIXED if (ratio > 1.0).any() else FAILS, text)


CLAIMS = (
    Claim("pre-ln", "Pre-LN trains more stably than Post-LN (no warm-up needed).", "norms", preln_stable),
    Claim("rmsnorm", "RMSNorm is faster than LayerNorm.", "norms", rmsnorm_faster),
)


def gates(ctx: GateContext) -> list[Gate]:
    """Gradient trends at initialisation as in the baseline, and Pre-LN failing no more often than Post-LN."""
    out: list[Gate] = []
    base_grads, grads = study_rows(ctx.fullest_base, "norms", "gradients"), study_rows(ctx.cur_df, "norms", "gradients")
    if not base_grads.empty and not grads.empty:
        index = grads.set_index(["p_init", "p_norm", "p_depth"])["m_last_over_first"]
        for r in base_grads[base_grads["p_init"] == "xavier"].itertuples():
            key = (r.p_init, r.p_norm, r.p_depth)
            if key not in index.index or r.p_norm == "pre_rms":
                continue
            rising = r.m_last_over_first > 1
            value = float(index[key])
            out.append(Gate("gradient trend at init", f"{r.p_norm} depth {int(r.p_depth)} (xavier)", f"{value:.2f}",
                            "> 1 (as in the baseline)" if rising else "< 1 (as in the baseline)",
                            bool(value > 1 if rising else value < 1)))
    stab = stability(ctx.cur_df)
    if not stab.empty and {"post_ln", "pre_ln"} <= set(stab["p_norm"]):
        by = stab.set_index("p_norm")
        pre = by.loc["pre_ln", "failed"] / by.loc["pre_ln", "runs"]
        post = by.loc["post_ln", "failed"] / by.loc["post_ln", "runs"]
        out.append(Gate("stability", "Pre-LN failure rate <= Post-LN's", f"{pre:.2f} vs {post:.2f}",
                        "Pre-LN <= Post-LN", bool(pre <= post)))
    return out
