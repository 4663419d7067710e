"""The decode study: how decode time grows with length, with a KV cache (O(T)) and without (O(T^2)), on
every engine, and ours against transformers' generate on the same weights.

Files: `test_decode.py` (the suite), `report.py` (frames, figures, section, summary), `judge.py`
(claims, regression gates). Its sweeps per preset are below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.study import Study


@dataclass(frozen=True)
class DecodeSweep:
    """One family of decode benchmarks: variants x cache modes x lengths x batch sizes."""

    variants: tuple[str, ...]
    lengths: tuple[int, ...]  # tokens decoded after the prompt
    batches: tuple[int, ...] = (1,)
    caches: tuple[str, ...] = ("none", "raw")  # none: recompute the prefix; raw: the model's own KV cache
    dtype: str = "fp32"
    prompt_len: int = 16
    rounds: int = 5  # timed rounds of the cached mode (cheap: more rounds, steadier slopes)
    uncached_rounds: int = 3  # timed rounds of the uncached mode (expensive at long T)
    uncached_max_len: int | None = None  # the uncached (O(T^2)) mode stops here, when set
    families: tuple[str, ...] | None = None  # only backends of these families (None: every selected backend)
    per_shape_compilers: bool = True  # include engines that compile per shape (torch-compile: seconds a graph)
    first_of_family: bool = False  # only the plain engine of each family and device type (the first the
    # registry lists: eager torch, onnxruntime's plain graph), when selected: sweeps about scaling, not engines


@dataclass(frozen=True)
class PeerSweep:
    """Ours vs transformers' GPT2LMHeadModel.generate on the same weights, on each engine that runs both."""

    variant: str
    lengths: tuple[int, ...]
    caches: tuple[str, ...] = ("raw", "none")
    prompt_len: int = 16
    rounds: int = 3


@dataclass(frozen=True)
class DecodeSweeps:
    """What the decode study runs in one preset."""

    decode: tuple[DecodeSweep, ...] = ()
    peer: tuple[PeerSweep, ...] = ()
    trace_positions: int = 4  # positions at which per-token latency is recorded


_TINY = ("gpt2-tiny", "llama-tiny", "vaswani-tiny")  # learned/rope/sinusoidal x pre_ln/pre_rms/post_ln
_MINI = ("gpt2-mini", "llama-mini", "vaswani-mini")

SWEEPS = {
    "smoke": DecodeSweeps(decode=(
        DecodeSweep(("gpt2-tiny", "llama-tiny"), (8, 16, 32), rounds=1, uncached_rounds=1, prompt_len=4),)),
    "quick": DecodeSweeps(
        decode=(
            DecodeSweep(_TINY, (32, 64, 128, 256, 512), families=("torch",), per_shape_compilers=False),
            DecodeSweep(("gpt2-tiny",), (32, 64, 128, 256, 512), uncached_max_len=256, families=("onnxruntime",),
                        first_of_family=True),
            # GPT-2 124M: the engines side by side (cached, T=32: prompt and decode inside one bucket of 64
            # positions, so a compiled engine compiles one step graph), and the cache's pay-off at T=32 on the plain
            # engine of each family (compiling the uncached forward costs minutes, and says nothing the others
            # do not)
            DecodeSweep(("gpt2-small",), (32,), caches=("raw",), rounds=3),
            DecodeSweep(("gpt2-small",), (32,), caches=("none",), uncached_rounds=2, first_of_family=True),
        ),
        peer=(PeerSweep("gpt2-small", (32,), caches=("raw",), rounds=2),),
    ),
    "standard": DecodeSweeps(
        decode=(
            DecodeSweep(_TINY + _MINI, (64, 128, 256, 512, 1024, 2048), batches=(1, 8), uncached_max_len=1024),
            DecodeSweep(("gpt2-small",), (32, 64, 128, 256), batches=(1, 8), uncached_max_len=64),
        ),
        peer=(PeerSweep("gpt2-small", (32, 128), caches=("raw", "none")),),
    ),
    "full": DecodeSweeps(
        decode=(  # the large models first: a run cut short keeps the figures that matter most
            DecodeSweep(("gpt2-small", "gpt2-medium", "gpt2-large"), (64, 128, 256, 512), uncached_max_len=128,
                        rounds=2, uncached_rounds=1),
            DecodeSweep(("llama-tiny", "gpt2-tiny"), (512, 2048, 8192), uncached_max_len=2048, rounds=1,
                        uncached_rounds=1),
        ),
        peer=(PeerSweep("gpt2-small", (128,), caches=("raw",), rounds=2),),
    ),
}

STUDY = Study(
    name="decode",
    title="Decode scaling: KV cache vs recomputation",
    suite=Path(__file__).with_name("test_decode.py"),
    sweeps=SWEEPS,
    records=("decode",),
    report="bench.studies.decode.report",
    judge="bench.studies.decode.judge",
    fields="bench.studies.decode.records",
    group_by=("decode_tokens",),  # cache modes, kinds and engines compared at one length
)
