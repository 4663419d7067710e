"""The norms study's judge half: its claims and its regression gates (under Xavier init Post-LN's
last/first gradient ratio > 1 and Pre-LN's < 1 where the baseline had it so; Pre-LN fails no more often
than Post-LN)."""

from __future__ import annotations

import math

import pandas as pd

from reports.gates import Gate, GateContext
from reports.load import TIME
from reports.page import study_rows
from reports.verdicts import (
    FAILS,
    Claim,
    Verdict,
    judge_interval,
    judge_values,
    learned_something,
    mean_interval,
    not_testable,
    unmeasured,
)

from .report import stability, stability_rows

STABLE_MARGIN_BITS = 0.1  # "more stable": a lower held-out loss by at least this much, seed for seed


def _paired(d: pd.DataFrame, worse: tuple[str, int], better: tuple[str, int], lr: float) -> list[float]:
    """Per seed at `lr`: held-out bits/byte of the arm `worse` minus that of `better` (arms: placement,
    warm-up steps); a failed run's loss counts as the unigram model's (it learned nothing)."""
    rows = d[d["p_lr"] == lr]
    by = {(r.p_norm, int(r.p_warmup), int(r.p_seed)): (r.val if r.val == r.val else r.m_unigram_bpb)
          for r in rows.itertuples()}
    seeds = sorted({s for (_, _, s) in by})
    return [by[(*worse, s)] - by[(*better, s)] for s in seeds if (*worse, s) in by and (*better, s) in by]


def _learned(d: pd.DataFrame, arm: tuple[str, int], lr: float, remedy: str) -> str | None:
    """Whether the arm that should learn did, by the margin, in every seed (else why the claim cannot show)."""
    rows = d[(d["p_norm"] == arm[0]) & (d["p_warmup"] == arm[1]) & (d["p_lr"] == lr)]
    label = f"{arm[0]} (warm-up {arm[1]})" if arm[1] else arm[0]
    return learned_something({f"{label} seed {int(r.p_seed)}": (r.val if r.val == r.val else float("nan"),
                                                                r.m_unigram_bpb) for r in rows.itertuples()},
                             remedy=remedy)


def _model(d: pd.DataFrame) -> str:
    r = d.iloc[0]
    return (f"{r['variant']} (untied, trained {int(r['p_steps'])} steps of 16 x 64 bytes, no clipping), "
            f"seeds {', '.join(str(int(s)) for s in sorted(d['p_seed'].unique()))}")


def _arm_verdicts(df: pd.DataFrame, worse: tuple[str, int], better: tuple[str, int], what: str,
                  remedy: str) -> list[Verdict]:
    """One verdict per learning rate: `better` ends lower than `worse` by the margin, seed for seed, where the
    `better` arm learns in every seed (else the setup cannot show the effect: `remedy` says what would)."""
    d = stability_rows(df)
    if d.empty:
        return [unmeasured("stability runs")]
    out = []
    for lr in sorted(d["p_lr"].unique()):
        diffs = _paired(d, worse, better, lr)
        if not diffs:
            continue
        model = f"{_model(d)}, lr {lr:g}"
        reason = _learned(d, better, lr, remedy)
        if reason:
            out.append(not_testable(f"lr {lr:g}: {what}", reason, model))
            continue
        rows = d[d["p_lr"] == lr]
        fails = {arm: int(g["m_failed"].sum()) for arm, g in rows.groupby("arm")}
        out.append(judge_values(diffs, STABLE_MARGIN_BITS, model=model, unit="bits/byte",
                                figures=f"lr {lr:g}: {what} by {sum(diffs) / len(diffs):+.3f} bits/byte held-out "
                                        f"(mean over seeds); failed runs: "
                                        + ", ".join(f"{a} {n}/{len(rows[rows['arm'] == a])}"
                                                    for a, n in fails.items())))
    return out or [unmeasured("stability runs of both arms at one learning rate")]


def preln_stable(df: pd.DataFrame) -> list[Verdict]:
    """Without warm-up, Pre-LN ends lower than Post-LN by 0.1 bits/byte, seed for seed."""
    return _arm_verdicts(df, ("post_ln", 0), ("pre_ln", 0), "Pre-LN ends below Post-LN",
                         "train longer (the standard preset) or on more data")


def postln_warmup(df: pd.DataFrame) -> list[Verdict]:
    """Post-LN with a learning-rate warm-up ends lower than without one, seed for seed. The claim is that
    warm-up is needed, so it can show itself only where the warmed arm trains: a warm-up too short for the
    learning rate (Post-LN fails with it too) is no evidence either way."""
    d = stability_rows(df)
    warmed = sorted({int(w) for n, w in zip(d["p_norm"], d["p_warmup"], strict=True) if n == "post_ln" and w}) \
        if not d.empty else []
    if not warmed:
        return [unmeasured("a Post-LN arm with warm-up")]
    return _arm_verdicts(df, ("post_ln", 0), ("post_ln", warmed[0]),
                         f"warm-up ({warmed[0]} steps) brings Post-LN below no warm-up",
                         "Post-LN fails with this warm-up too, so the run cannot tell whether warm-up is what it "
                         "lacks: a longer warm-up or a lower learning rate (the standard preset has two)")


RMS_FASTER = 1.0  # "faster": LayerNorm's time over RMSNorm's above 1, across widths


def _speed_ratios(d: pd.DataFrame) -> dict[str, tuple[list[float], bool]]:
    """Per engine: LayerNorm's fastest round over the faster RMSNorm's (ours or torch's) at each width,
    and whether the engine fuses ops."""
    t = d.pivot_table(index=["backend", "p_width"], columns="p_impl", values=TIME, aggfunc="min")
    if "layernorm" not in t:
        return {}
    rms = t[[c for c in ("rmsnorm", "torch_rmsnorm") if c in t]].min(axis=1)
    ratio = (t["layernorm"] / rms).dropna()
    fused = d.groupby("backend")["p_fused"].first() if "p_fused" in d else pd.Series(dtype=bool)
    return {b: (ratio.loc[b].tolist(), bool(fused.get(b, False))) for b in ratio.index.get_level_values(0).unique()}


def rmsnorm_faster(df: pd.DataFrame) -> list[Verdict]:
    """On each engine that fuses the norms (fused against fused): RMSNorm faster than LayerNorm, by the
    geometric mean over widths and its 95% interval. Eager torch as shipped, and the norms' share of a
    decode step, are given beside."""
    d = study_rows(df, "norms", "speed")
    if d.empty:
        return [unmeasured("norm speed records")]
    ratios = _speed_ratios(d)
    if not ratios:
        return [unmeasured("LayerNorm timings")]
    eager = "; ".join(f"{b} as shipped (eager): {math.exp(sum(map(math.log, r)) / len(r)):.2f}x"
                      for b, (r, fused) in ratios.items() if not fused)
    share = study_rows(df, "norms", "share")
    share_text = ("; the norms take " + ", ".join(f"{100 * r.m_norm_share:.1f}% ({r.p_norm})"
                                                   for r in share.itertuples()) + f" of a {share['variant'].iloc[0]} "
                  "decode step on eager torch") if not share.empty else ""
    rows = int(d["p_rows"].iloc[0])
    widths = ", ".join(str(int(w)) for w in sorted(d["p_width"].unique()))
    out = []
    for backend, (values, fused) in ratios.items():
        if not fused:
            continue
        logs = [math.log(v) for v in values]
        mean, low, high = mean_interval(logs)
        out.append(Verdict(judge_interval(math.exp(low), math.exp(high), RMS_FASTER) if len(logs) > 1 else FAILS,
                           f"{backend} (fused): RMSNorm {math.exp(mean):.2f}x LayerNorm's speed (geometric mean over "
                           f"widths){'; ' + eager if eager else ''}{share_text}",
                           model=f"one norm layer of {rows} rows at widths {widths}, fastest rounds",
                           n=len(logs), interval=(math.exp(low), math.exp(high)), unit="x LayerNorm's speed"))
    if not out:
        return [not_testable(eager or "no fused engine ran", "RMSNorm's advantage shows where the norm runs as one "
                             "fused kernel: run an engine that fuses ops (torch-compile, onnxruntime)")]
    return out


CLAIMS = (
    Claim("pre-ln", "Pre-LN trains more stably than Post-LN without warm-up.", "norms", preln_stable),
    Claim("post-ln-warmup", "Post-LN needs a learning-rate warm-up.", "norms", postln_warmup),
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
    plain = stab[stab["p_warmup"] == 0] if not stab.empty else stab
    if not plain.empty and {"post_ln", "pre_ln"} <= set(plain["p_norm"]):
        by = plain.groupby("p_norm")[["failed", "runs"]].sum()
        pre = by.loc["pre_ln", "failed"] / by.loc["pre_ln", "runs"]
        post = by.loc["post_ln", "failed"] / by.loc["post_ln", "runs"]
        out.append(Gate("stability", "Pre-LN failure rate <= Post-LN's (no warm-up)", f"{pre:.2f} vs {post:.2f}",
                        "Pre-LN <= Post-LN", bool(pre <= post)))
    return out
