"""The KV-cache study's record fields (params chosen, metrics measured besides time; units in the names).
Its records carry study `kv_memory` (decode, quantize, rss/vram, capacity phases) or `kv_accuracy`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CacheDecodeParams:
    """Cached greedy decode through a cache of one kind."""

    cache: str  # the kind (models.kv_cache)
    cache_family: str
    bits: int  # the kind's code bits
    decode_tokens: int
    prompt_tokens: int
    batch: int
    max_len: int  # the cache's capacity in tokens
    phase: str = "decode"


@dataclass(frozen=True)
class CacheDecodeMetrics:
    kv_bytes: int  # every byte the cache holds
    bytes_per_token: int
    bits_per_coordinate: float  # every byte held, metadata included, per stored coordinate
    raw_fp16_bytes_per_token: int
    raw_fp32_bytes_per_token: int
    weight_bytes: int
    tokens_sha1: str
    alloc: dict[str, int]  # the memory the cache's allocation took (profiles.memory.MemoryReading)


@dataclass(frozen=True)
class QuantizeParams:
    """TurboQuant's quantize of Gaussian vectors."""

    bits: int
    vectors: int
    head_dim: int
    quantizer: str = "turboquant"
    phase: str = "quantize"


@dataclass(frozen=True)
class QuantizeMetrics:
    relative_mse: float  # E|x - x̂|² of unit vectors, measured
    expected_mse: float  # the codebook's own expectation
    lower_bound: float  # 4^-b (the paper)
    upper_bound: float  # (√3 π / 2) 4^-b (the paper)
    paper_mse: float  # the paper's figure at these bits


@dataclass(frozen=True)
class PeakParams:
    """Peak memory of a filled cache, in a fresh process (`python -m profiles.kv_probe`)."""

    phase: str  # rss (CPU resident set) | vram (CUDA allocator)
    cache: str
    cache_family: str
    bits: int
    tokens: int
    batch: int
    pos: str
    measure: str  # rss | cuda_allocator
    device_name: str | None = None  # the GPU's name (vram)


@dataclass(frozen=True)
class PeakMetrics:
    peak_delta_bytes: int  # peak growth over filling and 4 decode steps
    kv_bytes: int  # what the cache holds
    nvml_delta_bytes: int | None = None  # NVML's device-wide growth (vram)


@dataclass(frozen=True)
class CapacityParams:
    """Analytic: bytes per token of every kind and the longest context per memory budget."""

    budgets_gib: list[int]
    weights: str = "fp16"
    phase: str = "capacity"


@dataclass(frozen=True)
class CapacityMetrics:
    params: int
    weight_bytes_fp16: int
    bytes_per_token: dict[str, int]  # kind -> bytes
    families: dict[str, str]  # kind -> family
    outgrows_weights_at_tokens: dict[str, int]  # kind -> tokens at which the cache exceeds the weights
    max_context_tokens: dict[str, dict[str, int]]  # kind -> budget (GiB) -> tokens the memory holds (0: the
    # weights alone do not fit), not capped by the model's position limit
    position_limit_tokens: int | None = None  # a learned position table's size: no context beyond it


@dataclass(frozen=True)
class AccuracyParams:
    """Held-out windows through a cache of one kind, against the raw fp32 cache."""

    cache: str
    cache_family: str
    bits: float  # code bits (an outlier split has fractional ones)
    windows: int
    seq_len: int
    source: str  # reference | checkpoint
    model_description: str  # the model judged on: size, head_dim, training
    exact_key_group: int = 0  # keys of the latest incomplete group of this many tokens read exact (0: none)


@dataclass(frozen=True)
class AccuracyMetrics:
    bits_per_byte: float
    bpb_delta: float  # against the raw fp32 cache
    ppl_delta_pct: float  # perplexity change per token, percent
    kl_mean_nats: float
    top1_agreement: float
    max_abs_logit_delta: float
    layer_rel_error: list[float]  # per layer: |a - a_raw| / |a_raw| of the attention output
    bytes_per_token: int
    bits_per_coordinate: float  # every byte a cache of seq_len tokens holds, per coordinate (fixed parts included)
    marginal_bits: float  # what one more token costs per coordinate, metadata included: the equal-bits axis
    window_nats_delta: list[float]  # per held-out window: mean nats per token through this kind minus raw fp32's
    unigram_bpb: float  # a byte-frequency model on the same split: the floor the model must beat


@dataclass(frozen=True)
class SensitivityParams:
    """One layer's keys or values alone quantized (the rest raw fp32), against the raw fp32 cache."""

    cache: str  # the kind whose quantizer is applied
    layer: int
    part: str  # k | v
    windows: int
    seq_len: int
    model_description: str
    phase: str = "sensitivity"


@dataclass(frozen=True)
class SensitivityMetrics:
    ppl_delta_pct: float
    kl_mean_nats: float
    window_nats_delta: list[float]
