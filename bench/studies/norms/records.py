"""The norms study's record fields (params chosen, metrics measured besides time; units in the names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradientsParams:
    """Per-layer MLP gradient norms at initialisation."""

    norm: str  # post_ln | pre_ln | pre_rms
    depth: int
    init: str  # xavier | gpt2
    phase: str = "gradients"


@dataclass(frozen=True)
class GradientsMetrics:
    mlp_grad_norm_by_layer: list[float]
    last_over_first: float


@dataclass(frozen=True)
class StabilityParams:
    """Training at a high learning rate with no warm-up and no clipping."""

    norm: str
    seed: int
    lr: float
    steps: int
    warmup: int  # linear warm-up steps (0: none)
    grad_clip: float = 0
    phase: str = "stability"


@dataclass(frozen=True)
class StabilityMetrics:
    train_bpb_curve: list[float | None]  # bits per byte per step (None where not finite)
    final_train_bpb: float | None
    val_bpb: float | None
    unigram_bpb: float
    failed: bool  # a non-finite loss, or a held-out loss within 0.1 bits/byte of the unigram model's
    from_cache: bool  # the outcome of an earlier identical run (models.memo): nothing was trained now


@dataclass(frozen=True)
class SpeedParams:
    """One norm layer's forward on an engine."""

    impl: str  # layernorm | rmsnorm | torch_rmsnorm
    width: int
    rows: int
    fused: bool  # the engine fuses ops (a compiler or graph optimiser); eager torch runs them one by one
    phase: str = "speed"


@dataclass(frozen=True)
class SpeedMetrics:
    graph_ops: list[str]  # the op types of the engine's graph, where it has one


@dataclass(frozen=True)
class ShareParams:
    """A profiled cached decode: how much of a step the norms take."""

    norm: str  # the model's norm placement and kind
    tokens: int  # decode steps profiled
    phase: str = "share"


@dataclass(frozen=True)
class ShareMetrics:
    seconds_by_class: dict[str, float]  # profiled time per op class (attention, mlp, norm, head, embedding)
    norm_share: float  # the norms' part of the classified time
