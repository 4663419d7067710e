"""Every figure of a report, from every study, as a reader sees it: axes labelled, legends in words, tick
labels and panel titles that do not collide, no lone point on a log axis; and the same report in a real
browser: headless Chromium, where one is installed (skipped otherwise; `.ci/run` installs Debian's chromium
when it can and sets ARCHBENCH_REQUIRE_BROWSER=1, so CI fails rather than skips). The screenshot goes to
ARCHBENCH_ARTIFACTS when set (CI: under its run's output directory). Both read one report, built once."""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from reports import page
from reports.build import build_report

DATA = Path(__file__).parent / "data"
EVERY_STUDY = [DATA / "smoke_results.json", DATA / "studies_results.json"]
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
        if ax.get_xscale() == "log" and len({v for v in _x_values(ax) if v > 0}) < 2:  # 0: no point on a log axis
            found.append(f"{name}: a single x value on a log axis")
        title = ax.title.get_window_extent(renderer) if ax.get_title() else None
        for other in axes:
            if other is ax or title is None:
                continue
            parts = [other.xaxis.label, *other.get_xticklabels()]
            if any(p.get_visible() and p.get_text() and title.overlaps(p.get_window_extent(renderer)) for p in parts):
                found.append(f"{name}: its title covers the labels of {other.get_title() or 'another panel'}")
    return found


@dataclass
class CheckedReport:
    """A report of every study built with each figure checked as it was finished."""
    path: Path
    seen: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def every_study_report(tmp_path_factory) -> CheckedReport:
    report = CheckedReport(tmp_path_factory.mktemp("report") / "index.html")
    finish = page.finish

    def checked(fig: plt.Figure) -> None:
        finish(fig)
        fig.canvas.draw()
        report.seen.append(fig.axes[0].get_title() if fig.axes else "?")
        report.problems.extend(_problems(fig))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(page, "finish", checked)
        build_report(EVERY_STUDY, report.path)
    return report


def test_every_figure_reads_cleanly(every_study_report: CheckedReport) -> None:
    assert len(every_study_report.seen) >= 10  # the figures of every study were drawn through the check
    assert not every_study_report.problems, "\n".join(every_study_report.problems)


def test_comparisons_at_one_length_are_a_table_not_a_lone_point(monkeypatch) -> None:
    """A quick run measures GPT-2 124M's engines at one length: the decode figures leave those comparisons
    to a table (one point on a log axis says less than a table row), and draw the rest cleanly."""
    from bench.studies.decode import report as decode_report
    from reports.load import load, to_frame

    sample = Path(__file__).parent.parent / "reports" / "samples" / "cpu-amd-epyc-2core-quick" / "results.json"
    df = to_frame([load(sample)])
    df = df[df["study"] == "decode"]
    problems: list[str] = []
    finish = page.finish

    def checked(fig: plt.Figure) -> None:
        finish(fig)
        fig.canvas.draw()
        problems.extend(_problems(fig))

    monkeypatch.setattr(page, "finish", checked)
    assert decode_report.fig_engines(df) and decode_report.fig_scaling(df)
    assert not problems, "\n".join(problems)
    single = decode_report.single_length_engines(df)
    assert set(single["variant"]) == {"gpt2-small"} and single["backend"].nunique() >= 3


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


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-figures", ok + "/" + imgs.length);
  const page = document.documentElement;
  document.body.setAttribute("data-overflow", Math.max(0, page.scrollWidth - page.clientWidth));
});
</script>"""


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--window-size=1280,900", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_every_figure_loads_and_nothing_overflows_in_headless_chromium(every_study_report: CheckedReport,
                                                                       tmp_path) -> None:
    """Every study's section (the smoke and studies records together) in a 1280-pixel-wide window: every
    figure decoded, nothing wider than the page; a screenshot of the top of the page is kept."""
    browser = _browser()
    if browser is None:
        if os.environ.get("ARCHBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ARCHBENCH_REQUIRE_BROWSER=1 but no browser found (looked for {', '.join(BROWSERS)})")
        pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)})")
    report = every_study_report.path
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    proc = _chromium(browser, tmp_path / "profile", "--dump-dom", probed.as_uri())
    match = re.search(r'data-figures="(\d+)/(\d+)"', proc.stdout)
    assert match, f"the page did not finish loading in {browser}: {proc.stderr[-1500:]}"
    loaded, total = map(int, match.groups())
    assert total > 0 and loaded == total, f"{loaded} of {total} figures loaded"
    overflow = int(re.search(r'data-overflow="(\d+)"', proc.stdout).group(1))
    assert overflow == 0, f"the page is {overflow} px wider than the window"
    shots = Path(os.environ.get("ARCHBENCH_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "report-screenshot.png"
    _chromium(browser, tmp_path / "profile", f"--screenshot={shot}", report.as_uri())
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "no screenshot was written"
