"""The INT8 study's record fields (params chosen, metrics measured besides time; units in the names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Int8Params:
    """One scheme and norm policy on one engine: accuracy, size, and cached decode timed."""

    scheme: str  # fp32 or a scheme of SCHEMES
    norms: str  # keep | quantize
    windows: int
    seq_len: int
    decode_tokens: int
    batch: int
    source: str  # reference | checkpoint
    model_description: str  # the model judged on: size, head_dim, training


@dataclass(frozen=True)
class Int8Metrics:
    bits_per_byte: float
    bpb_delta: float  # against the same engine's fp32 model
    bpb_delta_vs_torch_fp32: float
    kl_mean_nats: float  # against the same engine's fp32 model
    top1_agreement: float
    max_abs_logit_delta: float
    kl_vs_torch_fp32_nats: float
    top1_vs_torch_fp32: float
    model_bytes: int  # every byte the model holds (packed int8 weights included)
    quantized_weights_bytes: int  # the quantized layers: int8 weights plus scales
    quantized_weights_fp32_bytes: int  # the same weights in fp32
    window_nats: list[float]  # per held-out window: mean nats per token of this model
    unigram_bpb: float  # a byte-frequency model on the same split: the floor the model must beat
    max_abs_linear_input: float  # the fp32 model's largest |x| entering a quantized projection
    outlier_columns: int  # input columns (over every projection) holding an |x| >= 6, LLM.int8()'s outliers
    # the same engine's fp32 model decoding the same steps right before each timed round (paired rounds)
    fp32_paired_seconds: list[float] | None = None


@dataclass(frozen=True)
class SensitivityParams:
    """One module quantized alone."""

    scheme: str
    module: str
    kind: str  # linear | norm
    windows: int
    phase: str = "sensitivity"


@dataclass(frozen=True)
class SensitivityMetrics:
    kl_mean_nats: float
    top1_agreement: float
    bpb_delta: float
