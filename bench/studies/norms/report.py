"""The norms study's report half: gradient norms at initialisation, stability, norm speed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reports.load import TIME
from reports.page import Section, Table, facet_grid, fmt, length_axis, study_rows, to_png_base64


def stability(df: pd.DataFrame) -> pd.DataFrame:
    """Per machine and placement: runs, runs that failed, and the final loss of the others."""
    d = study_rows(df, "norms", "stability")
    if d.empty:
        return d
    d["final"] = pd.to_numeric(d["m_final_train_bpb"], errors="coerce")
    return (d.groupby(["machine", "p_norm"], sort=False)
            .agg(runs=("p_seed", "count"), failed=("m_failed", "sum"), lr=("p_lr", "first"),
                 steps=("p_steps", "first"), final_bpb_mean=("final", "mean"), final_bpb_max=("final", "max"),
                 unigram_bpb=("m_unigram_bpb", "first"))
            .reset_index())


def fig_gradients(df: pd.DataFrame) -> str | None:
    """Per-layer MLP gradient norms at initialisation: one panel per init and depth, one line per placement."""
    d = study_rows(df, "norms", "gradients")
    if d.empty:
        return None
    d = d[d["machine"] == d["machine"].iloc[0]]
    panels = sorted({(r.p_init, int(r.p_depth)) for r in d.itertuples()})
    fig, axes = facet_grid(len(panels), 3.6)
    for ax, (init, depth) in zip(axes, panels, strict=True):
        for r in d[(d["p_init"] == init) & (d["p_depth"] == depth)].itertuples():
            ax.plot(range(1, depth + 1), r.m_mlp_grad_norm_by_layer, "o-", ms=3, label=r.p_norm)
        ax.set(yscale="log", xlabel="layer (1 = nearest the input)", ylabel="MLP weight gradient norm (L2, log)",
               title=f"{init} init · {depth} layers")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png_base64(fig)


def fig_stability(df: pd.DataFrame) -> str | None:
    """Training curves at a high learning rate without warm-up, per placement and seed."""
    d = study_rows(df, "norms", "stability")
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


def fig_speed(df: pd.DataFrame) -> str | None:
    """Norm forward time against width, per implementation, one panel per backend."""
    d = study_rows(df, "norms", "speed")
    if d.empty:
        return None
    d["panel"] = d["backend"] + " · " + d["machine"]
    d["us"] = d[TIME] * 1e6
    panels = sorted(d["panel"].unique())
    fig, axes = facet_grid(len(panels), 3.8)
    for ax, panel in zip(axes, panels, strict=True):
        sns.lineplot(data=d[d["panel"] == panel], x="p_width", y="us", hue="p_impl", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="width d (log)", ylabel="forward time (µs, log)",
               title=f"{panel} ({int(d['p_rows'].iloc[0])} rows)")
        length_axis(ax, list(d["p_width"]))
    fig.tight_layout()
    return to_png_base64(fig)


def section(df: pd.DataFrame) -> Section | None:
    """Norm placement: gradients at init, stability, speed."""
    grads, stab = study_rows(df, "norms", "gradients"), stability(df)
    speed = study_rows(df, "norms", "speed")
    if grads.empty and stab.empty and speed.empty:
        return None
    out = Section("norms", "Norm placement: Post-LN, Pre-LN, Pre-RMSNorm",
                  "Gradient norms of each layer's MLP weights on one batch at initialisation (Xiong et al. "
                  "2020 use Xavier initialisation; GPT-2 uses N(0, 0.02)); training at a high learning rate "
                  "with no warm-up or clipping over several seeds; and the norm layers' own speed.")
    out.add_figures(df, (
        ("Gradient norms at initialisation", fig_gradients,
         "Xiong et al.: Post-LN's gradients grow toward the output, Pre-LN's shrink with depth."),
        ("Stability without warm-up", fig_stability, "A run fails when its loss becomes NaN or its "
         "held-out loss ends within 0.1 bits/byte of the byte-frequency (unigram) model."),
        ("Norm speed", fig_speed, "torch.nn.RMSNorm with eps=1e-5 (its default eps differs)."),
    ))
    if not grads.empty:
        out.tables.append(Table(
            "Last layer's gradient norm over the first layer's", ["machine", "init", "placement", "depth",
                                                                  "last / first", "last layer"],
            [[r.machine, r.p_init, r.p_norm, fmt(int(r.p_depth)), f"{r.m_last_over_first:.2f}",
              fmt(r.m_mlp_grad_norm_by_layer[-1])] for r in grads.itertuples()]))
    if not stab.empty:
        out.tables.append(Table(
            "Stability at a high learning rate", ["machine", "placement", "lr", "steps", "runs", "failed",
                                                  "final loss (mean)", "final loss (worst)", "unigram"],
            [[r.machine, r.p_norm, fmt(r.lr), fmt(int(r.steps)), fmt(int(r.runs)), fmt(int(r.failed)),
              fmt(r.final_bpb_mean), fmt(r.final_bpb_max), fmt(r.unigram_bpb)] for r in stab.itertuples()]))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The norms study leaves its findings to the scoreboard and its section."""
    return []
