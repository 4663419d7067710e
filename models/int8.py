"""INT8 transforms: module swaps applied to a copy of a GPT, never switches inside the model.

Schemes (what replaces each targeted `nn.Linear`):
- `weight_only`: int8 weights, one symmetric scale per output channel; activations stay in floating
  point, the weight is widened on the fly (`Int8WeightOnlyLinear`).
- `w8a8`: int8 weights as above and int8 activations with one dynamic symmetric scale per token;
  the product is an int8 x int8 -> int32 matmul (`torch._int_mm`) rescaled by both scales
  (`Int8DynamicLinear`).
- `llm_int8`: LLM.int8()-style mixed precision: input columns holding any |x| >= 6.0 in the current
  batch are multiplied in floating point (with the dequantized weight columns), every other column
  as in `w8a8` (`Int8OutlierLinear`).

Targets: the attention and MLP projections (`qkv`, `out`, `up`, `down`, `gate`); the output head only
with `head=True`. A tied head shares its weight with the token embedding: quantizing it gives the
head its own int8 copy and leaves the embedding in full precision (the model then holds both).

Peers, measured the same way: torchao's int8 weight-only and int8 dynamic-activation configs
(`quantize_torchao`, the maintained successor of torch.ao's deprecated quantize_dynamic), `ort_dynamic`
and `ort_static` (`quantize_onnx`: onnxruntime's
dynamic quantization, and static QDQ quantization calibrated on sample inputs).

Norm policy, on every scheme:
- `keep` (the default and the usual practice): LayerNorm/RMSNorm stay in full precision.
- `quantize`: each norm is replaced by `Int8FakeQuantNorm`: its gain (and bias) are rounded to int8
  with one symmetric per-tensor scale, and its input is fake-quantized to int8 with one symmetric
  scale per token (round(x / s) * s, s = max|x| / 127) before the mean and variance (or RMS) are
  taken. The arithmetic of the norm itself stays in floating point: this is the precision a norm
  would see in an all-int8 pipeline, simulated exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LayerNorm, RMSNorm

SCHEMES = ("weight_only", "w8a8", "llm_int8")  # ours: module swaps (`quantize_int8`)
ONNX_SCHEMES = ("ort_dynamic", "ort_static")  # onnxruntime's quantizers on an exported graph (`quantize_onnx`)
NORM_POLICIES = ("keep", "quantize")
LINEAR_NAMES = ("qkv", "out", "up", "down", "gate")
OUTLIER_THRESHOLD = 6.0  # LLM.int8()'s default
QMAX = 127


def quantize_per_channel(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per output channel: (out, in) float -> int8 (out, in) and float scales (out,)."""
    scale = weight.detach().abs().amax(dim=1).clamp_min(1e-12) / QMAX  # (out,)
    q = torch.round(weight.detach() / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)  # (out, in)
    return q, scale


def quantize_per_token(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row (token): (..., k) float -> int8 (..., k) and scales (..., 1)."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / QMAX  # (..., 1)
    return torch.round(x / scale).clamp(-QMAX, QMAX).to(torch.int8), scale


def fake_quantize_per_token(x: Tensor) -> Tensor:
    """x rounded to the int8 grid of its own row: round(x / s) * s with s = max|x| / 127 per row."""
    q, scale = quantize_per_token(x.float())
    return (q.float() * scale).to(x.dtype)


def int8_matmul(a: Tensor, b: Tensor) -> Tensor:
    """int8 (M, K) @ int8 (K, N) -> int32 (M, N) through `torch._int_mm` (CUDA needs M > 16: small M is
    padded with zero rows); a float matmul of the integer values where `_int_mm` is missing."""
    m = a.shape[0]
    if hasattr(torch, "_int_mm"):
        if a.is_cuda and m <= 16:
            a = torch.cat([a, a.new_zeros(32 - m, a.shape[1])])  # (32, K)
        try:
            return torch._int_mm(a, b)[:m]
        except RuntimeError:  # shape or device this build does not support
            a = a[:m]
    return (a.float() @ b.float()).round().to(torch.int32)


class _Int8Linear(nn.Module):
    """Shared storage: int8 weight (out, in), per-output-channel scales, optional float bias."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scale = quantize_per_channel(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale.float())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The weight as this layer represents it: int8 x scale, (out, in)."""
        return self.weight_int8.to(dtype) * self.weight_scale.to(dtype)[:, None]

    def _w8a8(self, rows: Tensor) -> Tensor:
        """float (M, in) -> float (M, out): per-token int8 activations x int8 weights, int32 accumulation,
        rescaled; no bias."""
        xq, x_scale = quantize_per_token(rows)  # (M, in) int8, (M, 1)
        return int8_matmul(xq, self.weight_int8.t()).float() * x_scale * self.weight_scale  # (M, out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8WeightOnlyLinear(_Int8Linear):
    """int8 weights, float activations: y = (x @ W_int8^T) * scale + b."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight_int8.to(x.dtype)) * self.weight_scale.to(x.dtype)  # (..., out)
        return y if self.bias is None else y + self.bias


class Int8DynamicLinear(_Int8Linear):
    """W8A8: per-token int8 activations x per-channel int8 weights, int32 accumulation."""

    def forward(self, x: Tensor) -> Tensor:
        y = self._w8a8(x.reshape(-1, self.in_features).float())  # (M, out)
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


class Int8OutlierLinear(_Int8Linear):
    """LLM.int8()-style: input columns with any |x| >= threshold in float, the rest W8A8."""

    def __init__(self, linear: nn.Linear, threshold: float = OUTLIER_THRESHOLD) -> None:
        super().__init__(linear)
        self.threshold = threshold
        self.outlier_columns_seen = 0  # columns taken in float on the last call (for inspection)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).float()  # (M, in)
        outliers = (flat.abs() >= self.threshold).any(dim=0)  # (in,)
        self.outlier_columns_seen = int(outliers.sum())
        y = self._w8a8(flat.masked_fill(outliers, 0.0))  # (M, out): outlier columns zeroed, the rest int8
        if self.outlier_columns_seen:
            cols = outliers.nonzero().squeeze(1)  # (n_outliers,)
            w_cols = self.weight_int8[:, cols].float() * self.weight_scale[:, None]  # (out, n_outliers)
            y = y + flat[:, cols] @ w_cols.t()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


LINEAR_CLASSES: dict[str, type[_Int8Linear]] = {
    "weight_only": Int8WeightOnlyLinear, "w8a8": Int8DynamicLinear, "llm_int8": Int8OutlierLinear,
}


class Int8FakeQuantNorm(nn.Module):
    """A norm whose gain/bias are int8-rounded and whose input is fake-quantized per token (see module doc)."""

    def __init__(self, norm: LayerNorm | RMSNorm) -> None:
        super().__init__()
        self.inner = copy.deepcopy(norm)
        with torch.no_grad():
            for p in self.inner.parameters():
                scale = p.abs().max().clamp_min(1e-12) / QMAX
                p.copy_(torch.round(p / scale).clamp(-QMAX, QMAX) * scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(fake_quantize_per_token(x))


def _check(scheme: str, norms: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown INT8 scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    if norms not in NORM_POLICIES:
        raise ValueError(f"unknown norm policy {norms!r}; valid policies: {', '.join(NORM_POLICIES)}")


def target_names(model: nn.Module, *, head: bool = False) -> list[str]:
    """Names of the Linear layers a transform quantizes by default (and `lm_head` with `head`)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in LINEAR_NAMES]
    return names + (["lm_head"] if head else [])


def norm_names(model: nn.Module) -> list[str]:
    """Names of every LayerNorm / RMSNorm in `model`."""
    return [n for n, m in model.named_modules() if isinstance(m, LayerNorm | RMSNorm)]


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_int8(model: nn.Module, scheme: str, norms: str = "keep", *, head: bool = False,
                  only: Callable[[str], bool] | None = None) -> nn.Module:
    """A copy of `model` with its projections (and `lm_head` with `head`) swapped for `scheme`'s int8
    layers and its norms handled by the `norms` policy. `only(name)` restricts both to the named
    modules (the per-layer sensitivity sweep quantizes one layer or one norm at a time)."""
    _check(scheme, norms)
    out = copy.deepcopy(model)
    keep = only or (lambda name: True)
    for name in target_names(out, head=head):
        if not keep(name):
            continue
        # a tied head's int8 layer holds its own copy; the embedding keeps the float weight
        _swap(out, name, LINEAR_CLASSES[scheme](out.get_submodule(name)))
    if norms == "quantize":
        _quantize_norms_in_place(out, keep)
    return out.eval()


def _quantize_norms_in_place(model: nn.Module, keep: Callable[[str], bool]) -> None:
    for name in norm_names(model):
        if keep(name):
            _swap(model, name, Int8FakeQuantNorm(model.get_submodule(name)))


def quantize_norms(model: nn.Module) -> nn.Module:
    """A copy of `model` with only the `quantize` norm policy applied (for peers that quantize the Linears
    their own way, such as torchao)."""
    out = copy.deepcopy(model)
    _quantize_norms_in_place(out, lambda name: True)
    return out.eval()


def _stored(t: Tensor) -> list[Tensor]:
    """The plain tensors that hold `t`'s data: itself, or a tensor subclass's inner tensors (torchao's
    int8 weights hold int8 data, scales and zero points)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if not is_traceable_wrapper_subclass(t):
        return [t]
    names, _ = t.__tensor_flatten__()
    return [inner for n in names for inner in _stored(getattr(t, n))]


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer the model holds (shared tensors counted once; a tensor
    subclass counted by the tensors it holds)."""
    seen: set[int] = set()
    total = 0
    for t in [s for p in [*model.parameters(), *model.buffers()] for s in _stored(p)]:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


TORCHAO_CONFIGS = {  # archbench's name -> torchao config class (torchao.quantization)
    "torchao_int8_weight_only": "Int8WeightOnlyConfig",
    "torchao_int8_dynamic": "Int8DynamicActivationInt8WeightConfig",
}


def _import_torchao_quantization():
    """torchao.quantization, or RuntimeError naming the package when it is not installed."""
    try:
        import torchao.quantization as quantization
    except ImportError as exc:
        raise RuntimeError(f"torchao is not installed (pip install torchao): {exc}") from None
    return quantization


def quantize_torchao(model: nn.Module, config: str, norms: str = "keep") -> nn.Module:
    """torchao's own INT8 (`config`, a key of TORCHAO_CONFIGS: int8 weights per output channel, and for
    `torchao_int8_dynamic` int8 activations per token) on a copy of `model`'s projections, with the
    `norms` policy applied first. The weights become torchao tensor subclasses, so the same module runs
    on eager torch and under torch.compile. torchao's global inductor settings are left alone
    (`set_inductor_config=False`): every compiled engine in a run keeps the options it records."""
    if config not in TORCHAO_CONFIGS:
        raise ValueError(f"unknown torchao INT8 config {config!r}; valid configs: {', '.join(TORCHAO_CONFIGS)}")
    if norms not in NORM_POLICIES:
        raise ValueError(f"unknown norm policy {norms!r}; valid policies: {', '.join(NORM_POLICIES)}")
    quantization = _import_torchao_quantization()
    base = quantize_norms(model) if norms == "quantize" else copy.deepcopy(model)
    targets = set(target_names(base))
    quantization.quantize_(base, getattr(quantization, TORCHAO_CONFIGS[config])(set_inductor_config=False),
                           filter_fn=lambda module, name: name in targets)
    return base.eval()


def onnx_unsupported_reason(scheme: str, norms: str) -> str | None:
    """Why onnxruntime's quantizer `scheme` cannot apply the `norms` policy (None when it can); unknown
    names raise ValueError."""
    if scheme not in ONNX_SCHEMES:
        raise ValueError(f"unknown onnxruntime INT8 scheme {scheme!r}; valid schemes: {', '.join(ONNX_SCHEMES)}")
    if norms not in NORM_POLICIES:
        raise ValueError(f"unknown norm policy {norms!r}; valid policies: {', '.join(NORM_POLICIES)}")
    if scheme == "ort_dynamic" and norms == "quantize":
        return ("ort_dynamic: onnxruntime's dynamic quantization has no int8 LayerNormalization (MatMul, Gemm, "
                "Gather and attention-like ops only); ort_static covers the quantize policy")
    return None


def quantize_onnx(src: str | Path, dst: str | Path, scheme: str, norms: str = "keep",
                  calibration: Iterable[dict] | None = None) -> Path:
    """onnxruntime's own INT8 quantization of the ONNX file `src`, written to `dst`.

    `ort_dynamic`: `quantize_dynamic`, int8 weights per channel, activations quantized at run time;
    LayerNormalization stays float. `ort_static`: QDQ format, int8 weights per channel and int8
    activations with scales calibrated (min-max) on `calibration` (input feeds); norms `keep` quantizes
    MatMul/Gemm only, `quantize` also wraps LayerNormalization in QuantizeLinear/DequantizeLinear.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    reason = onnx_unsupported_reason(scheme, norms)
    if reason:
        raise ValueError(reason)
    if scheme == "ort_dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    else:
        if calibration is None:
            raise ValueError("ort_static needs calibration inputs (an iterable of input feeds)")
        ops = ["MatMul", "Gemm"] + (["LayerNormalization"] if norms == "quantize" else [])
        quantize_static(str(src), str(dst), _FeedReader(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=ops, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
    return Path(dst)


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over an iterable of feeds."""

    def __init__(self, feeds: Iterable[dict]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)
