"""Every figure of a report, from every study, as a reader sees it: axes labelled, legends in words, tick
labels and panel titles that do not collide, no lone point on a log axis."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from reports import page
from reports.build import build_report

DATA = Path(__file__).parent / "data"
RAW_NAMES = {"label", "kind", "impl", "mode", "panel", "case"}


def _x_values(ax: plt.Axes) -> set[float]:
    values: set[float] = set()
    for line in ax.get_lines():
        values |= {float(v) for v in np.asarray(line.get_xdata(), dtype=float) if np.isfinite(v)}
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets())
        if offsets.ndim == 2 and len(offsets):
            values |= {float(v) for v in offsets[:, 0] if np.isfinite(v)}
    return values


def _problems(fig: plt.Figure) -> list[str]:
    """What a reader would trip over in a finished figure."""
    found = []
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.has_data() and ax.get_label() != "<colorbar>"]
    for ax in axes:
        name = ax.get_title() or "(untitled panel)"
        numeric_y = all(t.get_text().replace("−", "-").replace(".", "").replace("$", "").strip("-").isdigit()
                        or not t.get_text() for t in ax.get_yticklabels())
        if not ax.get_xlabel():
            found.append(f"{name}: no x label")
        if not ax.get_ylabel() and numeric_y:
            found.append(f"{name}: no y label on a numeric axis")
        legend = ax.get_legend()
        if legend is not None:
            for text in [legend.get_title(), *legend.get_texts()]:
                words = text.get_text()
                if words.startswith(("p_", "m_")) or words in RAW_NAMES:
                    found.append(f"{name}: legend shows the column name {words!r}")
        labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        if any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:]):
            found.append(f"{name}: x tick labels collide")
        if ax.get_xscale() == "log" and len(_x_values(ax)) < 2:
            found.append(f"{name}: a single x value on a log axis")
        title = ax.title.get_window_extent(renderer) if ax.get_title() else None
        for other in axes:
            if other is ax or title is None:
                continue
            parts = [other.xaxis.label, *other.get_xticklabels()]
            if any(p.get_visible() and p.get_text() and title.overlaps(p.get_window_extent(renderer)) for p in parts):
                found.append(f"{name}: its title covers the labels of {other.get_title() or 'another panel'}")
    return found


@pytest.mark.parametrize("files", [["smoke_results.json", "studies_results.json"]], ids=["every-study"])
def test_every_figure_reads_cleanly(files, tmp_path, monkeypatch) -> None:
    seen: list[str] = []
    problems: list[str] = []
    finish = page.finish

    def checked(fig: plt.Figure) -> None:
        finish(fig)
        fig.canvas.draw()
        seen.append(fig.axes[0].get_title() if fig.axes else "?")
        problems.extend(_problems(fig))

    monkeypatch.setattr(page, "finish", checked)
    build_report([DATA / f for f in files], tmp_path / "index.html")
    assert len(seen) >= 10  # the figures of every study were drawn through the check
    assert not problems, "\n".join(problems)


def test_finish_turns_colliding_ticks_and_renames_columns() -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    names = [f"a_rather_long_scheme_name_{i}" for i in range(6)]
    ax.bar(names, range(6), label="x")
    ax.legend(title="p_kind")
    ax.set(xlabel="scheme", ylabel="count")
    page.finish(fig)
    fig.canvas.draw()
    assert ax.get_legend().get_title().get_text() == "module kind"
    assert not _problems(fig)
    plt.close(fig)
