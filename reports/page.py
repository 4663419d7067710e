"""The report page's building blocks, for every study's report half: sections, tables, figures (seaborn,
embedded as base64 PNG so the page is self-contained), cell formatting and shared plot helpers."""

from __future__ import annotations

import base64
import io
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # no display needed, before pyplot is imported
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd


@dataclass
class Figure:
    title: str
    png_base64: str
    caption: str


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""  # how to read it, shown under the table


@dataclass
class Section:
    """One study's part of the report (its anchor is what claims link to)."""

    anchor: str
    title: str
    intro: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_figures(self, df: pd.DataFrame,
                    specs: Iterable[tuple[str, Callable[[pd.DataFrame], str | None], str]]) -> None:
        """Render each (title, figure function, caption); a function with nothing to draw adds nothing."""
        for title, make, caption in specs:
            png = make(df)
            if png:
                self.figures.append(Figure(title, png, caption))


def fmt(value: object, digits: int = 3) -> str:
    """Human-readable cell text (numbers with `digits` significant digits)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def text_or(value: object, default: str) -> str:
    """A record's text field, or `default` where the record has none (older records, NaN in the frame)."""
    return value if isinstance(value, str) and value else default


def fmt_bytes(value: float | None) -> str:
    """Bytes in binary units (B, KiB, MiB...)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return str(value)


def study_rows(df: pd.DataFrame, study: str, phase: str | None = None) -> pd.DataFrame:
    """Rows of one record study (and one phase of it, when given), copied."""
    if df.empty or "study" not in df:
        return pd.DataFrame()
    d = df[df["study"] == study].copy()
    if phase is not None and not d.empty:
        d = d[d["p_phase"] == phase] if "p_phase" in d else d.iloc[0:0]
    return d.reset_index(drop=True)


def engine_caption(d: pd.DataFrame) -> str:
    """' · on <engine>[, ...]': the engines a figure's records were computed on, for its title ('' when the
    frame has lost that column)."""
    if "backend" not in d or d["backend"].dropna().empty:
        return ""
    return " · on " + ", ".join(sorted(str(b) for b in d["backend"].dropna().unique()))


# Display names of the frame columns and helper columns figures group by (legend titles and the level
# names seaborn writes into a legend); "" drops a level name the entries explain by themselves.
LEGEND_NAMES = {"p_impl": "implementation", "p_kind": "module kind", "p_scaling": "scaling", "p_cache": "cache",
                "p_scheme": "scheme", "p_norms": "norms", "p_pos": "positions", "p_norm": "norm",
                "impl": "implementation", "backend": "engine", "mode": "cache mode", "label": "", "kind": "",
                "family": "cache family", "variant": "model"}


def readable(name: str) -> str:
    """A column name as a reader should see it (`p_kind` -> "module kind"; unknown `p_`/`m_` names lose
    the prefix and their underscores)."""
    if name in LEGEND_NAMES:
        return LEGEND_NAMES[name]
    return name[2:].replace("_", " ") if name.startswith(("p_", "m_")) else name


def _overlaps(boxes: list) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def finish(fig: plt.Figure) -> None:
    """What every figure gets before it is drawn: readable legend titles and level names, x tick labels
    turned until they no longer collide, and a layout in which no panel's title covers another's labels."""
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            legend.set_title(readable(legend.get_title().get_text()))
            for text in legend.get_texts():
                text.set_text(readable(text.get_text()))
    fig.draw_without_rendering()  # the layout (text extents, ticks) without rasterising: savefig renders once
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for rotation in (30, 60, 90):
            labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
            if not _overlaps([t.get_window_extent(renderer).padded(2) for t in labels]):
                break
            ax.tick_params(axis="x", labelrotation=rotation)
            for t in labels:
                t.set_horizontalalignment("right" if rotation < 90 else "center")
            fig.draw_without_rendering()
    if len(fig.axes) > 1:
        fig.tight_layout()


def to_png_base64(fig: plt.Figure) -> str:
    """Finish a matplotlib figure (`finish`), encode it as base64 PNG and close it."""
    finish(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def length_axis(ax: plt.Axes, lengths: list[int]) -> None:
    """A log x axis with plain labels at the measured lengths (no overlapping powers of ten)."""
    ticks = sorted({int(v) for v in lengths})
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.tick_params(axis="x", labelrotation=45 if len(ticks) > 6 else 0)


def facet_grid(n_panels: int, height: float) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of up to three panels a row; returns the first `n_panels` axes (the rest hidden)."""
    cols = min(3, max(1, n_panels))
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]
