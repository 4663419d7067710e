"""The claims scoreboard's generic parts: a claim, its verdict, and judging every claim per machine.

Each study declares its claims (`judge.py` in its folder): an id, a one-line statement, the report
section its evidence lives in, and a function from one machine's records (the tidy frame of
`reports.load`) to a `Verdict`: holds, does not hold, mixed (part of it holds, or on part of the
evidence only) or not measured, with the figures behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

HOLDS, FAILS, MIXED, UNMEASURED = "holds", "does not hold", "mixed", "not measured"
STATUSES = (HOLDS, FAILS, MIXED, UNMEASURED)


@dataclass(frozen=True)
class Verdict:
    status: str  # one of STATUSES
    figures: str  # the key figures behind the verdict, in a sentence


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    section: str  # anchor of the report section with the evidence
    judge: Callable[[pd.DataFrame], Verdict]


def unmeasured(what: str) -> Verdict:
    """The verdict where the records lack `what`."""
    return Verdict(UNMEASURED, f"no {what} in these results")


def scoreboard(df: pd.DataFrame, claims: Iterable[Claim]) -> list[dict]:
    """One row per claim and machine: id, statement, section, machine, status, figures."""
    rows = []
    machines = list(dict.fromkeys(df["machine"])) if not df.empty and "machine" in df else []
    for claim in claims:
        for machine in machines or ["–"]:
            part = df[df["machine"] == machine] if machines else df
            try:
                verdict = claim.judge(part)
            except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:  # records of another shape
                verdict = Verdict(UNMEASURED, f"the records could not be read for this claim ({type(exc).__name__}: "
                                              f"{exc})")
            rows.append({"id": claim.id, "statement": claim.statement, "section": claim.section, "machine": machine,
                         "status": verdict.status, "figures": verdict.figures})
    return rows
