"""The tying study: the output head sharing the token embedding's matrix: exact parameter counts from
GPT-2 small to 70B-class shapes, and quality at equal training budget.

Files: `test_tying.py` (the suite), `report.py`, `judge.py`; its sweeps per preset are below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.study import Study


@dataclass(frozen=True)
class TyingSweep:
    """Tied vs untied: exact parameter counts, and quality at equal training budget."""

    variants: tuple[str, ...] = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-3.2-1b",
                                 "llama-2-7b", "mistral-7b", "llama-3-8b", "llama-2-70b", "llama-3-70b")
    train_steps: int = 150
    batch_size: int = 16
    seq_len: int = 64
    base: str = "gpt2-tiny"


SWEEPS = {
    "quick": (TyingSweep(),),
    "standard": (TyingSweep(train_steps=300, batch_size=32, seq_len=128),),
}

STUDY = Study(
    name="tying",
    title="Weight tying",
    suite=Path(__file__).with_name("test_tying.py"),
    sweeps=SWEEPS,
    records=("tying",),
    report="bench.studies.tying.report",
    judge="bench.studies.tying.judge",
    fields="bench.studies.tying.records",
    untimed=frozenset({("tying", "quality"), ("tying", "params")}),
)
