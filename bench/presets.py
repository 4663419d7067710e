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
class Preset:
    """Everything one preset runs."""

    name: str
    description: str
    decode: tuple[DecodeSweep, ...] = ()
    peer: tuple[PeerSweep, ...] = ()
    kv_memory: tuple[KVMemorySweep, ...] = ()
    kv_accuracy: tuple[KVAccuracySweep, ...] = ()
    int8: tuple[Int8Sweep, ...] = ()
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
        "quick", "about 7 minutes on 2 CPU cores (9 the first time): tiny models to 512 tokens, GPT-2 124M at "
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
