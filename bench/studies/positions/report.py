"""The positions study's report half: parameters, speed per engine, loss beyond the trained context."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reports.load import TIME
from reports.page import Section, Table, fmt, length_axis, study_rows, to_png_base64


def extrapolation_long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per machine, scheme, seed and evaluated length: bits per byte over all positions, within and
    beyond the trained context (lengths a scheme cannot evaluate are left out)."""
    d = study_rows(df, "positions", "extrapolation")
    rows = []
    for r in d.itertuples():
        for length, m in r.m_by_length.items():
            if "error" in m:
                continue
            rows.append({"machine": r.machine, "scheme": r.p_pos, "seed": getattr(r, "p_seed", 0),
                         "length": int(length), "train_len": int(r.p_train_len), "bpb": m["bits_per_byte"],
                         "beyond": m.get("bits_per_byte_beyond_train_len")})
    return pd.DataFrame(rows)


def fig_extrapolation(df: pd.DataFrame) -> str | None:
    """Held-out loss at the trained context and beyond it, per positional scheme (mean over seeds, 95% band)."""
    d = extrapolation_long(df)
    if d.empty:
        return None
    long = d.rename(columns={"bpb": "all positions", "beyond": "positions beyond the trained context"}).melt(
        ["machine", "scheme", "seed", "length", "train_len"], var_name="measured over", value_name="value").dropna()
    if long["length"].nunique() < 2:
        return None  # one evaluated length: the table says it; a single point on a log axis does not
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="length", y="value", hue="scheme", style="measured over", marker="o", ax=ax,
                 errorbar=("ci", 95))
    ax.set(xscale="log", xlabel="evaluated context (tokens, log)", ylabel="held-out loss (bits/byte)",
           title=f"Trained at {int(d['train_len'].iloc[0])} tokens (learned: no positions past its table)")
    length_axis(ax, list(long["length"]))
    return to_png_base64(fig)


def section(df: pd.DataFrame) -> Section | None:
    """Positional embeddings: parameters, speed, extrapolation."""
    params, extra = study_rows(df, "positions", "params"), study_rows(df, "positions", "extrapolation")
    speed = pd.concat([study_rows(df, "positions", p) for p in ("prefill", "decode")])
    if params.empty and extra.empty and speed.empty:
        return None
    out = Section("positions", "Positional embeddings: learned, sinusoidal, RoPE",
                  "One model per scheme, identical otherwise. Extrapolation: each scheme trained at the same "
                  "context and budget, evaluated on held-out files at 1x, 2x and 4x that context.")
    out.add_figures(df, (("Loss beyond the trained context", fig_extrapolation,
                          "Solid: every position of the window; dashed: only positions past the trained context."),))
    if not params.empty:
        out.tables.append(Table(f"Parameters at {params['variant'].iloc[0]}'s shape",
                                ["scheme", "position parameters", "total"],
                                [[r.p_pos, fmt(int(r.m_position_params)), fmt(int(r.m_params))]
                                 for r in params.drop_duplicates("p_pos").itertuples()]))
    if not speed.empty:
        out.tables.append(Table(
            "Speed per scheme", ["machine", "backend", "variant", "phase", "scheme", "tokens", "time", "tokens/s"],
            [[r.machine, r.backend, r.variant, r.p_phase, r.p_pos, fmt(int(r.p_tokens)),
              f"{1e3 * getattr(r, TIME):.2f} ms", fmt(r.p_tokens / getattr(r, TIME))]
             for r in speed.sort_values(["machine", "backend", "p_phase", "p_pos"]).itertuples()]))
    if not extra.empty:
        lengths = sorted({int(k) for r in extra.itertuples() for k in r.m_by_length})
        long = extrapolation_long(df)
        rows = []
        for (machine, pos), g in extra.groupby(["machine", "p_pos"], sort=False):
            cells = []
            for length in lengths:
                got = long[(long["machine"] == machine) & (long["scheme"] == pos) & (long["length"] == length)]
                if got.empty:
                    cells.append("not defined (no position past the table)")
                else:
                    beyond = got["beyond"].mean()
                    cells.append(f"{got['bpb'].mean():.3f}" + (f" (beyond: {beyond:.3f})" if beyond == beyond else ""))
            rows.append([machine, pos, fmt(int(g["p_train_len"].iloc[0])), fmt(len(g)), *cells])
        out.tables.append(Table("Held-out loss (bits/byte) by evaluated context, mean over seeds",
                                ["machine", "scheme", "trained at", "seeds", *[f"{n} tokens" for n in lengths]],
                                rows))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The positions study leaves its findings to the scoreboard and its section."""
    return []
