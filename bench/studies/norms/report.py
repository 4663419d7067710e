"""The norms study's report half: gradient norms at initialisation, stability, norm speed."""

from __future__ import annotations

import pandas as pd
import seaborn as sns

from reports.load import TIME
from reports.page import Section, Table, engine_caption, facet_grid, fmt, length_axis, study_rows, to_png_base64


def stability_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The stability runs, one per arm (placement, warm-up), learning rate and seed; `arm` names it."""
    d = study_rows(df, "norms", "stability")
    if d.empty:
        return d
    d["p_warmup"] = pd.to_numeric(d["p_warmup"], errors="coerce").fillna(0).astype(int) if "p_warmup" in d else 0
    d["arm"] = [f"{n} (warm-up {w})" if w else n for n, w in zip(d["p_norm"], d["p_warmup"], strict=True)]
    d["final"] = pd.to_numeric(d["m_final_train_bpb"], errors="coerce")
    d["val"] = pd.to_numeric(d["m_val_bpb"], errors="coerce")
    return d


def stability(df: pd.DataFrame) -> pd.DataFrame:
    """Per machine, arm and learning rate: runs, runs that failed, and the losses."""
    d = stability_rows(df)
    if d.empty:
        return d
    return (d.groupby(["machine", "arm", "p_norm", "p_warmup", "p_lr"], sort=False)
            .agg(runs=("p_seed", "count"), failed=("m_failed", "sum"), steps=("p_steps", "first"),
                 final_bpb_mean=("final", "mean"), final_bpb_max=("final", "max"), val_bpb_mean=("val", "mean"),
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
               title=f"{init} init · {depth} layers{engine_caption(d)}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png_base64(fig)


def fig_stability(df: pd.DataFrame) -> str | None:
    """Training curves per arm (placement, warm-up) and seed, one panel per learning rate."""
    d = stability_rows(df)
    if d.empty:
        return None
    d = d[d["machine"] == d["machine"].iloc[0]]
    lrs = sorted(d["p_lr"].unique())
    fig, axes = facet_grid(len(lrs), 4.0)
    colors = dict(zip(sorted(d["arm"].unique()), sns.color_palette(), strict=False))
    for ax, lr in zip(axes, lrs, strict=True):
        part = d[d["p_lr"] == lr]
        for arm, g in part.groupby("arm"):
            for i, r in enumerate(g.itertuples()):
                curve = [v if v is not None else float("nan") for v in r.m_train_bpb_curve]
                ax.plot(range(1, len(curve) + 1), curve, color=colors[arm], alpha=0.6, label=arm if i == 0 else None)
        ax.axhline(part["m_unigram_bpb"].iloc[0], ls=":", color="grey", label="unigram (byte frequencies)")
        ax.set(xlabel="training step", ylabel="training loss (bits/byte)",
               title=f"lr {lr:g}, no clipping; one line per seed{engine_caption(d)}")
        ax.legend(fontsize=7)
    fig.tight_layout()
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
            "Stability without clipping", ["machine", "arm", "lr", "steps", "runs (seeds)", "failed",
                                           "final training loss (mean)", "(worst)", "held-out (mean)", "unigram"],
            [[r.machine, r.arm, fmt(r.p_lr), fmt(int(r.steps)), fmt(int(r.runs)), fmt(int(r.failed)),
              fmt(r.final_bpb_mean), fmt(r.final_bpb_max), fmt(r.val_bpb_mean), fmt(r.unigram_bpb)]
             for r in stab.itertuples()]))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The norms study leaves its findings to the scoreboard and its section."""
    return []
