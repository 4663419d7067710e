"""The INT8 study's report half: frames (accuracy, size and speed per scheme, norm policy and backend; the
per-layer sensitivity), figures, its section and summary lines."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reports.load import TIME
from reports.page import Section, Table, engine_caption, fmt, fmt_bytes, study_rows, to_png_base64

from . import SCHEMES

# ---- frames -------------------------------------------------------------------------------------------


def paired_log_ratios(fp32_seconds: object, int8_seconds: object) -> list[float] | None:
    """log(fp32 time / int8 time) per timed round (> 0: int8 is faster), where the record timed its engine's
    fp32 model before each round (`fp32_paired_seconds`); None for records without them."""
    if not isinstance(fp32_seconds, list) or not isinstance(int8_seconds, list) or len(fp32_seconds) < 2 \
            or len(fp32_seconds) != len(int8_seconds):
        return None
    return [math.log(f / i) for f, i in zip(fp32_seconds, int8_seconds, strict=True)]


def int8(df: pd.DataFrame) -> pd.DataFrame:
    """INT8 rows (not the sensitivity sweep), with tokens/s, and the size ratio and speed-up against the
    same backend's fp32 model of the same run (from paired rounds where the record has them)."""
    d = study_rows(df, "int8")
    if d.empty:
        return d
    if "p_phase" in d:
        d = d[d["p_phase"].isna()].copy()
    if d.empty:
        return d
    d["tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / d[TIME]
    base = d[d["p_scheme"] == "fp32"].set_index(["machine", "backend"])
    keys = list(zip(d["machine"], d["backend"], strict=True))
    d["size_vs_fp32"] = [base["m_model_bytes"].get(k, float("nan")) / b for k, b in zip(keys, d["m_model_bytes"],
                                                                                      strict=True)]
    d["speed_vs_fp32"] = [t / base["tokens_per_s"].get(k, float("nan")) for k, t in zip(keys, d["tokens_per_s"],
                                                                                      strict=True)]
    if "m_fp32_paired_seconds" in d and "time_data" in d:  # paired rounds, where recorded, replace the above
        logs = [paired_log_ratios(f, t) for f, t in zip(d["m_fp32_paired_seconds"], d["time_data"], strict=True)]
        d["speed_vs_fp32"] = [math.exp(sum(x) / len(x)) if x else unpaired
                              for x, unpaired in zip(logs, d["speed_vs_fp32"], strict=True)]
    if "m_quantized_weights_bytes" in d:
        d["layers_size_vs_fp32"] = d["m_quantized_weights_fp32_bytes"] / d["m_quantized_weights_bytes"].where(
            d["m_quantized_weights_bytes"] > 0)
    else:
        d["layers_size_vs_fp32"] = float("nan")
    order = {s: i for i, s in enumerate(SCHEMES)}
    d["_order"] = d["p_scheme"].map(lambda s: order.get(s, len(order)))
    return d.sort_values(["machine", "backend", "_order", "p_norms"]).drop(columns="_order").reset_index(drop=True)


def norm_effect(df: pd.DataFrame) -> pd.DataFrame:
    """Per machine, backend and scheme: KL and bits-per-byte change with norms kept vs quantized, side by side."""
    d = int8(df)
    if d.empty:
        return d
    d = d[d["p_scheme"] != "fp32"]
    wide = d.pivot_table(index=["machine", "backend", "p_scheme"], columns="p_norms",
                         values=["m_kl_mean_nats", "m_bpb_delta", "m_top1_agreement"], aggfunc="first")
    wide.columns = [f"{metric}_{policy}" for metric, policy in wide.columns]
    return wide.reset_index()


def sensitivity(df: pd.DataFrame) -> pd.DataFrame:
    """The per-layer sweep: one module quantized at a time, its KL against fp32."""
    return study_rows(df, "int8", "sensitivity")


# ---- figures ------------------------------------------------------------------------------------------

def fig_heatmap(df: pd.DataFrame) -> str | None:
    """Mean KL against the same backend's fp32 model: scheme (rows) x backend and norm policy (columns)."""
    d = int8(df)
    if d.empty:
        return None
    d = d[d["p_scheme"] != "fp32"].copy()
    if d.empty:
        return None
    multi = d["machine"].nunique() > 1
    d["column"] = (d["machine"] + " · " if multi else "") + d["backend"] + " · norms " + d["p_norms"]
    grid = d.pivot_table(index="p_scheme", columns="column", values="m_kl_mean_nats", aggfunc="first")
    fig, ax = plt.subplots(figsize=(1.6 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    sns.heatmap(grid, annot=True, fmt=".2g", cmap="rocket_r", ax=ax, linewidths=0.5,
                cbar_kws={"label": "mean KL vs the backend's fp32 (nats/token)"})
    ax.set(xlabel="backend · norm policy", ylabel="INT8 scheme", title="Accuracy cost of INT8 (blank: not applicable)")
    ax.tick_params(axis="x", labelrotation=30)
    return to_png_base64(fig)


def fig_size_speed(df: pd.DataFrame) -> str | None:
    """Model bytes and decode tokens/s per scheme and backend (norms kept)."""
    d = int8(df)
    if d.empty:
        return None
    d = d[d["p_norms"] == "keep"].copy()
    d["model_mib"] = d["m_model_bytes"] / 2**20
    if d["machine"].nunique() > 1:
        d["backend"] = d["machine"] + " · " + d["backend"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    sns.barplot(data=d, x="p_scheme", y="model_mib", hue="backend", ax=axes[0])
    axes[0].set(xlabel="scheme", ylabel="model size (MiB)", title="Bytes held (norms kept)")
    sns.barplot(data=d, x="p_scheme", y="tokens_per_s", hue="backend", ax=axes[1])
    axes[1].set(xlabel="scheme", ylabel="cached decode (tokens/s, batch 1)", title="Decode speed (norms kept)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize=7)
    return to_png_base64(fig)


def fig_sensitivity(df: pd.DataFrame) -> str | None:
    """KL against fp32 when one module alone is quantized, per module."""
    d = sensitivity(df)
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 0.32 * len(d) + 2), 4))
    sns.barplot(data=d, x="p_module", y="m_kl_mean_nats", hue="p_kind", dodge=False, ax=ax)
    ax.set_yscale("log")
    ax.set(xlabel="module quantized alone", ylabel="mean KL vs fp32 (nats/token, log)",
           title=f"Per-layer sensitivity ({d['p_scheme'].iloc[0]} linears; norms fake-quantized){engine_caption(d)}")
    ax.tick_params(axis="x", labelrotation=90)
    return to_png_base64(fig)


# ---- section and summary ------------------------------------------------------------------------------

def section(df: pd.DataFrame) -> Section | None:
    """INT8: accuracy per scheme, norm policy and backend; size; speed; per-layer sensitivity."""
    d, sens = int8(df), sensitivity(df)
    if d.empty and sens.empty:
        return None
    out = Section("int8", "INT8: accuracy, size and speed, with norms kept or quantized",
                  "Each scheme on the trained reference model, against the same backend's fp32 model (and against "
                  "eager torch fp32 on the CPU). Schemes: " + "; ".join(f"{s.name}: {s.description}"
                                                                       for s in SCHEMES.values())
                  + ". Norm policy quantize: norm gain/bias rounded to int8 and the norm's input fake-quantized per "
                  "token (module transforms); LayerNormalization wrapped in Q/DQ (onnxruntime static).")
    out.add_figures(df, (
        ("Accuracy cost by scheme, backend and norm policy", fig_heatmap,
         "Mean KL divergence of the next-byte distribution against the backend's own fp32 model."),
        ("Size and speed", fig_size_speed,
         "Model bytes held (parameters, buffers, packed weights; embeddings stay fp32) and cached decode speed."),
        ("Per-layer sensitivity", fig_sensitivity,
         "One projection (W8A8) or one norm (fake-quantized) at a time; the rest stays fp32."),
    ))
    if not d.empty:
        out.tables.append(Table(
            "INT8 on the reference model",
            ["machine", "backend", "scheme", "norms", "bits per byte", "Δ bits per byte", "KL (nats)", "top-1",
             "max |Δ logit|", "KL vs torch fp32", "model bytes", "size vs fp32", "quantized layers vs fp32",
             "tokens/s", "speed vs fp32"],
            [[r.machine, r.backend, r.p_scheme, r.p_norms, f"{r.m_bits_per_byte:.4f}", f"{r.m_bpb_delta:+.4f}",
              fmt(r.m_kl_mean_nats), f"{100 * r.m_top1_agreement:.2f}%", fmt(r.m_max_abs_logit_delta),
              fmt(r.m_kl_vs_torch_fp32_nats), fmt_bytes(r.m_model_bytes), f"{r.size_vs_fp32:.2f}x",
              f"{r.layers_size_vs_fp32:.2f}x" if r.layers_size_vs_fp32 == r.layers_size_vs_fp32 else "–",
              fmt(r.tokens_per_s), f"{r.speed_vs_fp32:.2f}x"] for r in d.itertuples()]))
        effect = norm_effect(df)
        if {"m_kl_mean_nats_keep", "m_kl_mean_nats_quantize"} <= set(effect.columns):
            effect = effect.dropna(subset=["m_kl_mean_nats_keep", "m_kl_mean_nats_quantize"])
            out.tables.append(Table(
                "Norms kept vs quantized, side by side",
                ["machine", "backend", "scheme", "KL keep", "KL quantize", "quantize / keep", "Δ bpb keep",
                 "Δ bpb quantize"],
                [[r.machine, r.backend, r.p_scheme, fmt(r.m_kl_mean_nats_keep), fmt(r.m_kl_mean_nats_quantize),
                  f"{r.m_kl_mean_nats_quantize / r.m_kl_mean_nats_keep:.2f}x" if r.m_kl_mean_nats_keep > 0 else "–",
                  f"{r.m_bpb_delta_keep:+.4f}", f"{r.m_bpb_delta_quantize:+.4f}"] for r in effect.itertuples()]))
        out.notes.append(
            "Why int8 is or is not faster here: batch-1 decode streams every weight once per token, so int8 "
            "weights could cut the bytes read 4x, but only if the matmul reads int8 directly. Eager torch widens "
            "int8 to float (weight_only) or adds per-token quantize and rescale kernels (w8a8, llm_int8) around "
            "an int8 GEMM: on a small model more launched kernels cost more than the bytes saved. Runtimes "
            "with fused int8 kernels (onnxruntime's MatMulInteger / QDQ fusion) are where int8 can win.")
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The INT8 study leaves its findings to the scoreboard."""
    return []


def figures(df: pd.DataFrame) -> list:
    """Key figures for CI summaries and history: each scheme's KL against fp32 and its speed against fp32,
    per norm policy and engine."""
    from reports.summary import KeyFigure

    found = []
    d = int8(df)
    for r in d[d["p_scheme"] != "fp32"].itertuples() if not d.empty else []:
        where = f"{r.p_scheme}, norms {r.p_norms}, {r.variant}, {r.backend}"
        found.append(KeyFigure(f"int8 KL vs fp32 ({where})", float(r.m_kl_mean_nats), "nats", False, r.machine))
        found.append(KeyFigure(f"int8 tokens/s vs fp32 ({where})", float(r.speed_vs_fp32), "x", True, r.machine))
    return found
