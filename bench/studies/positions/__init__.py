"""The positions study: learned (GPT-2), sinusoidal (2017) and rotary (RoPE) position embeddings:
parameters, speed on every engine, and loss beyond the trained context.

Files: `test_positions.py` (the suite), `report.py`, `judge.py`; its sweeps per preset are below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.study import Study


@dataclass(frozen=True)
class PositionSweep:
    """learned / sinusoidal / rope: parameters, speed, and loss beyond the trained context."""

    train_len: int = 64  # context trained at (the learned table holds exactly this many positions)
    steps: int = 150
    batch_size: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)  # every arm is trained once per seed; verdicts pair them by seed
    sinusoidal_embed_scale: bool = True  # the sinusoidal arm scales its embeddings by sqrt(d_model), as Vaswani
    eval_factors: tuple[int, ...] = (1, 2, 4)  # evaluated at train_len x these
    eval_windows: int = 32
    base: str = "gpt2-tiny"  # shapes of the trained models; only `pos` differs
    params_variant: str = "gpt2-small"  # parameters counted at this shape (meta device)
    speed_variant: str = "gpt2-mini"
    speed_prefill: int = 256
    speed_decode: int = 64
    speed_per_shape_compilers: bool = False  # speed on torch-compile too (a few graphs per scheme to compile)


SWEEPS = {
    "quick": (PositionSweep(),),
    "standard": (PositionSweep(steps=400, eval_windows=64, seeds=(0, 1, 2, 3, 4), speed_per_shape_compilers=True),),
}

STUDY = Study(
    name="positions",
    title="Positional embeddings: learned, sinusoidal, RoPE",
    suite=Path(__file__).with_name("test_positions.py"),
    sweeps=SWEEPS,
    records=("positions",),
    report="bench.studies.positions.report",
    judge="bench.studies.positions.judge",
    fields="bench.studies.positions.records",
    untimed=frozenset({("positions", "extrapolation"), ("positions", "params")}),
)
