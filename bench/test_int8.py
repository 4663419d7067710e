"""The INT8 study: what each scheme costs in accuracy on each backend, with norms kept or quantized.

On the trained reference model, for every scheme x norm policy x backend: validation bits per byte
and its change, mean KL divergence and top-1 agreement against the same backend's fp32 model and
against torch fp32 on the CPU, max |delta logit|, model bytes; the timed work is cached greedy decode
(tokens/s). `test_int8_sensitivity` quantizes one layer or one norm at a time (torch-cpu).

Schemes by backend:
- torch-cpu / torch-cuda: ours (`models.int8`): `weight_only`, `w8a8`, `llm_int8`; torch-cpu also
  `torch_dynamic` (torch.ao.quantization.quantize_dynamic, per-tensor int8 Linear; deprecated in
  torch, used while it exists). The `quantize` norm policy wraps the norms in every case.
- onnxruntime: `ort_dynamic` (onnxruntime.quantization.quantize_dynamic on the exported graph; its
  LayerNormalization stays float, so only `keep` applies) and `ort_static` (QDQ, calibrated on
  training windows; `keep` excludes LayerNormalization, `quantize` includes it in Q/DQ).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.conftest import EvalSet, accuracy_sources, backend_fixture, eval_set, selected_backends, synced
from bench.presets import Int8Sweep
from models import build, generate, variants
from models.corpus import NATS_TO_BITS
from models.generate import decode
from models.int8 import (
    model_bytes,
    norm_names,
    quantize_int8,
    quantize_norms,
    quantize_onnx,
    target_names,
    unsupported_reason,
)

TORCH_SCHEMES = ("weight_only", "w8a8", "llm_int8", "torch_dynamic")
ORT_SCHEMES = ("ort_dynamic", "ort_static")


@dataclass(frozen=True)
class Int8Case:
    sweep: Int8Sweep
    backend: str
    scheme: str  # "fp32" or a scheme
    norms: str
    source: str = "reference"  # or "checkpoint" (--weights)

    @property
    def id(self) -> str:
        model = self.sweep.reference if self.source == "reference" else self.source
        return f"{model}-{self.backend}-{self.scheme}-{self.norms}"


def _cases(config: pytest.Config) -> list[Int8Case]:
    out = []
    for sweep in config.archbench_preset.int8:
        for source in accuracy_sources(config):
            for backend in selected_backends(config):
                family = ORT_SCHEMES if backend == "onnxruntime" else TORCH_SCHEMES
                out.append(Int8Case(sweep, backend, "fp32", "keep", source))
                out += [Int8Case(sweep, backend, s, n, source) for s in sweep.schemes if s in family
                        for n in sweep.norms]
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "int8_case" in metafunc.fixturenames:
        cases = _cases(metafunc.config)
        metafunc.parametrize("int8_case", cases, ids=[c.id for c in cases])
    if "int8_sensitivity_case" in metafunc.fixturenames:
        cases = []
        for sweep in metafunc.config.archbench_preset.int8:
            if sweep.sensitivity_scheme and "torch-cpu" in selected_backends(metafunc.config):
                shapes = build(variants.get(sweep.reference), device="meta")  # names without training
                cases += [(sweep, name) for name in target_names(shapes) + norm_names(shapes)]
        metafunc.parametrize("int8_sensitivity_case", cases, ids=[f"{s.reference}-{n}" for s, n in cases])


def _evals(config: pytest.Config, case: Int8Case) -> EvalSet:
    return eval_set(config, case.source, case.sweep.reference, case.sweep.seq_len, case.sweep.windows)


def _logits(model, windows: torch.Tensor, device: torch.device, batch: int = 8) -> torch.Tensor:
    """Logits of every window (prefill, no cache) on `device`, returned on the CPU in fp32."""
    with torch.inference_mode():
        return torch.cat([model(chunk[:, :-1].to(device)).float().cpu() for chunk in windows.split(batch)])


@cache
def _torch_fp32_logits(evals: EvalSet) -> torch.Tensor:
    """torch fp32 on the CPU: the one reference every backend and scheme is also compared with."""
    return _logits(evals.model, evals.windows, torch.device("cpu"))


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


def _torch_dynamic(model):
    """torch.ao.quantization.quantize_dynamic on the Linear projections, or a skip saying why not."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # removed from this torch
        pytest.skip(f"torch_dynamic: torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic ({exc})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated upstream; measured while it exists
        warnings.simplefilter("ignore", UserWarning)
        names = set(target_names(model))
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        return quantize_dynamic(model, {name: qconfig for name in names}, dtype=torch.qint8)


def _torch_model(base, case: Int8Case, device: torch.device):
    if case.scheme == "fp32":
        return copy.deepcopy(base).to(device)
    if case.scheme == "torch_dynamic":
        return _torch_dynamic(quantize_norms(base) if case.norms == "quantize" else copy.deepcopy(base))
    return quantize_int8(base, case.scheme, case.norms).to(device)


def _ort_model(base, case: Int8Case, tmp: Path, calibration: list[dict]):
    """The exported model, quantized by onnxruntime as the case says, in a session."""
    from models.onnx_export import OrtModel, export

    path = export(base)
    if case.scheme == "fp32":
        return OrtModel(path, base.config), path
    out = quantize_onnx(path, tmp / f"{case.scheme}-{case.norms}.onnx", case.scheme, case.norms,
                        calibration=calibration)
    return OrtModel(out, base.config), out


def _calibration_feeds(config: pytest.Config, case: Int8Case, count: int = 16) -> list[dict]:
    """`count` training windows (never the validation ones) as onnxruntime input feeds with an empty past."""
    import numpy as np

    from models import corpus
    from models.onnx_export import input_names

    seq_len = case.sweep.seq_len
    if case.source == "checkpoint":
        from models.hf import load_tokenizer, tokenized_windows

        text = corpus.text("train", max_bytes=400 * seq_len * count)  # enough tokens for the windows
        windows, _ = tokenized_windows(load_tokenizer(config.getoption("--weights")), text, seq_len, count)
    else:
        windows = corpus.eval_windows(corpus.load().tokens("train"), seq_len, count)
    cfg = _evals(config, case).model.config
    names = input_names(cfg)
    empty = np.zeros((1, cfg.kv_heads, 0, cfg.head_dim), dtype=np.float32)
    return [{names[0]: w[None].astype(np.int64), **{n: empty for n in names[1:]}} for w in windows[:, :-1].numpy()]


def _torch_bytes(model) -> int:
    """Bytes the model holds, including the packed int8 weights of torch's dynamic quantized Linear
    (kept outside parameters and buffers)."""
    total = model_bytes(model)
    for module in model.modules():
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            weight, bias = module.weight(), module.bias()
            total += weight.numel() * weight.element_size() + (0 if bias is None else bias.numel() * 4)
            total += 8 if weight.qscheme() == torch.per_tensor_affine else 12 * weight.shape[0]  # scale, zero point
    return total


def _torch_int8_weights(model) -> tuple[int, int]:
    """(int8 weight elements, bytes of their per-channel or per-tensor scales) held by the model."""
    elements = scale_bytes = 0
    for module in model.modules():
        if hasattr(module, "weight_int8"):
            elements += module.weight_int8.numel()
            scale_bytes += module.weight_scale.numel() * module.weight_scale.element_size()
        elif hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            elements += module.weight().numel()
            scale_bytes += 8
    return elements, scale_bytes


def _onnx_bytes(path: Path) -> tuple[int, int, int]:
    """(all initializer bytes, int8 weight elements, bytes of the quantization scales) of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    int8 = sum(a.size for a in arrays.values() if a.dtype.itemsize == 1)
    scales = sum(a.nbytes for name, a in arrays.items() if name.endswith("_scale") or name.endswith("_zero_point"))
    return sum(a.nbytes for a in arrays.values()), int8, scales


def test_int8(benchmark, record, int8_case: Int8Case, tmp_path: Path, pytestconfig: pytest.Config) -> None:
    case = int8_case
    sweep = case.sweep
    backend = backend_fixture(case.backend)
    reason = unsupported_reason(case.scheme, case.norms, case.backend)
    if reason:
        pytest.skip(reason)
    evals = _evals(pytestconfig, case)
    base, windows, nbytes_text = evals.model, evals.windows, evals.target_bytes
    targets = windows[:, 1:]
    torch_fp32 = _torch_fp32_logits(evals)
    if case.backend == "onnxruntime":
        feeds = _calibration_feeds(pytestconfig, case) if case.scheme == "ort_static" else []
        model, path = _ort_model(base, case, tmp_path, feeds)
        fp32_model, _ = _ort_model(base, Int8Case(sweep, case.backend, "fp32", "keep", case.source), tmp_path, [])
        (nbytes, int8_elements, scale_bytes), device = _onnx_bytes(path), torch.device("cpu")
    else:
        device = backend.device
        model = _torch_model(base, case, device)
        fp32_model = copy.deepcopy(base).to(device)
        nbytes = _torch_bytes(model)
        int8_elements, scale_bytes = _torch_int8_weights(model)
    logits = _logits(model, windows, device)
    same_backend_fp32 = _logits(fp32_model, windows, device)
    vs_backend = _compare(logits, same_backend_fp32, targets, nbytes_text)
    vs_torch = _compare(logits, torch_fp32, targets, nbytes_text)
    fp32_bpb = _compare(same_backend_fp32, torch_fp32, targets, nbytes_text)["bits_per_byte"]
    torch_fp32_bpb = _compare(torch_fp32, torch_fp32, targets, nbytes_text)["bits_per_byte"]
    # the same first batch again (per-tensor dynamic scales depend on the whole batch, so not a smaller one)
    assert torch.equal(_logits(model, windows[:8], device), logits[:8]), "the quantized model is not deterministic"
    if case.scheme == "fp32" and case.backend != "onnxruntime":
        assert vs_backend["kl_mean_nats"] < 1e-9

    prompt = windows[:1, :16].to(device)
    steps = sweep.decode_tokens
    tokens = torch.zeros(1, 16 + steps, dtype=torch.long, device=device)
    tokens[:, :16] = prompt
    cache_obj = model.make_cache(1, 16 + steps) if hasattr(model, "make_cache") else None

    def setup():
        cache_obj.reset()
        return (synced(model, device)(prompt, cache_obj)[:, -1],), {}

    with torch.inference_mode():
        generate(model, prompt, 8)  # warm
        benchmark.pedantic(synced(lambda lg: decode(model, tokens, 16, lg, steps, cache_obj), device), setup=setup,
                           rounds=sweep.rounds, warmup_rounds=0)
    record("int8", evals.name, case.backend,
           params={"scheme": case.scheme, "norms": case.norms, "windows": int(windows.shape[0]),
                   "seq_len": sweep.seq_len, "decode_tokens": steps, "batch": 1, "source": case.source},
           metrics={"bits_per_byte": vs_backend["bits_per_byte"],
                    "bpb_delta": vs_backend["bits_per_byte"] - fp32_bpb,
                    "bpb_delta_vs_torch_fp32": vs_torch["bits_per_byte"] - torch_fp32_bpb,
                    "kl_mean_nats": vs_backend["kl_mean_nats"], "top1_agreement": vs_backend["top1_agreement"],
                    "max_abs_logit_delta": vs_backend["max_abs_logit_delta"],
                    "kl_vs_torch_fp32_nats": vs_torch["kl_mean_nats"],
                    "top1_vs_torch_fp32": vs_torch["top1_agreement"], "model_bytes": nbytes,
                    # the quantized layers alone: int8 weights plus scales, against the same weights in fp32
                    "quantized_weights_bytes": int8_elements + scale_bytes,
                    "quantized_weights_fp32_bytes": int8_elements * 4})


def test_int8_sensitivity(benchmark, record, int8_sensitivity_case, pytestconfig: pytest.Config) -> None:
    """One layer (or one norm) quantized at a time: which parts hurt most (the reference model)."""
    sweep, name = int8_sensitivity_case
    evals = eval_set(pytestconfig, "reference", sweep.reference, sweep.seq_len, sweep.sensitivity_windows)
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
    record("int8", evals.name, "torch-cpu",
           params={"phase": "sensitivity", "scheme": sweep.sensitivity_scheme, "module": name,
                   "kind": "norm" if is_norm else "linear", "windows": sweep.sensitivity_windows},
           metrics={"kl_mean_nats": stats["kl_mean_nats"], "top1_agreement": stats["top1_agreement"],
                    "bpb_delta": stats["bits_per_byte"]
                    - _compare(ref, ref, windows[:, 1:], evals.target_bytes)["bits_per_byte"]})
