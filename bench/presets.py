"""Presets: what each study measures at each size of run. Benchmarks are parametrised from here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DecodeSweep:
    """One family of decode benchmarks: variants x cache modes x lengths x batch sizes."""

    variants: tuple[str, ...]
    lengths: tuple[int, ...]  # tokens decoded after the prompt
    batches: tuple[int, ...] = (1,)
    caches: tuple[str, ...] = ("none", "raw")
    dtype: str = "fp32"
    prompt_len: int = 16
    rounds: int = 5  # timed rounds of the cached mode (cheap: more rounds, steadier slopes)
    uncached_rounds: int = 3  # timed rounds of the uncached mode (expensive at long T)
    uncached_max_len: int | None = None  # the uncached (O(T^2)) mode stops here, when set
    backends: tuple[str, ...] | None = None  # only these backends (None: every selected backend)


@dataclass(frozen=True)
class PeerSweep:
    """Ours vs transformers' GPT2LMHeadModel.generate on the same weights."""

    variant: str
    lengths: tuple[int, ...]
    caches: tuple[str, ...] = ("raw", "none")
    prompt_len: int = 16
    rounds: int = 3


KV_KINDS = ("raw-fp32", "raw-fp16", "raw-bf16", "tq2", "tq3", "tq4", "uniform2", "uniform3", "uniform4")


@dataclass(frozen=True)
class KVMemorySweep:
    """Cache kinds x lengths x batches: exact bytes, peak memory, decode speed with each kind."""

    variant: str
    lengths: tuple[int, ...]
    kinds: tuple[str, ...] = KV_KINDS
    batches: tuple[int, ...] = (1,)
    prompt_len: int = 16
    rounds: int = 2
    probe_lengths: tuple[int, ...] = ()  # lengths also measured for peak memory in a fresh process (kv_probe)
    probe_kinds: tuple[str, ...] = ("raw-fp32", "raw-fp16", "tq3")
    probe_batch: int = 1
    probe_rope: bool = True  # probe with RoPE positions (random weights): no learned-table length limit


@dataclass(frozen=True)
class KVAccuracySweep:
    """Cache kinds on the trained reference model: bits per byte, KL, top-1 agreement, per-layer error."""

    kinds: tuple[str, ...] = KV_KINDS
    windows: int = 48  # validation windows
    seq_len: int = 128  # tokens per window (the reference model's training context)
    reference: str = "gpt2-tiny"


@dataclass(frozen=True)
class Int8Sweep:
    """INT8 schemes x norm policies x backends on the trained reference model, plus a per-layer sweep."""

    schemes: tuple[str, ...] = ("weight_only", "w8a8", "llm_int8", "torch_dynamic", "ort_dynamic", "ort_static")
    norms: tuple[str, ...] = ("keep", "quantize")
    windows: int = 32  # validation windows for bits per byte, KL and top-1
    seq_len: int = 128
    decode_tokens: int = 64  # cached greedy steps timed for tokens/s
    rounds: int = 3
    sensitivity_scheme: str | None = "w8a8"  # the per-layer sweep (torch-cpu); None: skip it
    sensitivity_windows: int = 16
    reference: str = "gpt2-tiny"


@dataclass(frozen=True)
class LoraSweep:
    """LoRA vs rsLoRA: the variance of the scaled update vs rank, fine-tuning vs rank, adapter overhead."""

    variance_ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    variance_dim: int = 256
    ranks: tuple[int, ...] = (2, 16, 128)  # fine-tuning ranks
    alpha: float = 16.0
    lr: float = 1e-3
    steps: int = 40
    batch_size: int = 16
    seq_len: int = 128
    eval_windows: int = 32
    reference: str = "gpt2-tiny"
    overhead_variant: str = "gpt2-mini"
    overhead_rank: int = 16


@dataclass(frozen=True)
class PositionSweep:
    """learned / sinusoidal / rope: parameters, speed, and loss beyond the trained context."""

    train_len: int = 64  # context trained at (the learned table holds exactly this many positions)
    steps: int = 150
    batch_size: int = 16
    eval_factors: tuple[int, ...] = (1, 2, 4)  # evaluated at train_len x these
    eval_windows: int = 32
    base: str = "gpt2-tiny"  # shapes of the trained models; only `pos` differs
    speed_variant: str = "gpt2-mini"
    speed_prefill: int = 256
    speed_decode: int = 64


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


@dataclass(frozen=True)
class TyingSweep:
    """Tied vs untied: exact parameter counts, and quality at equal training budget."""

    variants: tuple[str, ...] = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-3.2-1b",
                                 "llama-2-7b", "mistral-7b", "llama-3-8b", "llama-2-70b")
    train_steps: int = 150
    batch_size: int = 16
    seq_len: int = 64
    base: str = "gpt2-tiny"


@dataclass(frozen=True)
class Preset:
    """Everything one preset runs."""

    name: str
    description: str
    decode: tuple[DecodeSweep, ...] = ()
    peer: tuple[PeerSweep, ...] = ()
    kv_memory: tuple[KVMemorySweep, ...] = ()
    kv_accuracy: tuple[KVAccuracySweep, ...] = ()
    int8: tuple[Int8Sweep, ...] = ()
    lora: tuple[LoraSweep, ...] = ()
    positions: tuple[PositionSweep, ...] = ()
    norms: tuple[NormSweep, ...] = ()
    tying: tuple[TyingSweep, ...] = ()
    trace_positions: int = 4  # positions at which per-token latency is recorded
    extra: dict = field(default_factory=dict)


_TINY = ("gpt2-tiny", "llama-tiny", "vaswani-tiny")  # learned/rope/sinusoidal x pre_ln/pre_rms/post_ln
_MINI = ("gpt2-mini", "llama-mini", "vaswani-mini")

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        "smoke", "a few seconds: the harness end to end (tests use it)",
        decode=(DecodeSweep(("gpt2-tiny", "llama-tiny"), (8, 16, 32), rounds=1, uncached_rounds=1, prompt_len=4),),
        kv_memory=(KVMemorySweep("gpt2-tiny", (16, 32), kinds=("raw-fp32", "tq3", "uniform3"), rounds=1,
                                 prompt_len=4),),
    ),
    "quick": Preset(
        "quick", "10-12 minutes on 2 CPU cores (13 the first time): tiny models to 512 tokens, GPT-2 124M at "
        "short lengths, onnxruntime beside torch, the KV-cache studies",
        decode=(
            DecodeSweep(_TINY, (32, 64, 128, 256, 512), backends=("torch-cpu", "torch-cuda")),
            DecodeSweep(("gpt2-tiny",), (32, 64, 128, 256, 512), uncached_max_len=256, backends=("onnxruntime",)),
            DecodeSweep(("gpt2-small",), (32, 64, 128), uncached_max_len=32, rounds=3, uncached_rounds=2),
        ),
        peer=(PeerSweep("gpt2-small", (32,), caches=("raw",), rounds=2),),
        kv_memory=(KVMemorySweep("gpt2-small", (64,), kinds=("raw-fp32", "raw-fp16", "tq3", "uniform3"),
                                 probe_lengths=(8192,), probe_kinds=("raw-fp16", "tq3")),),
        kv_accuracy=(KVAccuracySweep(windows=32),),
        int8=(Int8Sweep(),),
        lora=(LoraSweep(),),
        positions=(PositionSweep(),),
        norms=(NormSweep(),),
        tying=(TyingSweep(),),
    ),
    "standard": Preset(
        "standard", "tens of minutes on a CPU: tiny and mini models to 2048 tokens at batch 1 and 8",
        decode=(
            DecodeSweep(_TINY + _MINI, (64, 128, 256, 512, 1024, 2048), batches=(1, 8), uncached_max_len=1024),
            DecodeSweep(("gpt2-small",), (32, 64, 128, 256), batches=(1, 8), uncached_max_len=64),
        ),
        peer=(PeerSweep("gpt2-small", (32, 128), caches=("raw", "none")),),
        kv_memory=(KVMemorySweep("gpt2-small", (128, 512, 1000), batches=(1, 8), probe_lengths=(8192, 32768)),),
        kv_accuracy=(KVAccuracySweep(),),
        int8=(Int8Sweep(windows=96, decode_tokens=128, sensitivity_windows=32),),
        lora=(LoraSweep(ranks=(2, 8, 32, 128, 512), steps=150, eval_windows=64),),
        positions=(PositionSweep(steps=400, eval_windows=64),),
        norms=(NormSweep(stability_steps=200, stability_seeds=(0, 1, 2)),),
        tying=(TyingSweep(train_steps=300, batch_size=32, seq_len=128),),
    ),
    "full": Preset(
        "full", "for a GPU (about 6 minutes on an H200): GPT-2 124M to 774M, tiny models to 8192 tokens, "
        "KV-cache memory of gpt2-medium at 16k-64k tokens and batch 8, the INT8 study",
        decode=(  # the large models first: a run cut short keeps the figures that matter most
            DecodeSweep(("gpt2-small", "gpt2-medium", "gpt2-large"), (64, 128, 256, 512), uncached_max_len=128,
                        rounds=2, uncached_rounds=1),
            DecodeSweep(("llama-tiny", "gpt2-tiny"), (512, 2048, 8192), uncached_max_len=2048, rounds=1,
                        uncached_rounds=1),
        ),
        peer=(PeerSweep("gpt2-small", (128,), caches=("raw",), rounds=2),),
        kv_memory=(KVMemorySweep("gpt2-medium", (256,), kinds=("raw-fp16", "tq3"), batches=(8,),
                                 probe_lengths=(16384, 32768, 65536), probe_kinds=("raw-fp16", "tq3"),
                                 probe_batch=8),),
        int8=(Int8Sweep(windows=64, decode_tokens=128),),
    ),
}


def get(name: str) -> Preset:
    """The preset called `name`; a miss lists the valid names."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid names: {', '.join(PRESETS)}")
    return PRESETS[name]
