"""Regression gates' generic parts: a gate, what a study's gates are given, combining runs, the table.

Each study declares its gates (`gates(ctx)` in its `judge.py`): figures that do not depend on the
machine (fitted exponents, ratios measured in one run, exact byte counts, seeded accuracy figures),
checked against a baseline of one or more runs. `reports.check` adds the generic ones (a study
missing from the run, absolute times on the same machine) and loops over the studies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from .load import Results


@dataclass(frozen=True)
class Gate:
    """One checked figure."""

    gate: str
    subject: str
    value: str
    limit: str
    passed: bool


@dataclass
class GateContext:
    """What a study's gates see: the baseline's runs (results and frames), which of them ran on the same
    machine as the current run, and the current run."""

    baselines: list[Results]
    base_frames: list[pd.DataFrame]
    same_machine: list[bool]
    current: Results
    cur_df: pd.DataFrame
    notes: dict = field(default_factory=dict)

    @cached_property
    def fullest_base(self) -> pd.DataFrame:
        """Per record study, the rows of the baseline run with the most records of it (see
        `fullest_run_per_study`)."""
        return fullest_run_per_study(self.base_frames)


def fullest_run_per_study(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per record study, the rows of the run with the most records of it (the first such run on a tie).
    Gates on exact counts and seeded figures, which do not vary between runs of the same code, compare
    with it; a smaller preset's run of a study (fewer variants) must not stand in for a fuller one."""
    counts = [df["study"].value_counts() if not df.empty else pd.Series(dtype=int) for df in frames]
    parts = []
    for study in dict.fromkeys(s for c in counts for s in c.index):
        best = max(range(len(frames)), key=lambda i: (counts[i].get(study, 0), -i))
        parts.append(frames[best][frames[best]["study"] == study])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def machines_match(a: Results, b: Results) -> bool:
    """Whether absolute times are comparable: same CPU, GPUs, threads and torch build."""
    pa, pb = a.archbench_info.get("profile", {}), b.archbench_info.get("profile", {})
    keys = ("cpu_model", "cpu_count_logical", "torch_threads", "torch")
    gpus = lambda p: [g.get("name") for g in p.get("gpus") or []]  # noqa: E731
    return bool(pa) and all(pa.get(k) == pb.get(k) for k in keys) and gpus(pa) == gpus(pb)


KL_TOLERANCE, KL_FLOOR = 1.25, 1e-4


def kl_gate(name: str, subject: str, base: float, cur: float) -> Gate:
    """A seeded divergence at most 25% (plus 1e-4) above the baseline's."""
    limit = KL_TOLERANCE * base + KL_FLOOR
    return Gate(name, subject, f"{cur:.3g}", f"<= {limit:.3g} (baseline {base:.3g})", bool(cur <= limit))


def exact_gate(name: str, subject: str, value: object, expected: object) -> Gate:
    """A count equal to the baseline's."""
    shown = "not measured" if value is None or value != value else f"{int(value)}"
    return Gate(name, subject, shown, f"== {int(expected)}", value == expected)


def combine(runs: list[list[Gate]]) -> list[Gate]:
    """Gates of several runs of the same code on the same machine: a gate passes when it passes in any
    run. A regression fails in every run; a slow patch of a shared machine does not."""
    combined: dict[tuple[str, str], Gate] = {}
    for gates in runs:
        for g in gates:
            key = (g.gate, g.subject)
            if key not in combined or (g.passed and not combined[key].passed):
                combined[key] = g
    # a re-measurement of one study reports the others as missing: a subject is missing only when
    # every run missed it
    missing_everywhere = set.intersection(*[{g.subject for g in gates if g.gate == "missing"} for gates in runs]) \
        if runs else set()
    return [g for g in combined.values() if g.gate != "missing" or g.subject in missing_everywhere]


def format_table(gates: list[Gate]) -> str:
    """The gates as an aligned text table, failures marked."""
    header = ("status", "gate", "subject", "value", "limit")
    rows = [("PASS" if g.passed else "FAIL", g.gate, g.subject, g.value, g.limit) for g in gates]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
