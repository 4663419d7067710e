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
    """Fine-tuning vs rank: held-out loss after, final training loss, adapter gradient norm."""
    d = study_rows(df, "lora", "finetune")
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


def _reading(fine: pd.DataFrame) -> str:
    """One honest sentence on what the fine-tune shows at the largest and smallest ranks."""
    parts = []
    for scaling, g in fine.groupby("p_scaling"):
        g = g.sort_values("p_rank")
        lo, hi = g.iloc[0], g.iloc[-1]
        parts.append(f"{scaling}: held-out {lo.m_eval_bpb_after:.3f} bits/byte at r={int(lo.p_rank)} and "
                     f"{hi.m_eval_bpb_after:.3f} at r={int(hi.p_rank)}, gradient norm x"
                     f"{hi.m_mean_grad_norm / lo.m_mean_grad_norm:.3g} from the smallest to the largest rank")
    return ("Measured here: " + "; ".join(parts) + ". The paper (Llama-2-7B) finds LoRA's curves coinciding "
            "across ranks with its gradient norm collapsing, and rsLoRA improving with rank; a 1M-parameter byte "
            "model fine-tuned for a few dozen steps is a much smaller test.")


def section(df: pd.DataFrame) -> Section | None:
    """LoRA vs rsLoRA: the variance argument, fine-tuning vs rank, adapter overhead."""
    var, fine = study_rows(df, "lora", "variance"), study_rows(df, "lora", "finetune")
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
        out.tables.append(Table(
            "Fine-tuning on a held-out package",
            ["machine", "scaling", "rank", "γ", "adapter params", "held-out before", "held-out after",
             "final training loss", "mean gradient norm"],
            [[r.machine, r.p_scaling, fmt(int(r.p_rank)), f"{r.m_scaling_factor:.4g}", fmt(int(r.m_adapter_params)),
              f"{r.m_eval_bpb_before:.4f}", f"{r.m_eval_bpb_after:.4f}", f"{r.m_final_train_bpb:.4f}",
              fmt(r.m_mean_grad_norm)] for r in fine.sort_values(["machine", "p_scaling", "p_rank"]).itertuples()]))
        out.notes.append(_reading(fine))
    if not over.empty:
        base = over[over["p_mode"] == "none"].set_index("machine")[TIME]
        out.tables.append(Table(
            "Forward time with an adapter on every projection (batch 4 x 128 tokens)",
            ["machine", "variant", "mode", "rank", "time", "vs no adapter"],
            [[r.machine, r.variant, r.p_mode, fmt(int(r.p_rank)), f"{1e3 * getattr(r, TIME):.2f} ms",
              f"{getattr(r, TIME) / base.get(r.machine, float('nan')):.2f}x"] for r in over.itertuples()]))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The LoRA study leaves its findings to the scoreboard and its section."""
    return []
