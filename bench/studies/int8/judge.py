"""The INT8 study's judge half: its claims and its regression gates.

Gates, all machine-independent: KL against the backend's fp32 at most 25% (+1e-4) above the
baseline's per backend, scheme and policy; the quantized layers at least 3.5x smaller than fp32;
quantizing the norms no better than keeping them, where it was not in the baseline.
"""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext, kl_gate
from reports.verdicts import FAILS, HOLDS, MIXED, Claim, Verdict, unmeasured

from .report import int8, norm_effect

INT8_LAYER_SIZE_MIN = 3.5


def needs_norms(df: pd.DataFrame) -> Verdict:
    """Quantizing the norms must cost clearly more than keeping them: >= 0.01 bits/byte more in the median
    scheme holds; worse KL but by less is mixed; no worse does not hold."""
    effect = norm_effect(df)
    need = {"m_kl_mean_nats_keep", "m_kl_mean_nats_quantize", "m_bpb_delta_keep", "m_bpb_delta_quantize"}
    if effect.empty or not need <= set(effect.columns):
        return unmeasured("INT8 runs with both norm policies")
    effect = effect.dropna(subset=list(need))
    if effect.empty:
        return unmeasured("INT8 runs with both norm policies")
    kl_ratio = float((effect["m_kl_mean_nats_quantize"] / effect["m_kl_mean_nats_keep"]).median())
    extra = float((effect["m_bpb_delta_quantize"] - effect["m_bpb_delta_keep"]).median())
    text = (f"quantizing the norms multiplies the KL divergence by {kl_ratio:.2f} and adds {extra:+.4f} bits/byte "
            f"(medians over {len(effect)} scheme/backend pairs)")
    if extra >= 0.01:
        return Verdict(HOLDS, text)
    if kl_ratio > 1.0 and extra > 0:
        return Verdict(MIXED, text + ": measurably worse, but far from spoiling the output on this model")
    return Verdict(FAILS, text)


def size_speed(df: pd.DataFrame) -> Verdict:
    """Quantized layers >= 3.5x smaller than fp32 and some int8 configuration faster than its fp32 model."""
    d = int8(df)
    if d.empty:
        return unmeasured("INT8 records")
    d = d[(d["p_scheme"] != "fp32") & (d["p_norms"] == "keep")]
    size = d["layers_size_vs_fp32"].dropna()
    fastest = d.loc[d["speed_vs_fp32"].idxmax()] if d["speed_vs_fp32"].notna().any() else None
    parts = []
    if not size.empty:
        parts.append(f"quantized layers {size.median():.2f}x smaller than fp32 (median)")
    elif d["size_vs_fp32"].notna().any():  # results written before the layers were counted apart
        size = d["size_vs_fp32"].dropna()
        parts.append(f"whole model {size.median():.2f}x smaller than fp32 (embeddings stay fp32)")
    if fastest is not None:
        parts.append(f"fastest int8: {fastest['speed_vs_fp32']:.2f}x fp32 tokens/s ({fastest['backend']} "
                     f"{fastest['p_scheme']}); slowest {d['speed_vs_fp32'].min():.2f}x")
    smaller = not size.empty and size.median() >= INT8_LAYER_SIZE_MIN
    faster = fastest is not None and fastest["speed_vs_fp32"] > 1.05
    status = HOLDS if smaller and faster else (MIXED if smaller or faster else FAILS)
    return Verdict(status, "; ".join(parts) or "no sizes or speeds")


CLAIMS = (
    Claim("int8-norms", "INT8 works only if LayerNorm stays in full precision; quantizing it spoils the output.",
          "int8", needs_norms),
    Claim("int8-size-speed", "INT8 cuts model memory about 4x and speeds up inference.", "int8", size_speed),
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
