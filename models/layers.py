"""Leaf layers of the GPT. Each takes primitives (sizes, eps, flags), never an ArchConfig."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # kv_cache imports this module
    from .kv_cache import KVCache

ATTENTION_IMPLS = ("sdpa", "reference", "kernel")  # kernel: archbench's for cached one-token CPU steps, else sdpa


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


def causal_mask(q_len: int, k_len: int, q_start: int, device: torch.device) -> Tensor:
    """Boolean (q_len, k_len) mask, True where query i (at position q_start + i) may see key j."""
    q_pos = torch.arange(q_start, q_start + q_len, device=device)[:, None]  # (Tq, 1)
    k_pos = torch.arange(k_len, device=device)[None, :]  # (1, Tk)
    return k_pos <= q_pos


def causal_attention(q: Tensor, k: Tensor, v: Tensor, q_start: int, impl: str = "sdpa") -> Tensor:
    """Causal attention of queries at positions q_start.. over keys at positions 0..Tk-1.

    q: (B, H, Tq, hd); k, v: (B, Hkv, Tk, hd) with H a multiple of Hkv (grouped-query attention).
    `impl="sdpa"` is the fast path (torch's scaled_dot_product_attention); `impl="reference"` is the
    explicit softmax(q k^T / sqrt(hd)) v kept beside it as the readable definition. `impl="kernel"`
    means sdpa here: its kernel (`models.kernels.attend_step`) is for the raw cache's one-token steps.
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    groups = q.shape[1] // k.shape[1]
    if impl in ("sdpa", "kernel"):
        if q_len == 1 and q_start == k_len - 1:  # one new token sees every key: no mask needed
            mask, is_causal = None, False
        elif q_start == 0 and q_len == k_len:
            mask, is_causal = None, True
        else:
            mask, is_causal = causal_mask(q_len, k_len, q_start, q.device), False
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=groups > 1)
    if impl == "reference":
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)  # (B, H, Tk, hd)
            v = v.repeat_interleave(groups, dim=1)  # (B, H, Tk, hd)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
        scores = scores.masked_fill(~causal_mask(q_len, k_len, q_start, q.device), float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, Tq, Tk)
        return probs @ v  # (B, H, Tq, hd)
    raise ValueError(f"attention impl {impl!r} is not valid; allowed values: {', '.join(ATTENTION_IMPLS)}")


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

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None, cache: KVCache | None = None) -> Tensor:
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
