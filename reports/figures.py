"""Seaborn figures of the report, returned as base64 PNG so the page is self-contained. Units on every axis."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display needed, before pyplot is imported
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd
import seaborn as sns

from . import analysis
from .analysis import TIME

CACHE_LABELS = {"raw": "KV cache (raw)", "none": "no cache (recompute)"}


def to_png_base64(fig: plt.Figure) -> str:
    """Encode a matplotlib figure as base64 PNG and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _length_axis(ax: plt.Axes, lengths: list[int]) -> None:
    """A log x axis with plain labels at the measured lengths (no overlapping powers of ten)."""
    ticks = sorted({int(v) for v in lengths})
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.tick_params(axis="x", labelrotation=45 if len(ticks) > 6 else 0)


def _facet_grid(n_panels: int, height: float) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of up to three panels a row; returns the first `n_panels` axes (the rest hidden)."""
    cols = min(3, max(1, n_panels))
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def decode_scaling(df: pd.DataFrame) -> str | None:
    """Log-log total decode time vs tokens decoded, per cache mode, with the fitted slopes in the legend."""
    d = analysis.decode_rows(df)
    if d.empty:
        return None
    fits = analysis.slopes(df)
    d = d.copy()
    d["panel"] = d["variant"] + " · " + d["backend"] + " · B" + d["p_batch"].astype(str) + " · " + d["machine"]
    fits["panel"] = fits["variant"] + " · " + fits["backend"] + " · B" + fits["p_batch"].astype(str) + " · " \
        + fits["machine"]
    d["mode"] = d["p_cache"].map(CACHE_LABELS)
    panels = sorted(d["panel"].unique())
    fig, panel_axes = _facet_grid(len(panels), height=3.8)
    for ax, panel in zip(panel_axes, panels, strict=True):
        sub = d[d["panel"] == panel]
        sns.lineplot(data=sub, x="p_decode_tokens", y=TIME, hue="mode", marker="o", ax=ax,
                     hue_order=[v for v in CACHE_LABELS.values() if v in set(sub["mode"])])
        ax.set(xscale="log", yscale="log", xlabel="tokens decoded T (tokens, log scale)",
               ylabel="total decode time, fastest round (s, log scale)", title=panel)
        _length_axis(ax, sub["p_decode_tokens"].tolist())
        handles, labels = ax.get_legend_handles_labels()
        new_labels = []
        for label in labels:
            cache = next(k for k, v in CACHE_LABELS.items() if v == label)
            fit = fits[(fits["panel"] == panel) & (fits["p_cache"] == cache)]
            slope = fit["slope"].iloc[0] if len(fit) else float("nan")
            new_labels.append(f"{label}: slope {slope:.2f}" if slope == slope else f"{label}: one length")
        ax.legend(handles, new_labels, fontsize=8)
    fig.tight_layout()
    return to_png_base64(fig)


def latency_vs_position(df: pd.DataFrame) -> str | None:
    """Per-token latency at traced positions of the longest run of each variant."""
    lat = analysis.latency_rows(df)
    if lat.empty:
        return None
    longest = lat.groupby(["machine", "variant", "backend", "batch", "cache"])["decode_tokens"].transform("max")
    lat = lat[lat["decode_tokens"] == longest].copy()
    lat["latency_ms"] = lat["latency_s"] * 1e3
    lat["mode"] = lat["cache"].map(CACHE_LABELS)
    lat["panel"] = lat["variant"] + " · " + lat["backend"] + " · B" + lat["batch"].astype(str) + " · " + lat["machine"]
    panels = sorted(lat["panel"].unique())
    fig, panel_axes = _facet_grid(len(panels), height=3.6)
    for ax, panel in zip(panel_axes, panels, strict=True):
        sns.lineplot(data=lat[lat["panel"] == panel], x="position", y="latency_ms", hue="mode", marker="o", ax=ax)
        ax.set(xlabel="position of the new token (tokens)", ylabel="latency of one decode step (ms)", title=panel)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    return to_png_base64(fig)


def roofline(df: pd.DataFrame) -> str | None:
    """Cached decode tokens/s against the bandwidth bound (weights + KV cache read per token)."""
    d = analysis.decode_rows(df)
    if d.empty:
        return None
    d = d[d["p_cache"] == "raw"].copy()
    if d.empty:
        return None
    d["label"] = d["variant"] + " B" + d["p_batch"].astype(str) + " · " + d["backend"] + " · " + d["machine"]
    long = pd.concat([
        d.assign(kind="measured", tps=d["tokens_per_s"]),
        d.assign(kind="bandwidth bound (measured ceiling)", tps=d["bound_tokens_per_s"]),
    ])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.lineplot(data=long, x="p_decode_tokens", y="tps", hue="label", style="kind", marker="o", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="tokens decoded T (tokens, log scale)",
           ylabel="decode throughput (tokens/s, log scale)", title="Cached decode vs the roofline bound")
    _length_axis(ax, long["p_decode_tokens"].tolist())
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return to_png_base64(fig)


def backends(df: pd.DataFrame) -> str | None:
    """Decode tokens/s vs length for every backend, per variant and cache mode."""
    d = analysis.decode_rows(df)
    if d.empty or d["backend"].nunique() < 2:
        return None
    multi = d.groupby(["machine", "variant", "p_cache", "p_batch"])["backend"].transform("nunique") > 1
    d = d[multi].copy()
    if d.empty:
        return None
    d["panel"] = (d["variant"] + " · " + d["p_cache"].map(CACHE_LABELS) + " · B" + d["p_batch"].astype(str)
                  + " · " + d["machine"])
    panels = sorted(d["panel"].unique())
    fig, panel_axes = _facet_grid(len(panels), height=3.6)
    for ax, panel in zip(panel_axes, panels, strict=True):
        sub = d[d["panel"] == panel]
        sns.lineplot(data=sub, x="p_decode_tokens", y="tokens_per_s", hue="backend", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="tokens decoded T (tokens, log scale)",
               ylabel="decode throughput (tokens/s, log scale)", title=panel)
        _length_axis(ax, sub["p_decode_tokens"].tolist())
    fig.tight_layout()
    return to_png_base64(fig)


def peers(df: pd.DataFrame) -> str | None:
    """Tokens/s of ours and transformers' generate on the same weights."""
    p = analysis.peers(df)
    if p.empty:
        return None
    long = pd.concat([
        p.assign(impl="archbench", tps=p["ours_tokens_per_s"]),
        p.assign(impl="transformers generate", tps=p["transformers_tokens_per_s"]),
    ])
    long["case"] = (long["variant"] + " · " + long["p_cache"].map(CACHE_LABELS) + " · T"
                    + long["p_decode_tokens"].astype(str) + " · " + long["machine"])
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * long["case"].nunique() * 2))
    sns.barplot(data=long, y="case", x="tps", hue="impl", ax=ax, orient="h")
    ax.set(xlabel="generate throughput, prefill included (tokens/s)", ylabel="", title="archbench vs transformers")
    return to_png_base64(fig)


def kv_bytes(df: pd.DataFrame) -> str | None:
    """Bytes per token of each cache kind, with the compression against raw fp16 on each bar."""
    cap = analysis.kv_capacity(df)
    if cap.empty:
        return None
    variant = "gpt2-small" if "gpt2-small" in set(cap["variant"]) else cap["variant"].iloc[0]
    d = cap[cap["variant"] == variant].drop_duplicates("kind")
    fp16 = float(d[d["kind"] == "raw-fp16"]["bytes_per_token"].iloc[0]) if (d["kind"] == "raw-fp16").any() else None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.barplot(data=d, x="kind", y="bytes_per_token", ax=ax, color="#4C72B0")
    for i, r in enumerate(d.itertuples()):
        if fp16:
            ax.text(i, r.bytes_per_token, f"{fp16 / r.bytes_per_token:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="cache kind", ylabel="KV cache per token (bytes, batch 1)",
           title=f"{variant}: bytes per token (labels: compression vs raw fp16)")
    return to_png_base64(fig)


def kv_accuracy_vs_bytes(df: pd.DataFrame) -> str | None:
    """KL divergence and bits-per-byte delta against bytes per token, per quantizer family."""
    d = analysis.kv_accuracy(df)
    if d.empty:
        return None
    d = d[~d["p_cache"].isin(["raw-fp32"])]
    several = d["variant"].nunique() > 1  # the reference model and a checkpoint: one line style each
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    for ax, metric, label in ((axes[0], "m_kl_mean_nats", "mean KL vs raw fp32 cache (nats/token)"),
                              (axes[1], "m_bpb_delta", "bits-per-byte change vs raw fp32 cache (bits/byte)")):
        sns.lineplot(data=d, x="m_bytes_per_token", y=metric, hue="family", style="variant" if several else None,
                     marker="o", ax=ax, sort=True)
        for r in d.itertuples():
            ax.annotate(r.p_cache, (r.m_bytes_per_token, getattr(r, metric)), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set(xscale="log", xlabel="KV cache per token (bytes, log scale)", ylabel=label)
    fig.suptitle(f"Accuracy of quantized caches ({', '.join(d['variant'].unique())})")
    fig.tight_layout()
    return to_png_base64(fig)


def kv_layer_error(df: pd.DataFrame) -> str | None:
    """Relative error of each layer's attention output against the raw cache."""
    d = analysis.kv_accuracy(df)
    if d.empty:
        return None
    rows = [{"kind": r.p_cache, "variant": r.variant, "layer": i, "error": e} for r in d.itertuples()
            if not r.p_cache.startswith("raw-fp32") for i, e in enumerate(r.m_layer_rel_error)]
    if not rows:
        return None
    rows = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    style = "variant" if rows["variant"].nunique() > 1 else None
    sns.lineplot(data=rows, x="layer", y="error", hue="kind", style=style, marker="o", ax=ax)
    ax.set(xlabel="layer (index)", ylabel="relative error of attention output (|a - a_raw| / |a_raw|)",
           yscale="log", title="Per-layer attention error against the raw fp32 cache")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    return to_png_base64(fig)


def kv_distortion(df: pd.DataFrame) -> str | None:
    """Measured MSE of unit vectors by bits against the paper's figures and its bounds."""
    if df.empty or "p_phase" not in df:
        return None
    d = df[(df["study"] == "kv_memory") & (df["p_phase"] == "quantize")]
    if d.empty:
        return None
    d = d.sort_values("p_bits")
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(d["p_bits"], d["m_relative_mse"], "o-", label="measured (d = 64)")
    ax.plot(d["p_bits"], d["m_paper_mse"], "s--", label="paper")
    ax.fill_between(d["p_bits"], d["m_lower_bound"], d["m_upper_bound"], alpha=0.15,
                    label="bounds 4^-b .. 2.72 x 4^-b")
    ax.set(yscale="log", xlabel="bits per coordinate (bits)", ylabel="E|x - x̂|² for unit x (log scale)",
           title="TurboQuant distortion")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return to_png_base64(fig)


def kv_bytes_vs_length(df: pd.DataFrame) -> str | None:
    """Cache size against context length (exact bytes per token times length), raw vs quantized."""
    cap = analysis.kv_capacity(df)
    if cap.empty:
        return None
    variant = "gpt2-small" if "gpt2-small" in set(cap["variant"]) else cap["variant"].iloc[0]
    d = cap[cap["variant"] == variant].drop_duplicates("kind")
    lengths = [2**i for i in range(8, 17)]
    rows = [{"kind": r.kind, "tokens": t, "MiB": r.bytes_per_token * t / 2**20}
            for r in d.itertuples() for t in lengths]
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=pd.DataFrame(rows), x="tokens", y="MiB", hue="kind", marker="o", ax=ax)
    weights = float(df[(df["study"] == "kv_memory") & (df["p_phase"] == "capacity") & (df["variant"] == variant)]
                    ["m_weight_bytes_fp16"].iloc[0]) / 2**20
    ax.axhline(weights, color="grey", linestyle=":", label="weights (fp16)")
    ax.set(xscale="log", yscale="log", xlabel="context length (tokens, log scale)",
           ylabel="KV cache size, batch 1 (MiB, log scale)", title=f"{variant}: cache size vs length")
    ax.legend(fontsize=8)
    _length_axis(ax, lengths)
    return to_png_base64(fig)


def kv_peak_memory(df: pd.DataFrame) -> str | None:
    """Measured peak memory of a filled cache against the exact bytes it holds, per kind and length."""
    d = analysis.kv_peak(df)
    if d.empty:
        return None
    d = d.copy()
    d["panel"] = d["variant"] + " · " + d["backend"] + " · B" + d["p_batch"].astype(str) + " · " + d["machine"]
    panels = sorted(d["panel"].unique())
    fig, axes = _facet_grid(len(panels), 3.9)
    for ax, panel in zip(axes, panels, strict=True):
        p = d[d["panel"] == panel]
        measure = "peak RSS growth" if (p["p_phase"] == "rss").all() else "CUDA allocator peak"
        for kind, g in p.groupby("p_cache"):
            g = g.sort_values("p_tokens")
            line = ax.plot(g["p_tokens"], g["m_peak_delta_bytes"] / 2**30, marker="o", label=f"{kind}: {measure}")
            ax.plot(g["p_tokens"], g["m_kv_bytes"] / 2**30, ls=":", color=line[0].get_color(),
                    label=f"{kind}: exact bytes held")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _length_axis(ax, list(p["p_tokens"]))
        ax.set(xlabel="tokens in the cache", ylabel="memory (GiB)", title=panel)
        ax.legend(fontsize=7)
    return to_png_base64(fig)


def int8_heatmap(df: pd.DataFrame) -> str | None:
    """Mean KL against the same backend's fp32 model: scheme (rows) x backend and norm policy (columns)."""
    d = analysis.int8(df)
    if d.empty:
        return None
    d = d[d["p_scheme"] != "fp32"].copy()
    multi = d["machine"].nunique() > 1
    d["column"] = (d["machine"] + " · " if multi else "") + d["backend"] + " · norms " + d["p_norms"]
    grid = d.pivot_table(index="p_scheme", columns="column", values="m_kl_mean_nats", aggfunc="first")
    fig, ax = plt.subplots(figsize=(1.6 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    sns.heatmap(grid, annot=True, fmt=".2g", cmap="rocket_r", ax=ax, linewidths=0.5,
                cbar_kws={"label": "mean KL vs the backend's fp32 (nats/token)"})
    ax.set(xlabel="backend · norm policy", ylabel="INT8 scheme", title="Accuracy cost of INT8 (blank: not applicable)")
    ax.tick_params(axis="x", labelrotation=30)
    return to_png_base64(fig)


def int8_size_speed(df: pd.DataFrame) -> str | None:
    """Model bytes and decode tokens/s per scheme and backend (norms kept)."""
    d = analysis.int8(df)
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


def int8_sensitivity(df: pd.DataFrame) -> str | None:
    """KL against fp32 when one module alone is quantized, per module."""
    d = analysis.int8_sensitivity(df)
    if d.empty:
        return None
    d = d.copy()
    fig, ax = plt.subplots(figsize=(max(7, 0.32 * len(d) + 2), 4))
    sns.barplot(data=d, x="p_module", y="m_kl_mean_nats", hue="p_kind", dodge=False, ax=ax)
    ax.set_yscale("log")
    ax.set(xlabel="module quantized alone", ylabel="mean KL vs fp32 (nats/token, log)",
           title=f"Per-layer sensitivity ({d['p_scheme'].iloc[0]} linears; norms fake-quantized)")
    ax.tick_params(axis="x", labelrotation=90)
    return to_png_base64(fig)


def lora_variance(df: pd.DataFrame) -> str | None:
    """Variance of the scaled update gamma * B A against rank, LoRA vs rsLoRA, log-log."""
    d = analysis.lora_variance(df)
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (machine, scaling), g in d.groupby(["machine", "scaling"]):
        label = f"{scaling} (slope {g['slope'].iloc[0]:.2f})" + (f" · {machine}" if d["machine"].nunique() > 1 else "")
        ax.plot(g["rank"], g["variance"], "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="rank r", ylabel="variance of γ·BA entries (log)",
           title="The scaled update vs rank (A, B standard normal)")
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.legend(fontsize=8)
    return to_png_base64(fig)


def lora_finetune(df: pd.DataFrame) -> str | None:
    """Fine-tuning vs rank: held-out loss after, final training loss, adapter gradient norm."""
    d = analysis.arch_rows(df, "lora", "finetune")
    if d.empty:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, metric, label in ((axes[0], "m_eval_bpb_after", "held-out loss after (bits/byte)"),
                              (axes[1], "m_final_train_bpb", "final training loss (bits/byte)"),
                              (axes[2], "m_mean_grad_norm", "mean adapter gradient norm (L2, log)")):
        sns.lineplot(data=d, x="p_rank", y=metric, hue="p_scaling", style="machine" if d["machine"].nunique() > 1
                     else None, marker="o", ax=ax)
        ax.set(xscale="log", xlabel="rank r (log)", ylabel=label)
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[2].set_yscale("log")
    before = d["m_eval_bpb_before"].iloc[0]
    axes[0].axhline(before, ls=":", color="grey", label="before fine-tuning")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Fine-tuning the reference model on a held-out package ({int(d['p_steps'].iloc[0])} steps, "
                 f"alpha {d['p_alpha'].iloc[0]:g}, lr {d['p_lr'].iloc[0]:g})")
    fig.tight_layout()
    return to_png_base64(fig)


def position_extrapolation(df: pd.DataFrame) -> str | None:
    """Held-out loss at the trained context and beyond it, per positional scheme."""
    d = analysis.arch_rows(df, "positions", "extrapolation")
    if d.empty:
        return None
    rows = []
    for r in d.itertuples():
        for length, m in r.m_by_length.items():
            if "error" in m:
                continue
            rows.append({"scheme": r.p_pos, "length": int(length), "all positions": m["bits_per_byte"],
                         "positions beyond the trained context": m["bits_per_byte_beyond_train_len"]})
    if not rows:
        return None
    long = pd.DataFrame(rows).melt(["scheme", "length"], var_name="measured over", value_name="bpb").dropna()
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="length", y="bpb", hue="scheme", style="measured over", marker="o", ax=ax)
    _length_axis(ax, list(long["length"]))
    ax.set(xscale="log", xlabel="evaluated context (tokens, log)", ylabel="held-out loss (bits/byte)",
           title=f"Trained at {int(d['p_train_len'].iloc[0])} tokens (learned: no positions past its table)")
    ax.set_xticks(sorted(long["length"].unique()))
    return to_png_base64(fig)


def norm_gradients(df: pd.DataFrame) -> str | None:
    """Per-layer MLP gradient norms at initialisation: one panel per init and depth, one line per placement."""
    d = analysis.arch_rows(df, "norms", "gradients")
    if d.empty:
        return None
    d = d[d["machine"] == d["machine"].iloc[0]]
    panels = sorted({(r.p_init, int(r.p_depth)) for r in d.itertuples()})
    fig, axes = _facet_grid(len(panels), 3.6)
    for ax, (init, depth) in zip(axes, panels, strict=True):
        for r in d[(d["p_init"] == init) & (d["p_depth"] == depth)].itertuples():
            ax.plot(range(1, depth + 1), r.m_mlp_grad_norm_by_layer, "o-", ms=3, label=r.p_norm)
        ax.set(yscale="log", xlabel="layer (1 = nearest the input)", ylabel="MLP weight gradient norm (L2, log)",
               title=f"{init} init · {depth} layers")
        ax.legend(fontsize=7)
    return to_png_base64(fig)


def norm_stability(df: pd.DataFrame) -> str | None:
    """Training curves at a high learning rate without warm-up, per placement and seed."""
    d = analysis.arch_rows(df, "norms", "stability")
    if d.empty:
        return None
    d = d[d["machine"] == d["machine"].iloc[0]]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    colors = dict(zip(sorted(d["p_norm"].unique()), sns.color_palette(), strict=False))
    for r in d.itertuples():
        curve = [v if v is not None else float("nan") for v in r.m_train_bpb_curve]
        ax.plot(range(1, len(curve) + 1), curve, color=colors[r.p_norm], alpha=0.7,
                label=r.p_norm if r.p_seed == d[d["p_norm"] == r.p_norm]["p_seed"].min() else None)
    ax.axhline(d["m_unigram_bpb"].iloc[0], ls=":", color="grey", label="unigram (byte frequencies)")
    ax.set(xlabel="step", ylabel="training loss (bits/byte)",
           title=f"lr {d['p_lr'].iloc[0]:g}, no warm-up, no clipping; one line per seed")
    ax.legend(fontsize=8)
    return to_png_base64(fig)


def norm_speed(df: pd.DataFrame) -> str | None:
    """Norm forward time against width, per implementation, one panel per backend."""
    d = analysis.arch_rows(df, "norms", "speed")
    if d.empty:
        return None
    d = d.copy()
    d["panel"] = d["backend"] + " · " + d["machine"]
    d["us"] = d[TIME] * 1e6
    panels = sorted(d["panel"].unique())
    fig, axes = _facet_grid(len(panels), 3.8)
    for ax, panel in zip(axes, panels, strict=True):
        sns.lineplot(data=d[d["panel"] == panel], x="p_width", y="us", hue="p_impl", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="width d (log)", ylabel="forward time (µs, log)",
               title=f"{panel} ({int(d['p_rows'].iloc[0])} rows)")
        _length_axis(ax, list(d["p_width"]))
    return to_png_base64(fig)
