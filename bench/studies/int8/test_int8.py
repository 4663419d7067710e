"""The INT8 study: what each scheme costs in accuracy on each backend, with norms kept or quantized.

On the trained reference model, for every scheme x norm policy x backend that can run it (`SCHEMES`
says what each needs): validation bits per byte and its change, mean KL divergence and top-1 agreement
against the same backend's fp32 model and against eager torch fp32 on the CPU, max |delta logit|,
model bytes; the timed work is cached greedy decode (tokens/s). `test_int8_sensitivity` quantizes one
layer or one norm at a time (eager torch on the CPU).

- Module transforms (eager torch): ours (`models.int8`: `weight_only`, `w8a8`, `llm_int8`) and torchao's
  int8 weight-only and dynamic-activation configs. The `quantize` norm policy wraps the norms in every case.
- Graph quantization (onnxruntime): `ort_dynamic` (its LayerNormalization stays float, so only `keep`
  applies) and `ort_static` (QDQ, calibrated on training windows; `keep` excludes LayerNormalization,
  `quantize` includes it in Q/DQ).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench import backends, harness
from bench.studies.int8 import SCHEMES, STUDY, Int8Sweep
from bench.studies.int8.records import Int8Metrics, Int8Params, SensitivityMetrics, SensitivityParams
from models import build, variants
from models.corpus import NATS_TO_BITS
from models.generate import decode
from models.int8 import (
    OUTLIER_THRESHOLD,
    model_bytes,
    norm_names,
    onnx_unsupported_reason,
    quantize_int8,
    target_names,
)


@dataclass(frozen=True)
class Int8Case:
    sweep: Int8Sweep
    backend: str
    scheme: str  # "fp32" or a scheme of SCHEMES
    norms: str
    source: str = "reference"  # or "checkpoint" (--weights)

    @property
    def id(self) -> str:
        model = self.sweep.reference if self.source == "reference" else self.source
        return f"{model}-{self.backend}-{self.scheme}-{self.norms}"


def _runs(backend: backends.Backend, scheme: str) -> bool:
    """Whether `backend` can run `scheme` at all (the feature it needs, on its device type)."""
    need = SCHEMES[scheme]
    return (backend.supports(torch.float32, need.feature) is None
            and (need.device_types is None or backend.device_type in need.device_types))


def _cases(config: pytest.Config) -> list[Int8Case]:
    out = []
    for sweep in harness.sweep(config, STUDY) or ():
        for source in harness.accuracy_sources(config):
            for backend in harness.selected_backends(config, backends.DECODE):
                compiled = backend.compiles_per_shape  # each case compiles: the sweep's short list, norms kept
                chosen = [s for s in sweep.schemes if not compiled or s in sweep.compiled_schemes]
                schemes = [Int8Case(sweep, backend.name, s, n, source) for s in chosen if _runs(backend, s)
                           for n in (("keep",) if compiled else sweep.norms)]
                if schemes:  # the engine's fp32 model is what its schemes are compared with
                    out += [Int8Case(sweep, backend.name, "fp32", "keep", source), *schemes]
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "int8_case" in metafunc.fixturenames:
        cases = _cases(metafunc.config)
        metafunc.parametrize("int8_case", [pytest.param(c, marks=harness.reads_model(c.source, c.sweep.reference))
                                           for c in cases], ids=[c.id for c in cases])
    if "int8_sensitivity_case" in metafunc.fixturenames:
        cases = []
        if harness.reference_backend(metafunc.config, "cpu") is not None:
            for sweep in harness.sweep(metafunc.config, STUDY) or ():
                if sweep.sensitivity_scheme:
                    shapes = build(variants.get(sweep.reference), device="meta")  # names without training
                    cases += [(sweep, name) for name in target_names(shapes) + norm_names(shapes)]
        metafunc.parametrize("int8_sensitivity_case",
                             [pytest.param(c, marks=harness.reads_model("reference", c[0].reference)) for c in cases],
                             ids=[f"{s.reference}-{n}" for s, n in cases])


def _evals(config: pytest.Config, case: Int8Case) -> harness.EvalSet:
    return harness.eval_set(config, case.source, case.sweep.reference, case.sweep.seq_len, case.sweep.windows)


def _logits(model, windows: torch.Tensor, device: torch.device, batch: int = 8) -> torch.Tensor:
    """Logits of every window (prefill, no cache) on `device`, returned on the CPU in fp32."""
    with torch.inference_mode():
        return torch.cat([model(chunk[:, :-1].to(device)).float().cpu() for chunk in windows.split(batch)])


@cache
def _torch_fp32_logits(evals: harness.EvalSet) -> torch.Tensor:
    """Eager torch fp32 on the CPU: the one reference every backend and scheme is also compared with."""
    return _logits(evals.model, evals.windows, torch.device("cpu"))


@cache
def _backend_fp32_logits(backend: backends.Backend, evals: harness.EvalSet) -> torch.Tensor:
    """The engine's own fp32 model on every window (prepared once per engine: a compiled engine compiles)."""
    return _logits(harness.prepare_or_skip(backend, evals.model), evals.windows, backend.input_device)


@cache
def _outliers(evals: harness.EvalSet) -> tuple[float, int]:
    """The fp32 model's largest |x| entering any quantized projection over the held-out windows, and the
    number of input columns (summed over the projections) that hold an |x| >= LLM.int8()'s threshold."""
    largest, columns = 0.0, 0
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def pre(module, args) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).abs()  # (tokens, in)
            peak = x.amax(0)  # (in,)
            seen[name] = torch.maximum(seen[name], peak) if name in seen else peak
        return pre

    handles = [evals.model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in target_names(evals.model)]
    try:
        _logits(evals.model, evals.windows, torch.device("cpu"))
    finally:
        for h in handles:
            h.remove()
    for peak in seen.values():
        largest = max(largest, float(peak.max()))
        columns += int((peak >= OUTLIER_THRESHOLD).sum())
    return largest, columns


def _window_nats(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Mean nats per token of each window, (n,) as a list."""
    nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (n * T,)
    return nats.view(targets.shape).mean(1).tolist()


def _compare(logits: torch.Tensor, ref: torch.Tensor, targets: torch.Tensor, target_bytes: int) -> dict:
    """bits per byte of `logits`, and KL / top-1 / max |delta| against `ref` (both (n, T, vocab))."""
    log_p, log_q = F.log_softmax(ref, -1), F.log_softmax(logits, -1)
    nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
    return {
        "bits_per_byte": nats * NATS_TO_BITS / target_bytes,
        "kl_mean_nats": (log_p.exp() * (log_p - log_q)).sum(-1).mean().item(),
        "top1_agreement": (logits.argmax(-1) == ref.argmax(-1)).float().mean().item(),
        "max_abs_logit_delta": (logits - ref).abs().max().item(),
    }


def _quantized(backend: backends.Backend, base, case: Int8Case, directory: Path, config: pytest.Config):
    """The case's model on `backend`: its fp32 model, a module transform prepared on it, or its own graph
    quantization."""
    scheme = SCHEMES[case.scheme]
    if scheme.feature == backends.DECODE:  # the engine's own fp32 model
        return harness.prepare_or_skip(backend, base)
    if scheme.feature == backends.GRAPH_QUANTIZATION:
        calibration = []
        if scheme.calibrates:
            calibration = harness.calibration_windows(config, case.source, case.sweep.seq_len,
                                                      case.sweep.calibration_windows).split(1)
        try:
            return backend.quantize(base, case.scheme, case.norms, directory, calibration)
        except backends.CannotPrepareError as exc:
            pytest.skip(f"{backend.name} cannot quantize {case.scheme}: {exc}")
    try:
        transformed = scheme.transform(base, norms=case.norms)
    except RuntimeError as exc:  # a peer library this environment lacks
        pytest.skip(f"{case.scheme}: {exc}")
    return harness.prepare_or_skip(backend, transformed)


def _torch_bytes(model: torch.nn.Module) -> tuple[int, int, int]:
    """(bytes the model holds, int8 weight elements, bytes of their scales and zero points): ours hold
    `weight_int8` and `weight_scale`; torchao's weights are tensor subclasses holding `qdata` and the rest."""
    total, elements, scale_bytes = model_bytes(model), 0, 0
    for module in model.modules():
        if hasattr(module, "weight_int8"):
            elements += module.weight_int8.numel()
            scale_bytes += module.weight_scale.numel() * module.weight_scale.element_size()
        elif isinstance(module, torch.nn.Linear) and hasattr(module.weight, "qdata"):
            held = model_bytes(torch.nn.ParameterList([module.weight]))
            elements += module.weight.qdata.numel()
            scale_bytes += held - module.weight.qdata.numel() * module.weight.qdata.element_size()
    return total, elements, scale_bytes


def _graph_bytes(path: Path) -> tuple[int, int, int]:
    """(all initializer bytes, int8 weight elements, bytes of the quantization scales) of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    int8 = sum(a.size for a in arrays.values() if a.dtype.itemsize == 1)
    scales = sum(a.nbytes for name, a in arrays.items() if name.endswith("_scale") or name.endswith("_zero_point"))
    return sum(a.nbytes for a in arrays.values()), int8, scales


def _bytes(model) -> tuple[int, int, int]:
    """What the model holds: counted on its modules (torch, eager or the module a compiled engine runs) or
    on its graph file (an exported engine)."""
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "model", None)
    return _torch_bytes(module) if isinstance(module, torch.nn.Module) else _graph_bytes(model.path)


SETTLE_S = 0.05  # between the two engines' rounds: a runtime's worker threads spin a while after a run


def test_int8(benchmark, record, int8_case: Int8Case, tmp_path: Path, pytestconfig: pytest.Config) -> None:
    case = int8_case
    sweep = case.sweep
    backend = harness.available_or_skip(backends.get(case.backend))
    if SCHEMES[case.scheme].feature == backends.GRAPH_QUANTIZATION:
        reason = onnx_unsupported_reason(case.scheme, case.norms)
        if reason:
            pytest.skip(reason)
    evals = _evals(pytestconfig, case)
    base, windows, nbytes_text = evals.model, evals.windows, evals.target_bytes
    targets = windows[:, 1:]
    torch_fp32 = _torch_fp32_logits(evals)
    device = backend.input_device
    model = _quantized(backend, base, case, tmp_path, pytestconfig)
    nbytes, int8_elements, scale_bytes = _bytes(model)
    logits = _logits(model, windows, device)
    same_backend_fp32 = _backend_fp32_logits(backend, evals)
    vs_backend = _compare(logits, same_backend_fp32, targets, nbytes_text)
    vs_torch = _compare(logits, torch_fp32, targets, nbytes_text)
    fp32_bpb = _compare(same_backend_fp32, torch_fp32, targets, nbytes_text)["bits_per_byte"]
    torch_fp32_bpb = _compare(torch_fp32, torch_fp32, targets, nbytes_text)["bits_per_byte"]
    # the same first batch again (per-tensor dynamic scales depend on the whole batch, so not a smaller one)
    assert torch.equal(_logits(model, windows[:8], device), logits[:8]), "the quantized model is not deterministic"
    if case.scheme == "fp32":
        assert vs_backend["kl_mean_nats"] < 1e-9

    prompt = windows[:1, :16].to(device)
    steps = sweep.decode_tokens
    tokens = torch.zeros(1, 16 + steps, dtype=torch.long, device=device)
    tokens[:, :16] = prompt
    cache_obj = model.make_cache(1, 16 + steps)
    # Paired rounds: the engine's fp32 model decodes the same steps right before each timed round (untimed by
    # pytest-benchmark: in its setup), so a slow patch of a shared machine slows both sides of the ratio.
    fp32_model = None if case.scheme == "fp32" else harness.prepared(backend, base)[0]
    fp32_cache = fp32_model.make_cache(1, 16 + steps) if fp32_model is not None else None
    fp32_tokens = tokens.clone()  # (1, 16 + steps)
    fp32_seconds: list[float] = []

    def fp32_round() -> float:  # as the int8 round below: a pause, the prefill untimed, the steps timed
        time.sleep(SETTLE_S)
        fp32_cache.reset()
        logits = harness.synced(fp32_model, device)(prompt, fp32_cache)[:, -1]  # (1, vocab)
        start = time.perf_counter()
        harness.synced(decode, device)(fp32_model, fp32_tokens, 16, logits, steps, fp32_cache)
        return time.perf_counter() - start

    def setup():
        if fp32_model is not None:
            fp32_seconds.append(fp32_round())
            time.sleep(SETTLE_S)
        cache_obj.reset()
        return (harness.synced(model, device)(prompt, cache_obj)[:, -1],), {}

    with torch.inference_mode():
        decode(model, tokens, 16, setup()[0][0], steps, cache_obj)  # warm: a compiled engine compiles every graph here
        fp32_seconds.clear()  # the warm-up's
        benchmark.pedantic(harness.synced(lambda lg: decode(model, tokens, 16, lg, steps, cache_obj), device),
                           setup=setup, rounds=sweep.rounds, warmup_rounds=0)
    peak, outlier_columns = _outliers(evals)
    record("int8", evals.name, backend,
           params=Int8Params(scheme=case.scheme, norms=case.norms, windows=int(windows.shape[0]),
                             seq_len=sweep.seq_len, decode_tokens=steps, batch=1, source=case.source,
                             model_description=evals.description),
           metrics=Int8Metrics(bits_per_byte=vs_backend["bits_per_byte"],
                               bpb_delta=vs_backend["bits_per_byte"] - fp32_bpb,
                               bpb_delta_vs_torch_fp32=vs_torch["bits_per_byte"] - torch_fp32_bpb,
                               kl_mean_nats=vs_backend["kl_mean_nats"], top1_agreement=vs_backend["top1_agreement"],
                               max_abs_logit_delta=vs_backend["max_abs_logit_delta"],
                               kl_vs_torch_fp32_nats=vs_torch["kl_mean_nats"],
                               top1_vs_torch_fp32=vs_torch["top1_agreement"], model_bytes=nbytes,
                               quantized_weights_bytes=int8_elements + scale_bytes,
                               quantized_weights_fp32_bytes=int8_elements * 4,
                               window_nats=_window_nats(logits, targets), unigram_bpb=evals.unigram_bpb,
                               max_abs_linear_input=peak, outlier_columns=outlier_columns,
                               fp32_paired_seconds=fp32_seconds or None))


def test_int8_sensitivity(benchmark, record, int8_sensitivity_case, pytestconfig: pytest.Config) -> None:
    """One layer (or one norm) quantized at a time: which parts hurt most (the reference model)."""
    sweep, name = int8_sensitivity_case
    evals = harness.eval_set(pytestconfig, "reference", sweep.reference, sweep.seq_len, sweep.sensitivity_windows)
    base, windows = evals.model, evals.windows
    ref = _logits(base, windows, torch.device("cpu"))
    is_norm = name in norm_names(base)
    norms = "quantize" if is_norm else "keep"
    model = quantize_int8(base, sweep.sensitivity_scheme, norms, only=lambda n: n == name)
    result: dict = {}
    benchmark.pedantic(lambda: result.update(logits=_logits(model, windows, torch.device("cpu"))), rounds=1,
                       warmup_rounds=0)
    stats = _compare(result["logits"], ref, windows[:, 1:], evals.target_bytes)
    assert stats["kl_mean_nats"] > 0.0, f"quantizing {name} changed nothing"
    baseline_bpb = _compare(ref, ref, windows[:, 1:], evals.target_bytes)["bits_per_byte"]
    record("int8", evals.name, backends.reference("cpu"),
           params=SensitivityParams(scheme=sweep.sensitivity_scheme, module=name, kind="norm" if is_norm else "linear",
                                    windows=sweep.sensitivity_windows),
           metrics=SensitivityMetrics(kl_mean_nats=stats["kl_mean_nats"], top1_agreement=stats["top1_agreement"],
                                      bpb_delta=stats["bits_per_byte"] - baseline_bpb))
