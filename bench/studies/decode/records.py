"""The decode study's record fields: what each benchmark chose (params) and measured besides its time
(metrics), with units in the names. The report half reads them as `p_<field>` and `m_<field>` columns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DecodeParams:
    """T greedy steps timed after an untimed prefill of the prompt."""

    cache: str  # none (each step recomputes the whole prefix) | raw (the model's own KV cache)
    decode_tokens: int  # T: tokens decoded after the prompt
    prompt_tokens: int
    batch: int
    dtype: str  # fp32 | fp16 | bf16
    pos: str  # the model's positional embedding
    norm: str  # the model's norm placement
    phase: str = "decode"


@dataclass(frozen=True)
class DecodeMetrics:
    kv_bytes: int  # every byte the cache held (0 without one)
    weight_bytes: int  # weights streamed per step
    bytes_read: int  # weights and cache read over the T steps (the roofline's bytes)
    ceiling_Bps: float  # the session's read ceiling on the device
    step_latency_s: dict[str, float]  # position -> seconds of one step there (device synchronised)
    tokens_sha1: str  # hash of every token decoded (cached and uncached runs must agree)
    calibration_s: list[float]  # per round: the fixed workload timed just before it
    paired_cached_s: list[float]  # per uncached round at the longest length: the cached run beside it
    ceiling_before_Bps: list[float]  # per cached round: the read bandwidth probed right before it
    ceiling_after_Bps: list[float]  # ... and right after it
    warmup_s: float = 0.0  # the untimed correctness check before the rounds: a compiled engine compiles there
    graphs_compiled: int = 0  # graphs torch.compile compiled for this case (0 on engines that do not compile)
    prepare_s: float = 0.0  # Backend.prepare of this model: export and fusion (unless cached on disk), session
    fused_ops: dict[str, int] = field(default_factory=dict)  # an exported graph's fused op types and counts
    # Serving figures, as vLLM's and optimum-benchmark's reports name them, from one instrumented cached run
    # (every step timed on its own, the device synchronised): None without a cache.
    ttft_s: float | None = None  # time to first token: the prompt's prefill plus the first decode step
    tpot_mean_s: float | None = None  # time per output token after the first: mean over the steps
    tpot_p50_s: float | None = None  # ... median, 90th and 99th percentile over the steps
    tpot_p90_s: float | None = None
    tpot_p99_s: float | None = None
    energy_j: list[float] = field(default_factory=list)  # per timed round: the device's energy counter's rise
    # (NVML on NVIDIA GPUs, RAPL on CPUs; empty where there is none: machine_info says why)


@dataclass(frozen=True)
class PrefillParams:
    """One forward over the prompt filling a fresh cache."""

    prompt_tokens: int
    batch: int
    dtype: str
    pos: str
    norm: str
    cache: str = "raw"
    phase: str = "prefill"


@dataclass(frozen=True)
class PrefillMetrics:
    kv_bytes: int


@dataclass(frozen=True)
class PeerParams:
    """Greedy generate, prefill included, by ours or by transformers on the same weights and engine."""

    impl: str  # archbench | transformers
    cache: str  # raw | none
    decode_tokens: int
    prompt_tokens: int
    batch: int = 1
    dtype: str = "fp32"
    phase: str = "peer"


@dataclass(frozen=True)
class PeerMetrics:
    tokens_identical: bool  # ours and transformers' tokens are the same
    tokens_sha1: str
