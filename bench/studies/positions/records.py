"""The positions study's record fields (params chosen, metrics measured besides time; units in the names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamsParams:
    """Parameters a scheme adds, counted on the meta device."""

    pos: str
    phase: str = "params"


@dataclass(frozen=True)
class ParamsMetrics:
    params: int
    position_params: int


@dataclass(frozen=True)
class SpeedParams:
    """Prefill or cached decode of one model per scheme."""

    phase: str  # prefill | decode
    pos: str
    tokens: int


@dataclass(frozen=True)
class SpeedMetrics:
    """Nothing besides the time."""


@dataclass(frozen=True)
class ExtrapolationParams:
    """One model per scheme trained at train_len, evaluated at multiples of it."""

    pos: str
    train_len: int
    steps: int
    batch: int
    factors: list[int]
    seed: int
    embed_scale: bool  # token embeddings scaled by sqrt(d_model)
    phase: str = "extrapolation"


@dataclass(frozen=True)
class ExtrapolationMetrics:
    by_length: dict[str, dict]  # evaluated length -> bits per byte (all, within, beyond) or the model's error
    train_seconds: float
    val_bpb_at_train_len: float
    unigram_bpb: float  # a byte-frequency model's held-out bits per byte: the floor an arm must beat
    from_cache: bool  # the model of an earlier identical run: nothing was trained now
