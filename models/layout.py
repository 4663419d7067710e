"""Weight-layout transforms for decoding: Linear weights stored (in, out), prepacked for oneDNN, or
left as they are with single rows through archbench's own kernel (`models.kernels`).

A batch-1 decode step is a chain of matrix-vector products whose speed is the speed of streaming
the weights. Which layout streams fastest is a property of the machine and its libraries: on x86
CPUs MKL's single-row GEMM streams the (in, out) layout that GPT-2's Conv1D uses 1.3-1.7x faster
than nn.Linear's (out, in), and oneDNN's prepacked (blocked) weights faster still. The backend
measures every layout (`profiles.ceilings.measure_bandwidth`) and applies the winner. The model
itself never changes: these are module swaps outside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels


class InputMajorLinear(nn.Module):
    """y = x @ W^T + b with W^T stored contiguously as `weight_t` (in, out)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)  # (in, out)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)  # (N, in)
        if self.bias is not None:
            out = torch.addmm(self.bias, rows, self.weight_t)  # (N, out)
        else:
            out = rows @ self.weight_t  # (N, out)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def to_input_major(model: nn.Module) -> nn.Module:
    """Swap every plain nn.Linear of `model` (in place) for an InputMajorLinear; returns `model`.

    A head tied to the embedding gets its own transposed copy (the embedding keeps its rows for
    lookups), so a tied model holds its embedding matrix twice after this transform.
    """
    return _swap_linears(model, InputMajorLinear)


def _swap_linears(model: nn.Module, make) -> nn.Module:
    """Replace every plain nn.Linear below `model` (in place) by `make(linear)`; returns `model`."""
    for name, child in list(model.named_children()):
        if type(child) is nn.Linear:
            setattr(model, name, make(child))
        else:
            _swap_linears(child, make)
    return model


class OneDnnLinear(nn.Module):
    """y = x @ W^T + b through oneDNN's matmul with W held as a oneDNN tensor (CPU, fp32, inference).

    Input and output stay ordinary dense tensors: no per-call conversions (torch's `MkldnnLinear`
    converts the input to and the output from oneDNN's format on every call, which costs more than
    the weight layout gains at batch 1).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().float().to_mkldnn(), persistent=False)  # (out, in)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")  # (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def onednn_available() -> bool:
    """Whether this torch build can run `OneDnnLinear` (oneDNN present, its linear op registered)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    try:
        probe = OneDnnLinear(nn.Linear(8, 4))
        with torch.inference_mode():
            return probe(torch.ones(1, 2, 8)).shape == (1, 2, 4)
    except (RuntimeError, TypeError):
        return False


def to_onednn(model: nn.Module) -> nn.Module:
    """Swap every plain nn.Linear of `model` (in place) for a `OneDnnLinear` (CPU, fp32, inference only);
    returns `model`. Like `to_input_major`, a tied head gets its own copy of the embedding matrix."""
    if not onednn_available():
        raise RuntimeError(f"torch {torch.__version__} cannot run oneDNN linear layers here; use layout out_in "
                           "or in_out")
    return _swap_linears(model, OneDnnLinear)


class RowGemvLinear(nn.Module):
    """y = x @ W^T + b with nn.Linear's (out, in) weight, shared, not copied: a single input row (batch-1
    decode) goes through archbench's own kernel (`models.kernels`), anything else through F.linear.
    CPU, fp32, inference only."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().float().contiguous(), requires_grad=False)  # (out, in)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().contiguous(),
                                                                  requires_grad=False)
        self._kernel = kernels.gemv_kernel()

    def forward(self, x: Tensor) -> Tensor:
        params = self._parameters  # read directly: this runs 49 times per token of GPT-2 124M, and
        weight, bias = params["weight"], params.get("bias")  # nn.Module's attribute lookup costs microseconds
        if x.numel() != self.in_features or x.dtype != torch.float32 or not x.is_cpu or x.requires_grad:
            return F.linear(x, weight, bias)  # (..., out): several rows, or not the kernel's case
        x = x.contiguous()  # (..., in), one row
        y = torch.empty(*x.shape[:-1], self.out_features)  # (..., out)
        self._kernel(weight.data_ptr(), x.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(),
                     self.out_features, self.in_features, torch.get_num_threads())
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def to_row_gemv(model: nn.Module) -> nn.Module:
    """Swap every plain nn.Linear of `model` (in place) for a `RowGemvLinear` (CPU, fp32, inference only);
    returns `model`. The weights are shared with the Linears they replace (no copy)."""
    reason = kernels.unavailable_reason()
    if reason:
        raise RuntimeError(f"the gemv layout is unavailable here: {reason}; use layout out_in, in_out or onednn")
    return _swap_linears(model, RowGemvLinear)
