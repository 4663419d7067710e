"""The LoRA study's report half: the update's variance vs rank, fine-tuning vs rank, adapter overhead."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd
import seaborn as sns

from reports.load import TIME
from reports.page import Section, Table, fmt, study_rows, to_png_base64


def variance_long(df: pd.DataFrame) -> pd.DataFrame:
    """Long form of the variance study: one row per machine, scaling and rank."""
    d = study_rows(df, "lora", "variance")
    rows = [{"machine": r.machine, "scaling": r.p_scaling, "rank": rank, "variance": v, "slope": r.m_loglog_slope}
            for r in d.itertuples() for rank, v in zip(r.p_ranks, r.m_variance, strict=True)]
    return pd.DataFrame(rows)


def finetune_best(df: pd.DataFrame) -> pd.DataFrame:
    """The fine-tunes of each (machine, scaling, rank) at its best learning rate (the lowest held-out loss
    after, averaged over seeds): one row per seed, with `lr_tried` listing the rates it was chosen from."""
    d = study_rows(df, "lora", "finetune")
    if d.empty:
        return d
    if "p_seed" not in d:
        d["p_seed"] = 0
    parts = []
    for _, g in d.groupby(["machine", "p_scaling", "p_rank"], sort=False):
        means = g.groupby("p_lr")["m_eval_bpb_after"].mean()
        best = g[g["p_lr"] == means.idxmin()].copy()
        best["lr_tried"] = ", ".join(f"{v:g}" for v in sorted(means.index))
        parts.append(best)
    return pd.concat(parts, ignore_index=True).sort_values(["machine", "p_scaling", "p_rank", "p_seed"])


def fig_variance(df: pd.DataFrame) -> str | None:
    """Variance of the scaled update gamma * B A against rank, LoRA vs rsLoRA, log-log."""
    d = variance_long(df)
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (machine, scaling), g in d.groupby(["machine", "scaling"]):
        label = f"{scaling} (slope {g['slope'].iloc[0]:.2f})" + (f" · {machine}" if d["machine"].nunique() > 1 else "")
        ax.plot(g["rank"], g["variance"], "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="rank r (log)", ylabel="variance of γ·BA entries (log)",
           title="The scaled update vs rank (A, B standard normal)")
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.legend(fontsize=8)
    return to_png_base64(fig)


def fig_finetune(df: pd.DataFrame) -> str | None:
    """Fine-tuning vs rank at each arm's best learning rate: held-out loss after, final training loss, adapter
    gradient norm (mean over seeds, 95% band)."""
    d = finetune_best(df)
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
                 f"alpha {d['p_alpha'].iloc[0]:g}, each point at its best learning rate of {d['lr_tried'].iloc[0]})")
    fig.tight_layout()
    return to_png_base64(fig)


def _reading(fine: pd.DataFrame) -> str:
    """One honest sentence on what the fine-tune shows at the largest and smallest ranks."""
    parts = []
    for scaling, g in fine.groupby("p_scaling"):
        g = g.groupby("p_rank")[["m_eval_bpb_after", "m_mean_grad_norm"]].mean().reset_index().sort_values("p_rank")
        lo, hi = g.iloc[0], g.iloc[-1]
        parts.append(f"{scaling}: held-out {lo.m_eval_bpb_after:.3f} bits/byte at r={int(lo.p_rank)} and "
                     f"{hi.m_eval_bpb_after:.3f} at r={int(hi.p_rank)}, gradient norm x"
                     f"{hi.m_mean_grad_norm / lo.m_mean_grad_norm:.3g} from the smallest to the largest rank")
    return ("Measured here (each at its best learning rate, mean over seeds): " + "; ".join(parts) + ". The paper "
            "(Llama-2-7B) finds LoRA's curves coinciding across ranks with its gradient norm collapsing, and rsLoRA "
            "improving with rank; a 1M-parameter byte model fine-tuned for a few dozen steps is a much smaller "
            "test. With B = 0 at the start, rsLoRA at rank r is LoRA with B's learning rate times sqrt(r): one "
            "learning rate for both would compare learning rates, hence the sweep.")


def section(df: pd.DataFrame) -> Section | None:
    """LoRA vs rsLoRA: the variance argument, fine-tuning vs rank, adapter overhead."""
    var, fine = study_rows(df, "lora", "variance"), finetune_best(df)
    over = study_rows(df, "lora", "overhead")
    if var.empty and fine.empty and over.empty:
        return None
    out = Section("lora", "LoRA vs rank-stabilised LoRA",
                  "y = Wx + γ·BA·x with A kaiming-uniform and B zero at the start; γ = α/r (LoRA) or α/√r "
                  "(rsLoRA). Our adapters equal PEFT's output for both scalings (tests/test_lora.py). The "
                  "fine-tune trains only the adapters of the reference model on the email package, which the "
                  "reference model never saw, with the same α, learning rate and steps at every rank.")
    out.add_figures(df, (
        ("The update's variance vs rank", fig_variance, "Expected: slope -1 for LoRA (γ² · r), 0 for rsLoRA."),
        ("Fine-tuning vs rank", fig_finetune,
         "Adam normalises gradient size, so γ sets the size of each step's change to the output."),
    ))
    if not var.empty:
        out.tables.append(Table("Fitted log-log slope of Var(γ·BA) vs rank",
                                ["machine", "scaling", "slope", "expected", "ranks"],
                                [[r.machine, r.p_scaling, f"{r.m_loglog_slope:.3f}", fmt(r.m_expected_slope),
                                  f"{min(r.p_ranks)}..{max(r.p_ranks)}"] for r in var.itertuples()]))
    if not fine.empty:
        table = (fine.groupby(["machine", "p_scaling", "p_rank"], sort=False)
                 .agg(lr=("p_lr", "first"), seeds=("p_seed", "count"), gamma=("m_scaling_factor", "first"),
                      adapter=("m_adapter_params", "first"), before=("m_eval_bpb_before", "mean"),
                      after=("m_eval_bpb_after", "mean"), final=("m_final_train_bpb", "mean"),
                      grad=("m_mean_grad_norm", "mean")).reset_index())
        out.tables.append(Table(
            "Fine-tuning on a held-out package (each rank at its best learning rate; means over seeds)",
            ["machine", "scaling", "rank", "best lr", "seeds", "γ", "adapter params", "held-out before",
             "held-out after", "final training loss", "mean gradient norm"],
            [[r.machine, r.p_scaling, fmt(int(r.p_rank)), fmt(r.lr), fmt(int(r.seeds)), f"{r.gamma:.4g}",
              fmt(int(r.adapter)), f"{r.before:.4f}", f"{r.after:.4f}", f"{r.final:.4f}", fmt(r.grad)]
             for r in table.itertuples()]))
        out.notes.append(_reading(fine))
    if not over.empty:
        base = over[over["p_mode"] == "none"].set_index(["machine", "backend"])[TIME]
        out.tables.append(Table(
            "Forward time with an adapter on every projection (batch 4 x 128 tokens), by engine",
            ["machine", "variant", "backend", "mode", "rank", "time", "vs no adapter"],
            [[r.machine, r.variant, r.backend, r.p_mode, fmt(int(r.p_rank)), f"{1e3 * getattr(r, TIME):.2f} ms",
              f"{getattr(r, TIME) / base.get((r.machine, r.backend), float('nan')):.2f}x"]
             for r in over.itertuples()]))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The LoRA study leaves its findings to the scoreboard and its section."""
    return []
