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


def _facet_cols(n: int) -> int:
    return min(3, max(1, n))


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
    cols = _facet_cols(len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
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
            new_labels.append(f"{label}: slope {slope:.2f}")
        ax.legend(handles, new_labels, fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
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
    cols = _facet_cols(len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        sns.lineplot(data=lat[lat["panel"] == panel], x="position", y="latency_ms", hue="mode", marker="o", ax=ax)
        ax.set(xlabel="position of the new token (tokens)", ylabel="latency of one decode step (ms)", title=panel)
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
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
