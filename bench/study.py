"""What a study is: one folder under `bench/studies/` and one line in its registry.

A study holds its sweep per preset (`__init__.py`), its record fields (`records.py`: a params and a
metrics dataclass per kind of record), its pytest-benchmark suite (`test_<name>.py`), its report half
(`report.py`: frames, figures, a report section and summary lines) and its judge half (`judge.py`:
claims and regression gates). `reports/` loops over the registry and knows no study by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _no_references(sweep: Any) -> Iterable[str]:
    return ()


@dataclass(frozen=True)
class Study:
    """One study. `report` and `judge` are modules (or dotted module names, imported on first use) or any
    objects with the same attributes:

    - report: `section(df) -> reports.page.Section | None` and `summary(df) -> list[str]`;
    - judge: `CLAIMS` (a sequence of `reports.verdicts.Claim`), `gates(ctx: reports.gates.GateContext) ->
      list[Gate]`, and optionally `baseline_figures(frames) -> list[str]` (lines shown when a new
      baseline is written).
    """

    name: str  # what `--only` takes
    title: str  # what it measures, in a line
    suite: Path  # its pytest-benchmark file
    sweeps: Mapping[str, Any]  # preset name -> what this study runs in that preset (absent: nothing)
    records: tuple[str, ...]  # the `study` field of the records it writes
    report: Any  # module, dotted module name or object: section(df), summary(df)
    judge: Any  # module, dotted module name or object: CLAIMS, gates(ctx)
    untimed: frozenset[tuple[str, str]] = frozenset()  # (record study, phase or "*"): time is not the measurement
    references: Callable[[Any], Iterable[str]] = field(default=_no_references)  # reference models a sweep trains

    def sweep(self, preset: str) -> Any | None:
        """What this study runs in `preset` (None: nothing)."""
        return self.sweeps.get(preset)

    def report_half(self) -> Any:
        return importlib.import_module(self.report) if isinstance(self.report, str) else self.report

    def judge_half(self) -> Any:
        return importlib.import_module(self.judge) if isinstance(self.judge, str) else self.judge

    def timed(self, record_study: str, phase: object) -> bool:
        """Whether a record's fastest round is a measurement worth gating."""
        return ((record_study, "*") not in self.untimed
                and (record_study, phase if isinstance(phase, str) else "") not in self.untimed)
