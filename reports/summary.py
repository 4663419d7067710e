"""The scoreboard, the key figures and the gate results as text for CI: Markdown (a job summary or a
pull-request comment) or CSV (`python -m reports summary`).

Key figures come from each study's report half (`figures(df) -> list[KeyFigure]`, optional): numbers
with a unit and the direction that is better, so `reports history` can chart them across commits.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .gates import Gate
from .load import Results, to_frame
from .verdicts import scoreboard

FORMATS = ("md", "csv")


@dataclass(frozen=True)
class KeyFigure:
    """One headline number of a study on one machine."""

    name: str  # what it is, with the model and engine it was measured on
    value: float
    unit: str
    bigger_is_better: bool
    machine: str


def key_figures(df: pd.DataFrame) -> list[KeyFigure]:
    """Every registered study's key figures (studies whose report half has no `figures` give none; a study
    whose figures cannot be read from these records gives none rather than failing the summary)."""
    from bench import studies

    found: list[KeyFigure] = []
    for study in studies.STUDIES.values():
        figures = getattr(study.report_half(), "figures", None)
        if figures is None or df.empty:
            continue
        try:
            found += [f for f in figures(df) if math.isfinite(f.value)]
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            continue
    return found


def _parts(results: list[Results]) -> tuple[list[dict], list[KeyFigure]]:
    """The scoreboard rows and the key figures of these runs."""
    from bench import studies

    df = to_frame(results)
    return scoreboard(df, studies.all_claims()), key_figures(df)


def _tables(results: list[Results], gates: Sequence[Gate] | None) -> dict[str, list[list[str]]]:
    """The summary's tables as rows of text, headers first (a machine column only for several machines)."""
    board, figures = _parts(results)
    several = len({row["machine"] for row in board} | {f.machine for f in figures}) > 1  # as the frame labels them
    tables = {"claims": [["claim", *(["machine"] if several else []), "verdict", "figures", "judged on"]] + [
        [row["statement"], *([row["machine"]] if several else []), row["status"], row["figures"], row["model"]]
        for row in board]}
    tables["figures"] = [["figure", *(["machine"] if several else []), "value", "unit", "better"]] + [
        [f.name, *([f.machine] if several else []), f"{f.value:.4g}", f.unit,
         "bigger" if f.bigger_is_better else "smaller"] for f in figures]
    if gates is not None:
        tables["gates"] = [["gate", "subject", "value", "limit", "result"]] + [
            [g.gate, g.subject, g.value, g.limit, "pass" if g.passed else "FAIL"] for g in gates]
    return tables


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(results: list[Results], gates: Sequence[Gate] | None = None) -> str:
    """The summary as GitHub-flavoured Markdown: claims, key figures, and the gates when a baseline is given."""
    tables = _tables(results, gates)
    machines = ", ".join(dict.fromkeys(r.machine for r in results))  # the files' own labels
    preset = ", ".join(dict.fromkeys(str(r.archbench_info.get("preset", "?")) for r in results))
    out = [f"## archbench: {machines} (preset {preset})", ""]
    if any(r.partial for r in results):
        out += ["> The run ended early: these figures come from the records it kept.", ""]
    titles = {"claims": "Claims on this hardware", "figures": "Key figures", "gates": "Regression gates"}
    for key, rows in tables.items():
        if key == "gates":
            failed = sum(1 for row in rows[1:] if row[-1] == "FAIL")
            out += [f"### {titles[key]}: {len(rows) - 1 - failed} passed, {failed} failed", ""]
            rows = [rows[0], *sorted(rows[1:], key=lambda row: row[-1] != "FAIL")]  # failures first
        else:
            out += [f"### {titles[key]}", ""]
        if len(rows) == 1:
            out += ["(none)", ""]
            continue
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * len(rows[0]))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows[1:]]
        out.append("")
    return "\n".join(out)


CSV_COLUMNS = ("table", "item", "machine", "result", "value", "unit", "detail")


def to_csv(results: list[Results], gates: Sequence[Gate] | None = None) -> str:
    """The summary as one CSV table with the columns of `CSV_COLUMNS`: a row per claim and machine (result:
    the verdict), per key figure (value, unit; detail: which way is better) and per gate (result: pass or
    FAIL; detail: the limit)."""
    board, figures = _parts(results)
    rows = [["claim", r["statement"], r["machine"], r["status"], "", "", f"{r['figures']} (judged on {r['model']})"]
            for r in board]
    rows += [["figure", f.name, f.machine, "", repr(f.value), f.unit,
              f"{'bigger' if f.bigger_is_better else 'smaller'} is better"] for f in figures]
    current = results[-1].machine if results else ""
    rows += [["gate", f"{g.gate}: {g.subject}", current, "pass" if g.passed else "FAIL", g.value, "", g.limit]
             for g in gates or ()]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()
