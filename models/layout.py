"""Weight-layout transform for decoding: store Linear weights (in, out) instead of (out, in).

A batch-1 decode step is a chain of matrix-vector products whose speed is the speed of streaming
the weights. Which layout a BLAS streams faster is a property of the machine (on x86 CPUs with
MKL, the (in, out) layout that GPT-2's Conv1D uses is often 1.3-1.7x faster than nn.Linear's), so
the backend measures both (`profiles.ceilings.measure_bandwidth`) and applies this transform only
where it wins. The model itself never changes: this is a module swap outside it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
    for name, child in list(model.named_children()):
        if type(child) is nn.Linear:
            setattr(model, name, InputMajorLinear(child))
        else:
            to_input_major(child)
    return model
