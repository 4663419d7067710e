"""Leaf layers of the GPT. Each takes primitives (sizes, eps, flags), never an ArchConfig."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import causal_attention
from .kv_base import AttendingCache


class LayerNorm(nn.Module):
    """LayerNorm with an explicit eps and optional bias (GPT-2 uses eps 1e-5 with bias)."""

    def __init__(self, dim: int, eps: float, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm: x / sqrt(mean(x^2) + eps) * weight, computed in fp32 and cast back (as Llama does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., dim)
        return self.weight * normed.to(x.dtype)


def make_norm(kind: str, dim: int, eps: float, bias: bool) -> nn.Module:
    """The norm layer for a placement kind: post_ln / pre_ln -> LayerNorm, pre_rms -> RMSNorm."""
    if kind == "pre_rms":
        return RMSNorm(dim, eps)
    return LayerNorm(dim, eps, bias)


class LearnedPositions(nn.Module):
    """GPT-2's learned position table: one trained vector per position, none beyond the table."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(max_positions, dim)

    @property
    def max_positions(self) -> int:
        return self.table.num_embeddings

    def forward(self, positions: Tensor) -> Tensor:
        return self.table(positions)  # (T, dim)


class SinusoidalPositions(nn.Module):
    """Vaswani et al.'s fixed table: PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(same).

    Computed from the positions on the fly, so it is defined at any position (no table limit).
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (T, dim/2)
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (T, dim), sin/cos interleaved


class RotaryEmbedding(nn.Module):
    """RoPE angles in transformers' rotate_half layout: theta_i = base^(-2i/head_dim), halves repeated."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)  # (hd/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (T, hd/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
        return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, hd) by the angles of its positions; cos, sin are (T, hd)."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with a fused q/k/v projection.

    A KV cache passed to forward takes over the attention over past tokens (`cache.attend`), so
    cache kinds that keep keys in a compressed form can attend without expanding them.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, bias: bool, layer_idx: int) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = d_model // n_head
        self.layer_idx = layer_idx
        self.impl = "sdpa"
        self.qkv = nn.Linear(d_model, (n_head + 2 * n_kv_head) * self.head_dim, bias=bias)
        self.out = nn.Linear(n_head * self.head_dim, d_model, bias=bias)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None,
                cache: AttendingCache | None = None) -> Tensor:
        B, T, _ = x.shape
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        heads = self.qkv(x).view(B, T, H + 2 * Hkv, hd).transpose(1, 2)  # (B, H + 2 Hkv, T, hd), a view
        q, k, v = heads.split((H, Hkv, Hkv), dim=1)  # (B, H, T, hd), 2x (B, Hkv, T, hd): three views, one op
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None:
            y = causal_attention(q, k, v, q_start=0, impl=self.impl)  # (B, H, T, hd)
        else:
            y = cache.attend(self.layer_idx, q, k, v, impl=self.impl)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, H * hd)  # (B, T, H*hd)
        return self.out(y)  # (B, T, d)


class GeluMLP(nn.Module):
    """GPT-2's feed-forward: down(gelu(up(x)))."""

    def __init__(self, d_model: int, d_ff: int, bias: bool, approximate: str = "tanh") -> None:
        super().__init__()
        self.approximate = approximate
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x), approximate=self.approximate))  # (B, T, d)


class SwiGLUMLP(nn.Module):
    """Llama's feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, d)
