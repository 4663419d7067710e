"""The norms study: Post-LN, Pre-LN and Pre-RMSNorm: per-layer gradient norms at initialisation against
depth, stability at a high learning rate without warm-up, and the norm layers' own speed on every engine.

Files: `test_norms.py` (the suite), `report.py`, `judge.py`; its sweeps per preset are below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.study import Study


@dataclass(frozen=True)
class NormSweep:
    """post_ln / pre_ln / pre_rms: gradient norms at init, stability at a high learning rate, norm speed."""

    depths: tuple[int, ...] = (6, 12, 24)
    inits: tuple[str, ...] = ("xavier", "gpt2")
    stability_lr: float = 1e-2  # Pre-LN still learns here without warm-up on the small model; see the report
    stability_seeds: tuple[int, ...] = (0,)
    stability_steps: int = 150
    stability_depth: int = 6
    widths: tuple[int, ...] = (256, 768, 2048, 4096)
    rows: int = 2048  # tokens per norm call (batch x sequence)


SWEEPS = {
    "quick": (NormSweep(),),
    "standard": (NormSweep(stability_steps=200, stability_seeds=(0, 1, 2)),),
}

STUDY = Study(
    name="norms",
    title="Norm placement: Post-LN, Pre-LN, Pre-RMSNorm",
    suite=Path(__file__).with_name("test_norms.py"),
    sweeps=SWEEPS,
    records=("norms",),
    report="bench.studies.norms.report",
    judge="bench.studies.norms.judge",
    untimed=frozenset({("norms", "stability"), ("norms", "gradients")}),
)
