"""Build the self-contained HTML report from one or many results files.

The page is generic: the claims scoreboard, the summary, the hardware, then one section per study of
the study registry (`bench.studies`), each drawn by that study's own report half.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import jinja2
import pandas as pd

from profiles.hardware import SOFTWARE

from .load import Results, load, to_frame
from .page import Section, fmt, fmt_bytes
from .verdicts import scoreboard


def environment_rows(results: list[Results]) -> tuple[list[str], list[list[str]]]:
    """The hardware profile of each machine, one column per results file, and the engines that ran."""
    fields = [("CPU", lambda p: p.get("cpu_model")),
              ("logical CPUs", lambda p: p.get("cpu_count_logical")),
              ("torch threads", lambda p: p.get("torch_threads")),
              ("memory", lambda p: fmt_bytes(p.get("memory_total_bytes"))), ("OS", lambda p: p.get("os")),
              *[(label, lambda p, key=key: p.get(key)) for label, key in SOFTWARE],
              ("onnxruntime providers", lambda p: ", ".join(p.get("onnxruntime_providers") or []) or "–"),
              ("GPUs", lambda p: "; ".join(
                  f"{g['name']} ({fmt_bytes(g['memory_total_bytes'])}, driver {g['driver']}, "
                  f"cc {g.get('compute_capability')})" for g in p.get("gpus") or []) or "none"),
              ("NVML", lambda p: p.get("nvml_error") or "ok")]
    header = ["", *[r.machine for r in results]]
    rows = [[name, *[fmt(get(r.archbench_info.get("profile", {}))) for r in results]] for name, get in fields]
    for device in sorted({d for r in results for d in r.archbench_info.get("ceilings", {})}):
        cells = []
        for r in results:
            c = r.archbench_info.get("ceilings", {}).get(device)
            read = c.get("read_Bps", float("nan")) / 1e9 if c else float("nan")
            cells.append(f"read {read:.1f} GB/s, copy {c['copy_Bps'] / 1e9:.1f} GB/s, "
                         f"matvec {c['matvec_out_in_Bps'] / 1e9:.1f} (out,in) / "
                         f"{c['matvec_in_out_Bps'] / 1e9:.1f} (in,out) GB/s" if c else "–")
        rows.append([f"measured bandwidth ({device})", *cells])
    for name in sorted({b for r in results for b in r.archbench_info.get("backends") or {}}):
        cells = []
        for r in results:
            engine = (r.archbench_info.get("backends") or {}).get(name)
            cells.append(", ".join(f"{k} {v}" for k, v in engine.items() if k not in ("family", "device_type"))
                         if engine else "–")
        rows.append([f"engine {name}", *cells])
    for device in sorted({d for r in results for d in r.archbench_info.get("energy") or {}}):
        rows.append([f"energy counter ({device})",
                     *[(r.archbench_info.get("energy") or {}).get(device, "–") for r in results]])
    rows.append(["preset", *[fmt(r.archbench_info.get("preset")) for r in results]])
    rows.append(["complete run", *["no (rebuilt from records after an early end)" if r.partial else "yes"
                                   for r in results]])
    return header, rows


def _study_parts(df: pd.DataFrame) -> tuple[list[Section], list[str], list]:
    """Every registered study's section and summary lines, and every claim. A study whose report half
    fails on these records gets a section saying so (the rest of the report stands)."""
    from bench import studies

    sections, lines, claims = [], [], []
    for study in studies.STUDIES.values():
        claims += list(study.judge_half().CLAIMS)
        report = study.report_half()
        try:
            section = report.section(df)
            lines += report.summary(df)
        except Exception as exc:  # a study's figures on records they cannot read: say so, keep the rest
            print(f"archbench: the {study.name} section could not be built: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            section = Section(study.name, study.title, "")
            section.notes.append(f"This section could not be built from these records ({type(exc).__name__}: "
                                 f"{exc}).")
        if section is not None:
            sections.append(section)
    return sections, lines, claims


def render(results: list[Results], sources: list[str] | None = None) -> str:
    """The report page as a string; `sources` names the results files (default: their file names)."""
    df = to_frame(results)
    sections, summary, claims = _study_parts(df)
    env = jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             undefined=jinja2.StrictUndefined)
    header, rows = environment_rows(results)
    anchors = {s.anchor for s in sections}
    board = [{**row, "link": row["section"] if row["section"] in anchors else None,
              "css": row["status"].replace(" ", "-")} for row in scoreboard(df, claims)]
    return env.get_template("report.html.j2").render(
        title="archbench report", generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        sources=sources or [Path(r.path).name for r in results], summary=summary, env_header=header, env_rows=rows,
        sections=sections, n_benchmarks=len(df), scoreboard=board, several_machines=len(results) > 1)


def build_report(paths: list[str | Path], out: str | Path) -> Path:
    """Load every results file, render the report, write it to `out`. The page names each file by its path
    relative to the page (a report and its results moved together still name them right; no absolute path of
    the machine that built it is written into it)."""
    results = [load(p) for p in paths]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = [os.path.relpath(Path(p).resolve(), out.parent.resolve()) for p in paths]
    out.write_text(render(results, sources), encoding="utf-8")
    return out
