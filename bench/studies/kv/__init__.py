"""The KV-cache study: what the cache kinds (`models.kv_cache`: raw, TurboQuant, a uniform baseline, and any
kind registered later) hold, cost and lose: exact bytes, peak memory, decode speed, accuracy on the
trained reference model, and capacity up to 70B-class shapes.

Files: `test_kv.py` (the suite), `report.py`, `judge.py`. Its sweeps per preset are below; a sweep
whose `kinds` is None takes its kinds from the registry (one per family, or all of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.study import Study


@dataclass(frozen=True)
class KVMemorySweep:
    """Cache kinds x lengths x batches: exact bytes, peak memory, decode speed with each kind."""

    variant: str
    lengths: tuple[int, ...]
    kinds: tuple[str, ...] | None = None  # None: one kind per family (`kv_cache.representative_kinds`)
    batches: tuple[int, ...] = (1,)
    prompt_len: int = 16
    rounds: int = 2
    probe_lengths: tuple[int, ...] = ()  # lengths also measured for peak memory in a fresh process (kv_probe)
    probe_kinds: tuple[str, ...] = ("raw-fp32", "raw-fp16", "tq3")
    probe_batch: int = 1
    probe_rope: bool = True  # probe with RoPE positions (random weights): no learned-table length limit
    compiled_kinds: tuple[str, ...] | None = None  # the kinds engines that compile per shape also run (None: all;
    # each kind compiles a prompt graph and a step graph per bucket on them: seconds each)


@dataclass(frozen=True)
class KVAccuracySweep:
    """Cache kinds on the trained reference model: bits per byte, KL, top-1 agreement, per-layer error."""

    kinds: tuple[str, ...] | None = None  # None: every registered kind
    windows: int = 48  # validation windows
    seq_len: int = 128  # tokens per window (the reference model's training context)
    reference: str = "gpt2-tiny-hd64"  # the trained reference model (models.reference)
    sensitivity_bits: tuple[int, ...] = (3,)  # TurboQuant at these bits on one layer's keys or values alone
    key_group: int = 32  # every quantized kind reads the keys of the latest incomplete group this long exact
    # (the uniform baseline must: it quantizes keys per channel over whole groups; the others are offered the same)


CAPACITY_VARIANTS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-2-7b", "llama-3-8b", "llama-2-70b")


@dataclass(frozen=True)
class KVSweeps:
    """What the KV-cache study runs in one preset."""

    memory: tuple[KVMemorySweep, ...] = ()
    accuracy: tuple[KVAccuracySweep, ...] = ()
    capacity_variants: tuple[str, ...] = ()  # analytic bytes and capacity (meta device: no memory needed)
    capacity_kinds: tuple[str, ...] | None = None  # None: every registered kind
    capacity_budgets_gib: tuple[int, ...] = (8, 24, 80)
    quantize_bits: tuple[int, ...] = ()  # TurboQuant quantize throughput and distortion at head_dim 64


SWEEPS = {
    "smoke": KVSweeps(memory=(KVMemorySweep("gpt2-tiny", (16, 32), rounds=1, prompt_len=4),),
                      capacity_variants=CAPACITY_VARIANTS, quantize_bits=(1, 2, 3, 4)),
    "quick": KVSweeps(
        # quantized kinds on a compiled engine compile for minutes on GPT-2 124M (freezing skips inductor's cache):
        # the standard preset runs them
        memory=(KVMemorySweep("gpt2-small", (48,), kinds=("raw-fp32", "raw-fp16", "tq3", "uniform3"),
                              compiled_kinds=(), probe_lengths=(8192,), probe_kinds=("raw-fp16", "tq3")),),
        accuracy=(KVAccuracySweep(windows=32),),
        capacity_variants=CAPACITY_VARIANTS, capacity_kinds=("raw-fp32", "raw-fp16", "tq4", "tq3", "tq2", "uniform3"),
        quantize_bits=(1, 2, 3, 4)),
    "standard": KVSweeps(
        memory=(KVMemorySweep("gpt2-small", (128, 512, 1000), batches=(1, 8),
                              kinds=("raw-fp32", "raw-fp16", "raw-bf16", "tq2", "tq3", "tq4", "uniform2", "uniform3",
                                     "uniform4"), compiled_kinds=(), probe_lengths=(8192, 32768)),
                # every engine, compiled ones included, at the quick preset's length (one bucket of 64 positions)
                KVMemorySweep("gpt2-small", (48,), kinds=("raw-fp16", "tq3", "uniform3"))),
        accuracy=(KVAccuracySweep(), KVAccuracySweep(reference="gpt2-mini-hd64")),
        capacity_variants=CAPACITY_VARIANTS, capacity_kinds=("raw-fp32", "raw-fp16", "tq4", "tq3", "tq2", "uniform3"),
        quantize_bits=(1, 2, 3, 4)),
    "full": KVSweeps(
        memory=(KVMemorySweep("gpt2-medium", (256,), kinds=("raw-fp16", "tq3"), batches=(8,),
                              probe_lengths=(16384, 32768, 65536), probe_kinds=("raw-fp16", "tq3"), probe_batch=8),),
        capacity_variants=CAPACITY_VARIANTS, capacity_kinds=("raw-fp32", "raw-fp16", "tq4", "tq3", "tq2", "uniform3"),
        quantize_bits=(1, 2, 3, 4)),
}

STUDY = Study(
    name="kv",
    title="Quantized KV caches: TurboQuant vs raw and a uniform baseline",
    suite=Path(__file__).with_name("test_kv.py"),
    sweeps=SWEEPS,
    records=("kv_memory", "kv_accuracy"),
    report="bench.studies.kv.report",
    judge="bench.studies.kv.judge",
    fields="bench.studies.kv.records",
    group_by=("decode_tokens",),  # cache modes, kinds and engines compared at one length
    # accuracy evaluations, fresh-process memory probes and analytic counts: their time is not the measurement
    untimed=frozenset({("kv_accuracy", "*"), ("kv_memory", "rss"), ("kv_memory", "vram"),
                       ("kv_memory", "capacity")}),
)
