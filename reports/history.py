"""Key figures across commits (`python -m reports history RUN.json... --out history.json|history.html`).

Each results file is one point, placed by its `commit_info` (pytest-benchmark records the commit a run
measured) and its `datetime`. The JSON is github-action-benchmark's data format: `entries` holds one
suite per direction, `customBiggerIsBetter` and `customSmallerIsBetter`, each a list of runs whose
`benches` are that tool's custom entries (`name`, `value`, `unit`, `extra`), so the action's chart page
and alerts read it. The HTML page plots each figure against the runs.
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt

from .load import ResultsFileError, load, to_frame
from .page import to_png_base64
from .summary import KeyFigure, key_figures

SUITES = {True: ("archbench (bigger is better)", "customBiggerIsBetter"),
          False: ("archbench (smaller is better)", "customSmallerIsBetter")}
OUTPUTS = (".json", ".html")


@dataclass(frozen=True)
class Point:
    """One results file: its commit, when it ran, and its key figures."""

    path: Path
    commit: dict  # pytest-benchmark's commit_info ({} when the file has none)
    when: datetime.datetime
    figures: list[KeyFigure]

    @property
    def label(self) -> str:
        """The commit's short id (with '+' when its tree was dirty), or the file's name without one."""
        cid = str(self.commit.get("id") or "")
        return (cid[:8] + ("+" if self.commit.get("dirty") else "")) if cid else self.path.stem


def _when(text: object, fallback: Path) -> datetime.datetime:
    try:
        when = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        when = datetime.datetime.fromtimestamp(fallback.stat().st_mtime, datetime.timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def points(paths: Sequence[str | Path]) -> list[Point]:
    """Every results file as a point, oldest commit first (a commit's time, else the run's datetime)."""
    found = []
    for path in map(Path, paths):
        results = load(path)
        raw = json.loads(path.read_text()) if path.suffix != ".jsonl" else {}
        commit = raw.get("commit_info") if isinstance(raw.get("commit_info"), dict) else {}
        commit = {} if "error" in commit else commit
        ran = _when(raw.get("datetime"), path)
        when = _when(commit["time"], path) if commit.get("time") else ran
        figures = key_figures(to_frame([results]))
        found.append(Point(path, commit, when, figures))
    if not found:
        raise ResultsFileError("history needs at least one results file")
    return sorted(found, key=lambda p: p.when)


def _name(figure: KeyFigure, several_machines: bool) -> str:
    return f"{figure.name} [{figure.machine}]" if several_machines else figure.name


def to_action_json(pts: list[Point]) -> dict:
    """The points in github-action-benchmark's data format (see the module docstring)."""
    several = len({f.machine for p in pts for f in p.figures}) > 1
    entries: dict[str, list[dict]] = {SUITES[True][0]: [], SUITES[False][0]: []}
    for p in pts:
        for bigger, (suite, tool) in SUITES.items():
            benches = [{"name": _name(f, several), "value": f.value, "unit": f.unit,
                        "extra": f"machine: {f.machine}; results: {p.path.name}"}
                       for f in p.figures if f.bigger_is_better == bigger]
            if benches:
                commit = {"id": p.commit.get("id") or p.label, "timestamp": p.when.isoformat(),
                          "message": p.commit.get("branch") or "", "url": ""}
                entries[suite].append({"commit": commit, "date": int(p.when.timestamp() * 1000), "tool": tool,
                                       "benches": benches})
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)
    return {"lastUpdate": now, "repoUrl": "", "entries": {k: v for k, v in entries.items() if v}}


def _plot(name: str, unit: str, bigger: bool, xs: list[int], values: list[float], labels: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(6.0, 2.6))
    ax.plot(xs, values, marker="o")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel("run (commit, oldest first)")
    ax.set_ylabel(unit)
    ax.set_title(f"{name} ({'bigger' if bigger else 'smaller'} is better)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return to_png_base64(fig)


def to_html(pts: list[Point]) -> str:
    """A self-contained page: one trend plot per key figure, and the runs it was drawn from."""
    several = len({f.machine for p in pts for f in p.figures}) > 1
    labels = [p.label for p in pts]
    series: dict[tuple[str, str, bool], dict[int, float]] = {}
    for i, p in enumerate(pts):
        for f in p.figures:
            series.setdefault((_name(f, several), f.unit, f.bigger_is_better), {})[i] = f.value
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>archbench history</title>",
             "<style>body{font-family:sans-serif;max-width:1300px;margin:auto;padding:1em}"
             "img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:8px}.grid img{width:620px}"
             "td,th{padding:2px 8px;text-align:left}</style></head><body>",
             f"<h1>archbench history: {len(pts)} runs, {len(series)} figures</h1>",
             "<table><tr><th>run</th><th>commit</th><th>time</th><th>file</th></tr>"]
    for p in pts:
        parts.append(f"<tr><td>{html.escape(p.label)}</td><td>{html.escape(str(p.commit.get('id') or '–'))}</td>"
                     f"<td>{html.escape(p.when.strftime('%Y-%m-%d %H:%M UTC'))}</td>"
                     f"<td>{html.escape(str(p.path))}</td></tr>")
    parts.append("</table><div class='grid'>")
    for (name, unit, bigger), values in series.items():
        xs = sorted(values)
        image = _plot(name, unit, bigger, xs, [values[x] for x in xs], labels)
        parts.append(f"<img alt='{html.escape(name, quote=True)}' src='data:image/png;base64,{image}'>")
    parts.append("</div></body></html>")
    return "\n".join(parts)


def write_history(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Write the history of these results files to `out`: .json (github-action-benchmark) or .html."""
    out = Path(out)
    if out.suffix not in OUTPUTS:
        raise ResultsFileError(f"--out {out}: give a .json (github-action-benchmark's format) or .html (trend plots) "
                               "file")
    pts = points(paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_action_json(pts), indent=1) if out.suffix == ".json" else to_html(pts),
                   encoding="utf-8")
    return out
