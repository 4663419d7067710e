"""What a study is: one folder under `bench/studies/` and one line in its registry.

A study holds its sweep per preset (`__init__.py`), its record fields (`records.py`: a params and a
metrics dataclass per kind of record), its pytest-benchmark suite (`test_<name>.py`), its report half
(`report.py`: frames, figures, a report section and summary lines) and its judge half (`judge.py`:
claims and regression gates). `reports/` loops over the registry and knows no study by name.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    fields: Any = None  # module or dotted module name of its record dataclasses (None: records are not type-checked)
    group_by: tuple[str, ...] = ()  # params fields that, beside record study, phase and variant, make a comparison

    def group(self, record: Mapping[str, Any]) -> str:
        """The pytest-benchmark group of a record: the comparison it belongs to (record study, phase, the
        variant where it ran on an engine, and the study's `group_by` params), so the terminal table and
        `pytest-benchmark compare` rank like with like."""
        params = record.get("params", {})
        words = [f"{record['study']}:", *([params["phase"]] if params.get("phase") else [])]
        if record.get("device_type") is not None:  # counts that ran on no engine compare across models
            words.append(record["variant"])
        words += [f"{key}={params[key]}" for key in self.group_by if key in params]
        return " ".join(words)

    def sweep(self, preset: str) -> Any | None:
        """What this study runs in `preset` (None: nothing)."""
        return self.sweeps.get(preset)

    def report_half(self) -> Any:
        return importlib.import_module(self.report) if isinstance(self.report, str) else self.report

    def judge_half(self) -> Any:
        return importlib.import_module(self.judge) if isinstance(self.judge, str) else self.judge

    def field_types(self) -> dict[str, tuple[Any, ...]]:
        """Each params or metrics field of this study's record dataclasses -> the types it is declared with
        (a name two dataclasses declare differently keeps both)."""
        module = importlib.import_module(self.fields) if isinstance(self.fields, str) else self.fields
        found: dict[str, tuple[Any, ...]] = {}
        for value in vars(module).values() if module is not None else ():
            if isinstance(value, type) and dataclasses.is_dataclass(value):
                for name, hint in typing.get_type_hints(value).items():
                    if hint not in found.get(name, ()):
                        found[name] = (*found.get(name, ()), hint)
        return found

    def timed(self, record_study: str, phase: object) -> bool:
        """Whether a record's fastest round is a measurement worth gating."""
        return ((record_study, "*") not in self.untimed
                and (record_study, phase if isinstance(phase, str) else "") not in self.untimed)


def conforms(value: object, hint: Any) -> bool:
    """Whether a value read from JSON is of a record field's declared type (`int`, `float`, `str`, `bool`,
    `X | None`, `list[X]`, `dict[str, X]`); an int is a float here, a bool is not a number, and a type this
    check does not know accepts anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict) and (not args or all(conforms(v, args[1]) for v in value.values()))
    if hint is list or origin in (list, tuple):
        return isinstance(value, list) and (not args or all(conforms(v, args[0]) for v in value))
    return True


def type_name(hint: Any) -> str:
    """A declared type as it reads in source (`int`, `list[float]`, `float | None`)."""
    return hint.__name__ if isinstance(hint, type) and not typing.get_args(hint) else str(hint).replace("typing.", "")
