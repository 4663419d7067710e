"""The LoRA study's judge half: the article's two statements, and the regression gates.

The article says (a) with B and A drawn from normal distributions, the variance of B A grows with the
rank, so γ = α/r shrinks the update's variance and γ = α/√r keeps it constant, and (b) so fine-tuning
gets less effective as the rank grows under α/r and not under α/√r.
- (a) is an identity of the construction: shown as one (it holds whenever the arithmetic is right, and
  says nothing about training).
- (b) is judged on fine-tuning as it is done (B = 0 at the start): for each scaling, the held-out loss
  at the smallest rank minus at the largest, paired by seed, each (scaling, rank) at its best learning
  rate of a small sweep (rsLoRA at rank r is LoRA with B's learning rate times √r: one rate for both
  would compare learning rates). "Keeps improving": past 0.01 bits/byte; "less effective": below it.
  Judged only where every arm's held-out loss beats the unigram model of the text by 0.5 bits/byte.

Gates: the variance slopes within 0.1 of -1 and 0; at the top rank rsLoRA still ends below LoRA if it
did in the baseline.
"""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext
from reports.page import study_rows
from reports.verdicts import FAILS, HOLDS, Claim, Verdict, judge_values, learned_something, not_testable, unmeasured

from .report import finetune_best

VARIANCE_SLOPE_TOLERANCE = 0.1
IMPROVES_BITS = 0.01  # "keeps improving with rank": a lower held-out loss at the top rank by at least this


def variance_identity(df: pd.DataFrame) -> Verdict:
    """Var(γ B A) vs rank with A and B unit normal: slope -1 under α/r and 0 under α/√r (an identity)."""
    d = study_rows(df, "lora", "variance")
    if d.empty or not {"lora", "rslora"} <= set(d["p_scaling"]):
        return unmeasured("LoRA variance records")
    slopes = d.set_index("p_scaling")["m_loglog_slope"]
    ok = abs(slopes["lora"] + 1) <= VARIANCE_SLOPE_TOLERANCE and abs(slopes["rslora"]) <= VARIANCE_SLOPE_TOLERANCE
    return Verdict(HOLDS if ok else FAILS,
                   f"an arithmetic identity, not evidence about training: Var(γ·BA) = γ²·r for unit-variance A and "
                   f"B; log-log slope against rank: LoRA {slopes['lora']:.2f} (expected -1), rsLoRA "
                   f"{slopes['rslora']:.2f} (expected 0)",
                   model=f"A and B drawn N(0, 1) at width {int(d['p_dim'].iloc[0])}, no model")


def _model(fine: pd.DataFrame) -> str:
    r = fine.iloc[0]
    seeds = sorted({int(s) for s in fine["p_seed"]})
    return (f"{r['variant']} reference model's adapters (α {r['p_alpha']:g}) fine-tuned {int(r['p_steps'])} steps on "
            f"the held-out email package, ranks {int(fine['p_rank'].min())}-{int(fine['p_rank'].max())}, best lr of "
            f"{r['lr_tried']}, seeds {', '.join(map(str, seeds))}")


def _improvement(df: pd.DataFrame, scaling: str, claimed_above: bool, claim: str) -> Verdict:
    """Held-out loss at the smallest rank minus at the largest, per seed, at each arm's best learning rate."""
    fine = finetune_best(df)
    if fine.empty or not (fine["p_scaling"] == scaling).any():
        return unmeasured(f"{scaling} fine-tuning records")
    model = _model(fine)
    if "m_unigram_bpb" in fine:
        reason = learned_something({f"{r.p_scaling} r={int(r.p_rank)} seed {int(r.p_seed)}":
                                    (r.m_eval_bpb_after, r.m_unigram_bpb) for r in fine.itertuples()})
        if reason:
            return not_testable(f"{scaling}: an arm did not learn enough", reason, model)
    g = fine[fine["p_scaling"] == scaling]
    low, high = int(g["p_rank"].min()), int(g["p_rank"].max())
    at = g.set_index(["p_rank", "p_seed"])["m_eval_bpb_after"]
    seeds = sorted({int(s) for s in g["p_seed"]})
    diffs = [at[(low, s)] - at[(high, s)] for s in seeds if (low, s) in at and (high, s) in at]
    grads = g.groupby("p_rank")["m_mean_grad_norm"].mean()
    return judge_values(diffs, IMPROVES_BITS, claimed_above=claimed_above, model=model, unit="bits/byte",
                        figures=f"{scaling}: held-out loss {sum(diffs) / len(diffs):+.3f} bits/byte lower at r={high} "
                                f"than at r={low} (mean over seeds); adapter gradient norm x"
                                f"{grads[high] / grads[low]:.3g} from r={low} to r={high}; {claim}")


def lora_stalls(df: pd.DataFrame) -> Verdict:
    """Under α/r the held-out loss does not improve with rank by 0.01 bits/byte (interval below it)."""
    return _improvement(df, "lora", claimed_above=False, claim=f"less effective: less than {IMPROVES_BITS} better")


def rslora_improves(df: pd.DataFrame) -> Verdict:
    """Under α/√r the held-out loss improves with rank by more than 0.01 bits/byte."""
    return _improvement(df, "rslora", claimed_above=True, claim=f"keeps improving: more than {IMPROVES_BITS} better")


CLAIMS = (
    Claim("lora-variance", "With A and B drawn at random, α/r shrinks the update's variance with rank and α/√r "
          "keeps it constant.", "lora", variance_identity),
    Claim("lora-stalls", "Under α/r (LoRA), fine-tuning gets less effective as the rank grows.", "lora", lora_stalls),
    Claim("rslora-rank", "Under α/√r (rsLoRA), fine-tuning keeps improving as the rank grows.", "lora",
          rslora_improves),
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
        fine = finetune_best(df)
        tops.append(None if fine.empty else fine[fine["p_rank"] == fine["p_rank"].max()]
                    .groupby("p_scaling")["m_final_train_bpb"].mean())
    base, cur = tops
    if base is not None and cur is not None and {"lora", "rslora"} <= set(base.index) & set(cur.index) \
            and base["rslora"] < base["lora"]:
        out.append(Gate("rslora at the top rank", "final training loss rsLoRA < LoRA",
                        f"{cur['rslora']:.3f} vs {cur['lora']:.3f}", "rsLoRA lower (as in the baseline)",
                        bool(cur["rslora"] < cur["lora"])))
    return out
