"""The tying study's record fields (params chosen, metrics measured besides time; units in the names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CountParams:
    """Tied and untied parameter counts of one shape (meta device)."""

    native_tied: bool  # whether the named model ties
    phase: str = "params"


@dataclass(frozen=True)
class CountMetrics:
    tied_params: int
    untied_params: int
    saved_params: int
    saved_share_of_untied: float
    saved_share_of_tied: float


@dataclass(frozen=True)
class QualityParams:
    """A small model trained tied or untied on the same budget."""

    tied: bool
    steps: int
    batch: int
    seq_len: int
    phase: str = "quality"


@dataclass(frozen=True)
class QualityMetrics:
    params: int
    val_bpb: float
    unigram_bpb: float
    train_seconds: float
    from_cache: bool
