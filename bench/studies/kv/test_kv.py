"""The KV-cache studies: what quantized caches (TurboQuant, a uniform baseline) save and what they cost.

- `test_kv_memory`: decode with each cache kind: exact bytes, memory, speed, tokens against raw fp32.
- `test_kv_quantize`: TurboQuant's quantize throughput.
- `test_kv_peak`: peak memory of a filled cache, in a fresh subprocess: resident set on the CPU, the
  allocator's peak (and NVML's view) on CUDA.
- `test_kv_capacity`: bytes per token, where the cache outgrows the weights, and the longest context
  that fits a memory budget, for GPT-2 small to XL and 7B/70B-class shapes (analytic, checked
  against allocated caches).
- `test_kv_accuracy`: on the trained reference model, bits per byte, KL divergence and top-1
  agreement against the raw cache, and per-layer relative error of the attention output.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from bench import backends, harness
from bench.run import ROOT
from bench.studies.kv import STUDY, KVAccuracySweep, KVMemorySweep, KVSweeps
from bench.studies.kv.records import (
    AccuracyMetrics,
    AccuracyParams,
    CacheDecodeMetrics,
    CacheDecodeParams,
    CapacityMetrics,
    CapacityParams,
    PeakMetrics,
    PeakParams,
    QuantizeMetrics,
    QuantizeParams,
    SensitivityMetrics,
    SensitivityParams,
)
from bench.studies.kv.report import kind_with
from bench.studies.kv.sensitivity import PARTS, PartlyQuantizedCache
from models import build, count_params, generate, kv_cache, variants
from models.corpus import NATS_TO_BITS
from models.generate import decode
from models.turboquant import TurboQuantizer
from profiles.memory import MemoryProbe

RAW_FP32, RAW_FP16 = kv_cache.raw_kind(torch.float32), kv_cache.raw_kind(torch.float16)
PAPER_MSE = {1: 0.36, 2: 0.117, 3: 0.03, 4: 0.009}  # TurboQuant's distortion of unit vectors (docs/references.md)


def _sweeps(config: pytest.Config) -> KVSweeps:
    return harness.sweep(config, STUDY) or KVSweeps()


def _peak_backends(config: pytest.Config) -> list[backends.Backend]:
    """The reference (eager) backends selected that take archbench's cache kinds, one per device type: the
    probe runs in a fresh eager process, so it is eager torch's figure (another engine on the same device
    would measure the same thing again under another name)."""
    return [b for b in harness.selected_backends(config, backends.CACHE_KINDS) if b.reference]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sweeps = _sweeps(metafunc.config)
    if "kv_memory_case" in metafunc.fixturenames:
        usable = harness.selected_backends(metafunc.config, backends.CACHE_KINDS)
        cases = [(s, backend.name, kind, length, batch) for s in sweeps.memory for backend in usable
                 for kind in (s.kinds or kv_cache.representative_kinds())
                 if not (backend.compiles_per_shape and s.compiled_kinds is not None and kind not in s.compiled_kinds)
                 for length in s.lengths for batch in s.batches]
        metafunc.parametrize("kv_memory_case", cases,
                             ids=[f"{s.variant}-{b}-{k}-T{t}-B{n}" for s, b, k, t, n in cases])
    if "kv_peak_case" in metafunc.fixturenames:
        cases = [(s, backend.name, kind, length) for s in sweeps.memory for backend in _peak_backends(metafunc.config)
                 for kind in s.probe_kinds for length in s.probe_lengths]
        metafunc.parametrize("kv_peak_case", cases,
                             ids=[f"{s.variant}-{b}-{k}-T{t}-B{s.probe_batch}" for s, b, k, t in cases])
    if "kv_accuracy_case" in metafunc.fixturenames:
        cases = [(s, source, kind) for s in sweeps.accuracy for source in harness.accuracy_sources(metafunc.config)
                 for kind in (s.kinds or kv_cache.kinds())]
        metafunc.parametrize("kv_accuracy_case",
                             [pytest.param(c, marks=harness.reads_model(c[1], c[0].reference)) for c in cases],
                             ids=[f"{s.reference if src == 'reference' else src}-{k}" for s, src, k in cases])
    if "kv_sensitivity_case" in metafunc.fixturenames:
        cases = [(s, bits, layer, part) for s in sweeps.accuracy for bits in s.sensitivity_bits
                 for layer in range(variants.get(s.reference).n_layer) for part in PARTS]
        metafunc.parametrize("kv_sensitivity_case",
                             [pytest.param(c, marks=harness.reads_model("reference", c[0].reference)) for c in cases],
                             ids=[f"{s.reference}-tq{b}-layer{layer}-{part}" for s, b, layer, part in cases])
    if "kv_capacity_variant" in metafunc.fixturenames:
        metafunc.parametrize("kv_capacity_variant", list(sweeps.capacity_variants))
    if "kv_quantize_bits" in metafunc.fixturenames:
        metafunc.parametrize("kv_quantize_bits", list(sweeps.quantize_bits))


def _cpu_model(variant: str):
    return harness.random_model(variant)  # the decode study's model: its prepared engines are shared


def _sha1(tokens: torch.Tensor) -> str:
    return hashlib.sha1(tokens.cpu().numpy().tobytes()).hexdigest()[:16]


def test_kv_memory(benchmark, record, kv_memory_case) -> None:
    sweep, backend_name, kind, length, batch = kv_memory_case
    sweep: KVMemorySweep
    backend = harness.available_or_skip(backends.get(backend_name))
    cfg = variants.get(sweep.variant)
    total = sweep.prompt_len + length
    model, _ = harness.prepared(backend, _cpu_model(sweep.variant))
    device = backend.input_device
    spec = kv_cache.spec(kind)
    reason = backends.cache_reason(backend, spec.probe(cfg))
    if reason:
        pytest.skip(reason)
    prompt = torch.randint(0, cfg.vocab_size, (batch, sweep.prompt_len),
                           generator=torch.Generator().manual_seed(7)).to(device)
    tokens = torch.zeros(batch, total, dtype=torch.long, device=device)
    tokens[:, : sweep.prompt_len] = prompt
    with MemoryProbe(device) as alloc_probe:
        cache_obj = kv_cache.make(kind, cfg, batch, total, device=device)

    round_probes: list[MemoryProbe] = []  # each timed round's memory, read outside its timing

    def prefill(timed_round: bool = True):
        cache_obj.reset()
        logits = harness.synced(model, device)(prompt, cache_obj)[:, -1]  # (B, vocab)
        if timed_round:
            round_probes.append(MemoryProbe(device).__enter__())
        return (logits,), {}

    def round_ended(_logits) -> None:
        round_probes[-1].__exit__(None, None, None)

    with torch.inference_mode():
        (logits,), _ = prefill(timed_round=False)
        decode(model, tokens, sweep.prompt_len, logits, length, cache_obj)  # warm, and the tokens to compare
        if kind == RAW_FP32:  # the raw fp32 cache is the model's own: the same tokens as the model's greedy
            # decode (random weights: no accuracy is judged here, the accuracy test does that)
            assert torch.equal(tokens, generate(model, prompt, length))
        benchmark.pedantic(harness.synced(lambda lg: decode(model, tokens, sweep.prompt_len, lg, length, cache_obj),
                                          device), setup=prefill, teardown=round_ended, rounds=sweep.rounds,
                           warmup_rounds=0)
    probe = round_probes[-1]  # the last round's decode (its prefill untimed and outside the probe)
    record("kv_memory", sweep.variant, backend,
           params=CacheDecodeParams(cache=kind, cache_family=spec.family, bits=spec.code_bits, decode_tokens=length,
                                    prompt_tokens=sweep.prompt_len, batch=batch, max_len=total),
           metrics=asdict(CacheDecodeMetrics(
               kv_bytes=cache_obj.nbytes, bytes_per_token=cache_obj.bytes_per_token,
               bits_per_coordinate=cache_obj.bits_per_coordinate,
               raw_fp16_bytes_per_token=kv_cache.bytes_per_token(RAW_FP16, cfg, batch),
               raw_fp32_bytes_per_token=kv_cache.bytes_per_token(RAW_FP32, cfg, batch),
               weight_bytes=count_params(_cpu_model(sweep.variant)) * 4, tokens_sha1=_sha1(tokens),
               alloc=alloc_probe.reading.as_metrics())) | probe.reading.as_metrics())


def test_kv_quantize(benchmark, record, kv_quantize_bits: int) -> None:
    """Vectors/s of TurboQuant's quantize (rotation, codebook, packing) at head_dim 64, and its measured
    distortion on unit vectors against the paper's bounds."""
    from models.turboquant import TurboQuantizer

    tq = TurboQuantizer(64, kv_quantize_bits, norm_dtype=torch.float32)
    x = torch.randn(65_536, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        unit = x / x.norm(dim=-1, keepdim=True)
        err = (tq.dequantize(tq.quantize(unit)) - unit).pow(2).sum(-1).mean().item()
        assert err == pytest.approx(tq.expected_mse, rel=0.05)  # correct before timed
        benchmark.pedantic(lambda: tq.quantize(x), rounds=5, warmup_rounds=1)
    record("kv_memory", "turboquant", backends.reference("cpu"),
           params=QuantizeParams(bits=kv_quantize_bits, vectors=65_536, head_dim=64),
           metrics=QuantizeMetrics(relative_mse=err, expected_mse=tq.expected_mse, lower_bound=4.0**-kv_quantize_bits,
                                   upper_bound=3**0.5 * math.pi / 2 * 4.0**-kv_quantize_bits,
                                   paper_mse=PAPER_MSE[kv_quantize_bits]))


def test_kv_peak(benchmark, record, kv_peak_case) -> None:
    """Peak memory growth of filling a cache and decoding over it, each in a fresh Python process:
    resident set on the CPU (phase `rss`), the CUDA allocator's peak and NVML's delta on a GPU (`vram`)."""
    sweep, backend_name, kind, length = kv_peak_case
    backend = harness.available_or_skip(backends.get(backend_name))
    result: dict = {}

    def run() -> None:
        cmd = [sys.executable, "-m", "profiles.kv_probe", "--variant", sweep.variant, "--cache", kind,
               "--tokens", str(length), "--batch", str(sweep.probe_batch), "--device", backend.device_type,
               *(["--rope"] if sweep.probe_rope else [])]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    assert result["peak_delta_bytes"] >= result["cache_nbytes"] * (0.5 if backend.device_type == "cpu" else 1.0)
    cuda = backend.device_type == "cuda"
    spec = kv_cache.spec(kind)
    record("kv_memory", sweep.variant, backend,
           params=PeakParams(phase="vram" if cuda else "rss", cache=kind, cache_family=spec.family, bits=spec.code_bits,
                             tokens=length, batch=sweep.probe_batch, pos=result["pos"], measure=result["measure"],
                             device_name=result.get("device_name")),
           metrics=PeakMetrics(peak_delta_bytes=result["peak_delta_bytes"], kv_bytes=result["cache_nbytes"],
                               nvml_delta_bytes=result.get("nvml_delta_bytes")))


def test_kv_capacity(benchmark, record, pytestconfig, kv_capacity_variant: str) -> None:
    """Bytes per token of every kind, where the cache outgrows the weights, the longest context per budget."""
    sweeps = _sweeps(pytestconfig)
    cfg = variants.get(kv_capacity_variant)
    kinds = sweeps.capacity_kinds or tuple(kv_cache.kinds())
    per_token: dict[str, int] = {}

    def compute() -> None:
        for kind in kinds:
            per_token[kind] = kv_cache.bytes_per_token(kind, cfg)

    benchmark.pedantic(compute, rounds=1, warmup_rounds=0)
    # checked against the formula (docs/references.md) and, where this machine can hold it, allocated caches
    if RAW_FP32 in per_token:
        assert per_token[RAW_FP32] == 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim * 4
    if cfg.n_layer * cfg.d_model <= 12 * 768:
        for kind in kinds:
            assert kv_cache.make(kind, cfg, 1, 128).bytes_per_token == per_token[kind], kind
    params = count_params(build(cfg, device="meta"))
    weights_fp16 = params * 2
    budgets = sweeps.capacity_budgets_gib
    capacity = {kind: {str(gib): max(0, (gib * 2**30 - weights_fp16) // b) for gib in budgets}
                for kind, b in per_token.items()}
    record("kv_memory", kv_capacity_variant, harness.ANALYTIC, params=CapacityParams(budgets_gib=list(budgets)),
           metrics=CapacityMetrics(params=params, weight_bytes_fp16=weights_fp16, bytes_per_token=per_token,
                                   families={kind: kv_cache.spec(kind).family for kind in kinds},
                                   outgrows_weights_at_tokens={k: weights_fp16 // b for k, b in per_token.items()},
                                   max_context_tokens=capacity, position_limit_tokens=cfg.position_limit))


@pytest.fixture(scope="module")
def accuracy_setup(request: pytest.FixtureRequest):
    """The model (trained reference, or the user's checkpoint), its validation windows and the raw-cache
    outputs they are compared to."""
    made: dict = {}

    def get(sweep: KVAccuracySweep, source: str):
        if (sweep, source) not in made:
            evals = harness.eval_set(request.config, source, sweep.reference, sweep.seq_len, sweep.windows)
            made[sweep, source] = (evals, _evaluate(evals.model, evals.windows, RAW_FP32))
        return made[sweep, source]

    return get


def _evaluate(model, windows: torch.Tensor, kind: str | Callable[[int, int], object], batch: int = 8,
              **options: object) -> dict:
    """Logits of every window through a cache of `kind` (a kind's name, made with `options`, or a factory of
    caches taking the batch and the length; one prefill: each query attends to the stored, quantized keys,
    as in decoding) and the attention output of every layer."""
    captured: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    hooks = [block.attn.register_forward_hook(lambda m, a, out, i=i: captured[i].append(out.detach()))
             for i, block in enumerate(model.blocks)]
    logits = []
    try:
        with torch.inference_mode():
            for chunk in windows.split(batch):
                inputs = chunk[:, :-1]
                cache_obj = kv_cache.make(kind, model.config, inputs.shape[0], inputs.shape[1], **options) \
                    if isinstance(kind, str) else kind(inputs.shape[0], inputs.shape[1])
                logits.append(model(inputs, cache_obj).float())
    finally:
        for h in hooks:
            h.remove()
    return {"logits": torch.cat(logits), "attn": [torch.cat(c) for c in captured]}


def _against_raw(logits: torch.Tensor, ref: torch.Tensor, targets: torch.Tensor) -> dict:
    """Mean nats per token of `logits` and of the raw cache's `ref`, each window's change, KL and top-1."""
    nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    raw_nats = F.cross_entropy(ref.flatten(0, 1), targets.flatten()).item()
    per_window = [F.cross_entropy(out.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape).mean(1)
                  for out in (logits, ref)]  # 2x (n,): nats per token of each window
    log_p, log_q = F.log_softmax(ref, -1), F.log_softmax(logits, -1)
    return {"nats": nats, "raw_nats": raw_nats, "window_delta": (per_window[0] - per_window[1]).tolist(),
            "kl": (log_p.exp() * (log_p - log_q)).sum(-1).mean().item(),
            "top1": (logits.argmax(-1) == ref.argmax(-1)).float().mean().item(),
            "ppl_delta_pct": (math.exp(nats - raw_nats) - 1) * 100}  # per token


def test_kv_accuracy(benchmark, record, accuracy_setup, kv_accuracy_case) -> None:
    sweep, source, kind = kv_accuracy_case
    evals, raw = accuracy_setup(sweep, source)
    model, windows = evals.model, evals.windows
    spec = kv_cache.spec(kind)
    options = {"key_group": sweep.key_group} if sweep.key_group and "key_group" in spec.options else {}
    result: dict = {}
    benchmark.pedantic(lambda: result.update(_evaluate(model, windows, kind, **options)), rounds=1, warmup_rounds=0)
    targets = windows[:, 1:]
    logits, ref = result["logits"], raw["logits"]
    compared = _against_raw(logits, ref, targets)
    nats, raw_nats, kl, top1 = compared["nats"], compared["raw_nats"], compared["kl"], compared["top1"]
    layer_error = [float((a - b).norm() / b.norm()) for a, b in zip(result["attn"], raw["attn"], strict=True)]
    if kind == RAW_FP32:
        assert kl < 1e-9 and top1 == 1.0  # the comparison itself is sound
    to_bpb = targets.numel() / evals.target_bytes * NATS_TO_BITS  # nats per token -> bits per byte
    bpb, raw_bpb = nats * to_bpb, raw_nats * to_bpb
    record("kv_accuracy", evals.name, backends.reference("cpu"),
           params=AccuracyParams(cache=kind, cache_family=spec.family, bits=spec.code_bits,
                                 windows=int(windows.shape[0]), seq_len=sweep.seq_len, source=source,
                                 model_description=evals.description, exact_key_group=options.get("key_group", 0)),
           metrics=AccuracyMetrics(bits_per_byte=bpb, bpb_delta=bpb - raw_bpb, ppl_delta_pct=compared["ppl_delta_pct"],
                                   kl_mean_nats=kl, top1_agreement=top1,
                                   max_abs_logit_delta=float((logits - ref).abs().max()), layer_rel_error=layer_error,
                                   bytes_per_token=spec.bytes_per_token(model.config),
                                   bits_per_coordinate=spec.bits_per_coordinate(model.config, sweep.seq_len),
                                   marginal_bits=spec.marginal_bits(model.config),
                                   window_nats_delta=compared["window_delta"], unigram_bpb=evals.unigram_bpb))


def test_kv_sensitivity(benchmark, record, accuracy_setup, kv_sensitivity_case) -> None:
    """TurboQuant on one layer's keys or values alone: which part carries a quantized cache's loss."""
    sweep, bits, layer, part = kv_sensitivity_case
    evals, raw = accuracy_setup(sweep, "reference")
    model, windows = evals.model, evals.windows
    cfg = model.config
    quantizer = TurboQuantizer(cfg.head_dim, bits)  # as the TurboQuant cache makes it (seed 0, fp16 norms)
    result: dict = {}
    benchmark.pedantic(lambda: result.update(_evaluate(model, windows, lambda batch, length: PartlyQuantizedCache(
        cfg, batch, length, quantizer, {(layer, part)}))), rounds=1, warmup_rounds=0)
    compared = _against_raw(result["logits"], raw["logits"], windows[:, 1:])
    assert compared["kl"] > 0, f"quantizing layer {layer}'s {part} changed nothing"
    kind = kind_with("turboquant", bits) or f"TurboQuant at {bits} bits"
    record("kv_accuracy", evals.name, backends.reference("cpu"),
           params=SensitivityParams(cache=kind, layer=layer, part=part, windows=int(windows.shape[0]),
                                    seq_len=sweep.seq_len, model_description=evals.description),
           metrics=SensitivityMetrics(ppl_delta_pct=compared["ppl_delta_pct"], kl_mean_nats=compared["kl"],
                                      window_nats_delta=compared["window_delta"]))
