"""The LoRA study: LoRA (gamma = alpha / r) against rank-stabilised LoRA (gamma = alpha / sqrt(r)): the
variance of the scaled update against rank, fine-tuning against rank, and an adapter's overhead.

Files: `test_lora.py` (the suite), `report.py`, `judge.py`; its sweeps per preset are below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.study import Study


@dataclass(frozen=True)
class LoraSweep:
    """LoRA vs rsLoRA: the variance of the scaled update vs rank, fine-tuning vs rank, adapter overhead."""

    variance_ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    variance_dim: int = 256
    ranks: tuple[int, ...] = (2, 128)  # fine-tuning ranks
    alpha: float = 16.0
    lrs: tuple[float, ...] = (1e-3, 4e-3)  # each (scaling, rank) is judged at its best learning rate of these
    seeds: tuple[int, ...] = (0, 1, 2)  # adapter initialisation and data order; verdicts pair them by seed
    steps: int = 30
    batch_size: int = 16
    seq_len: int = 128
    eval_windows: int = 32
    reference: str = "gpt2-tiny-hd64"  # the trained reference model (models.reference)
    overhead_variant: str = "gpt2-mini"
    overhead_rank: int = 16
    overhead_per_shape_compilers: bool = False  # also time the adapters on engines that compile per shape (three
    # graphs to compile: no adapter, unmerged, merged)


SWEEPS = {
    "quick": (LoraSweep(),),
    "standard": (LoraSweep(ranks=(2, 8, 32, 128, 512), lrs=(3e-4, 1e-3, 3e-3, 1e-2), seeds=(0, 1, 2, 3, 4), steps=150,
                           eval_windows=64, overhead_per_shape_compilers=True),),
}

STUDY = Study(
    name="lora",
    title="LoRA vs rank-stabilised LoRA",
    suite=Path(__file__).with_name("test_lora.py"),
    sweeps=SWEEPS,
    records=("lora",),
    report="bench.studies.lora.report",
    judge="bench.studies.lora.judge",
    fields="bench.studies.lora.records",
    untimed=frozenset({("lora", "finetune"), ("lora", "variance")}),
)
