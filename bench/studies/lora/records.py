"""The LoRA study's record fields (params chosen, metrics measured besides time; units in the names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VarianceParams:
    """Var(γ B A) with A and B drawn standard normal, against rank."""

    scaling: str  # lora | rslora
    alpha: float
    dim: int
    ranks: list[int]
    phase: str = "variance"


@dataclass(frozen=True)
class VarianceMetrics:
    variance: list[float]  # per rank
    loglog_slope: float
    expected_slope: float


@dataclass(frozen=True)
class FinetuneParams:
    """The reference model's adapters trained on the held-out `adapt` split."""

    scaling: str
    rank: int
    alpha: float
    lr: float
    steps: int
    batch: int
    seq_len: int
    seed: int
    split: str = "adapt"
    phase: str = "finetune"


@dataclass(frozen=True)
class FinetuneMetrics:
    scaling_factor: float  # γ
    adapter_params: int
    train_bpb_curve: list[float]  # bits per byte at every step
    final_train_bpb: float  # mean of the last fifth of the steps
    eval_bpb_before: float
    eval_bpb_after: float
    grad_norm_curve: list[float]  # the adapters' global gradient norm at every step
    mean_grad_norm: float
    unigram_bpb: float  # a byte-frequency model of the fine-tuning text on its held-out part
    from_cache: bool  # the outcome of an earlier identical run (models.memo): nothing was trained now


@dataclass(frozen=True)
class OverheadParams:
    """A forward with no adapter, an unmerged one or a merged one on every projection."""

    mode: str  # none | unmerged | merged
    rank: int
    batch: int
    tokens: int
    phase: str = "overhead"


@dataclass(frozen=True)
class OverheadMetrics:
    adapter_params: int
