"""The INT8 study's judge half: the article's claims in their parts, and the regression gates.

- "INT8 works only if LayerNorm stays in full precision; quantizing it spoils the output": about the
  outlier features of large models (LLM.int8(): |x| >= 6 in some input dimensions). Judged only on a
  model that has them; on one without, the claim cannot show itself. Where it can: the perplexity
  change of quantizing the norms on top of our W8A8, per held-out window, past +10%?
- "INT8 cuts model memory about 4x": the quantized layers' bytes against fp32, exactly (>= 3.5x).
- "...and speeds up inference": the fastest INT8 configuration's cached decode against the same
  engine's fp32 model, from paired rounds (the fp32 model decodes the same steps just before each
  timed int8 round, so a slow patch of a shared machine slows both; records without them: the two
  records' rounds, unpaired); with k configurations to pick from, each interval at 1 - 0.05/k
  (Bonferroni), so picking the fastest does not make a lucky one look faster than it is.

Gates, all machine-independent: KL against the backend's fp32 at most 25% (+1e-4) above the
baseline's per backend, scheme and policy; the quantized layers at least 3.5x smaller than fp32;
quantizing the norms no better than keeping them, where it was not in the baseline.
"""

from __future__ import annotations

import math

import pandas as pd

from models.int8 import OUTLIER_THRESHOLD
from reports.gates import Gate, GateContext, kl_gate
from reports.page import text_or
from reports.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Claim,
    Verdict,
    judge_interval,
    learned_something,
    log_ratio_interval,
    mean_interval,
    not_testable,
    unmeasured,
)

from .report import int8, norm_effect, paired_log_ratios

INT8_LAYER_SIZE_MIN = 3.5  # "about 4x" (int8 weights plus their scales against fp32)
SPOILS_PPL_PCT = 10.0  # quantizing the norms "spoils the output": perplexity up by more than 10%
NORM_SCHEME = "w8a8"  # ours, on eager torch: the scheme the norm policy is judged on


def _model(rows: pd.DataFrame, variant: str) -> str:
    return text_or(rows["p_model_description"].iloc[0] if "p_model_description" in rows else None, variant)


def needs_norms(df: pd.DataFrame) -> list[Verdict]:
    """On each model with outlier features: quantizing the norms (on W8A8) raises perplexity by > 10%?"""
    d = int8(df)
    if d.empty:
        return [unmeasured("INT8 records")]
    out = []
    for variant, part in d.groupby("variant", sort=False):
        model = _model(part, str(variant))
        if "m_max_abs_linear_input" not in part or part["m_max_abs_linear_input"].isna().all():
            out.append(Verdict(INCONCLUSIVE, "the records predate the outlier count this claim needs", model=model))
            continue
        fp32 = part[part["p_scheme"] == "fp32"]
        if not fp32.empty and "m_unigram_bpb" in fp32:
            reason = learned_something({str(variant): (float(fp32["m_bits_per_byte"].min()),
                                                       float(fp32["m_unigram_bpb"].iloc[0]))})
            if reason:
                out.append(not_testable("the model learned too little for its activations to matter", reason, model))
                continue
        peak, columns = float(part["m_max_abs_linear_input"].max()), int(part["m_outlier_columns"].max())
        if columns == 0:
            out.append(not_testable(
                f"no activation entering a projection reaches |x| >= {OUTLIER_THRESHOLD:g} (largest {peak:.2f})",
                "the claim is about the outlier features of large models (LLM.int8(): they emerge around 6.7B "
                "parameters); run with --weights on such a checkpoint", model))
            continue
        pair = part[(part["p_scheme"] == NORM_SCHEME) & (part["device_type"] == "cpu")]
        pair = pair.drop_duplicates("p_norms").set_index("p_norms")
        if not {"keep", "quantize"} <= set(pair.index):
            out.append(unmeasured(f"{NORM_SCHEME} with both norm policies on {variant}"))
            continue
        keep, quant = pair.loc["keep"], pair.loc["quantize"]
        deltas = [q - k for q, k in zip(quant["m_window_nats"], keep["m_window_nats"], strict=True)]
        mean, low, high = mean_interval(deltas)
        to_pct = lambda nats: (math.exp(nats) - 1) * 100  # noqa: E731
        out.append(Verdict(judge_interval(to_pct(low), to_pct(high), SPOILS_PPL_PCT),
                           f"{columns} outlier columns (|x| up to {peak:.1f}); quantizing the norms on "
                           f"{NORM_SCHEME} changes perplexity by {to_pct(mean):+.2f}%; spoils: past "
                           f"+{SPOILS_PPL_PCT:g}%", model=model, n=len(deltas), interval=(to_pct(low), to_pct(high)),
                           unit="% perplexity"))
    return out


def memory(df: pd.DataFrame) -> Verdict:
    """The quantized layers (int8 weights and scales) against the same layers in fp32: >= 3.5x smaller?"""
    d = int8(df)
    if d.empty:
        return unmeasured("INT8 records")
    d = d[(d["p_scheme"] != "fp32") & (d["p_norms"] == "keep")]
    size = d["layers_size_vs_fp32"].dropna()
    if size.empty:
        return unmeasured("INT8 layer sizes")
    whole = d["size_vs_fp32"].dropna()
    return Verdict(HOLDS if size.median() >= INT8_LAYER_SIZE_MIN else FAILS,
                   f"quantized layers {size.median():.2f}x smaller than fp32 (median over {len(size)} schemes and "
                   f"engines; range {size.min():.2f}-{size.max():.2f}x); whole model {whole.median():.2f}x "
                   "(embeddings and norms stay fp32); about 4x: at least 3.5x",
                   model=_model(d, str(d["variant"].iloc[0])) + ", bytes counted exactly")


def _speed_ratio(r, ref, confidence: float) -> tuple[float, float, float]:
    """fp32 time / int8 time with its interval: from paired rounds (a slow patch of the machine slows both
    sides alike) where the record has them, else from the two records' rounds, unpaired."""
    logs = paired_log_ratios(getattr(r, "m_fp32_paired_seconds", None), r.time_data)
    if logs is None:
        return log_ratio_interval(ref.time_data, r.time_data, confidence)
    log_ratio, low, high = mean_interval(logs, confidence)
    return math.exp(log_ratio), math.exp(low), math.exp(high)


def speed(df: pd.DataFrame) -> Verdict:
    """The fastest INT8 configuration's cached decode against its engine's fp32 model: faster? Picking the
    fastest of k configurations favours the one whose rounds happened to run fast, so each configuration's
    interval is taken at 1 - 0.05/k (Bonferroni): together they hold at 95%, the fastest's included."""
    d = int8(df)
    if d.empty or "time_data" not in d:
        return unmeasured("INT8 records")
    d = d[d["p_norms"] == "keep"]
    base = {(r.machine, r.backend): r for r in d[d["p_scheme"] == "fp32"].itertuples()}
    pairs = [(r, base.get((r.machine, r.backend))) for r in d[d["p_scheme"] != "fp32"].itertuples()]
    pairs = [(r, ref) for r, ref in pairs
             if ref is not None and isinstance(r.time_data, list) and isinstance(ref.time_data, list)]
    if not pairs:
        return unmeasured("INT8 decode timings beside their fp32 model")
    confidence = 1 - 0.05 / len(pairs)
    # fp32 time / int8 time: > 1 is faster; the fastest by its ratio (the intervals cover all k at once)
    r, (ratio, low, high) = max(((r, _speed_ratio(r, ref, confidence)) for r, ref in pairs), key=lambda p: p[1][0])
    paired = paired_log_ratios(getattr(r, "m_fp32_paired_seconds", None), r.time_data) is not None
    slowest = d[d["p_scheme"] != "fp32"]["speed_vs_fp32"].min()
    return Verdict(judge_interval(low, high, 1.0),
                   f"fastest: {r.p_scheme} on {r.backend} at {ratio:.2f}x its fp32 model's tokens/s (slowest "
                   f"configuration {slowest:.2f}x; the fastest of {len(pairs)} configurations, so each interval is "
                   f"taken at {confidence:.2%}: 95% for all together; "
                   + ("paired rounds: fp32 timed before each int8 round)" if paired else
                      "unpaired rounds: these records predate paired fp32 rounds)"),
                   model=f"{_model(d, str(r.variant))}, cached greedy decode of {int(r.p_decode_tokens)} tokens",
                   n=len(r.time_data), interval=(low, high), unit="x fp32")


CLAIMS = (
    Claim("int8-norms", "INT8 works only if LayerNorm stays in full precision; quantizing it spoils the output.",
          "int8", needs_norms),
    Claim("int8-memory", "INT8 cuts model memory about 4x.", "int8", memory),
    Claim("int8-speed", "INT8 speeds up inference.", "int8", speed),
)


def gates(ctx: GateContext) -> list[Gate]:
    """Accuracy per scheme against the baseline, layer sizes, and the norm policy's direction."""
    out: list[Gate] = []
    base_df, cur_df = ctx.fullest_base, ctx.cur_df
    base, cur = int8(base_df), int8(cur_df)
    if base.empty or cur.empty:
        return out
    key = ["variant", "backend", "p_scheme", "p_norms"]
    index = cur.set_index(key)
    for r in base[base["p_scheme"] != "fp32"].itertuples():
        k = (r.variant, r.backend, r.p_scheme, r.p_norms)
        if k in index.index:
            out.append(kl_gate("int8 accuracy", " ".join(map(str, k)) + " KL", r.m_kl_mean_nats,
                               float(index.loc[k, "m_kl_mean_nats"])))
    sizes = cur[(cur["p_scheme"] != "fp32")]["layers_size_vs_fp32"].dropna()
    if not sizes.empty:
        out.append(Gate("int8 layer size", "quantized layers vs fp32 (smallest ratio)", f"{sizes.min():.2f}x",
                        f">= {INT8_LAYER_SIZE_MIN}x", bool(sizes.min() >= INT8_LAYER_SIZE_MIN)))
    effect, base_effect = norm_effect(cur_df), norm_effect(base_df)
    cols = {"m_kl_mean_nats_keep", "m_kl_mean_nats_quantize"}
    if cols <= set(effect.columns) and cols <= set(base_effect.columns):
        held = {(r.backend, r.p_scheme) for r in base_effect.itertuples()
                if r.m_kl_mean_nats_quantize >= r.m_kl_mean_nats_keep}
        for r in effect.dropna(subset=list(cols)).itertuples():
            if (r.backend, r.p_scheme) in held:
                out.append(Gate("int8 norm policy", f"{r.backend} {r.p_scheme}: KL quantize >= keep",
                                f"{r.m_kl_mean_nats_quantize:.3g} vs {r.m_kl_mean_nats_keep:.3g}", "quantize >= keep",
                                bool(r.m_kl_mean_nats_quantize >= r.m_kl_mean_nats_keep)))
    return out
