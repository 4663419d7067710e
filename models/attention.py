"""The attention math every part of the model shares: causal masks and causal (grouped-query) attention.

Layers call it for uncached forwards, the KV caches for attention over what they hold, and the ONNX
export for its functional cache; nothing here knows about caches or layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_IMPLS = ("sdpa", "reference")  # sdpa: torch's fused kernel; reference: the explicit softmax


def check_impl(impl: str) -> None:
    """Raise ValueError naming the allowed values if `impl` is not an attention implementation."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl {impl!r} is not valid; allowed values: {', '.join(ATTENTION_IMPLS)}")


def causal_mask(q_len: int, k_len: int, q_start: int, device: torch.device) -> Tensor:
    """Boolean (q_len, k_len) mask, True where query i (at position q_start + i) may see key j."""
    q_pos = torch.arange(q_start, q_start + q_len, device=device)[:, None]  # (Tq, 1)
    k_pos = torch.arange(k_len, device=device)[None, :]  # (1, Tk)
    return k_pos <= q_pos


def grouped_causal_softmax(scores: Tensor, q_len: int, q_start: int, groups: int) -> Tensor:
    """Softmax of raw q.k scores (B, Hkv, G*Tq, Tk) whose queries are laid out head-group-major (the
    G query heads sharing one key head, each with Tq queries), causally masked (query i at position
    q_start + i). The caller scales the scores."""
    mask = causal_mask(q_len, scores.shape[-1], q_start, scores.device).repeat(groups, 1)  # (G*Tq, Tk)
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, q_start: int, impl: str = "sdpa") -> Tensor:
    """Causal attention of queries at positions q_start.. over keys at positions 0..Tk-1.

    q: (B, H, Tq, hd); k, v: (B, Hkv, Tk, hd) with H a multiple of Hkv (grouped-query attention).
    `impl="sdpa"` is the fast path (torch's scaled_dot_product_attention); `impl="reference"` is the
    explicit softmax(q k^T / sqrt(hd)) v kept beside it as the readable definition.
    """
    check_impl(impl)
    q_len, k_len = q.shape[-2], k.shape[-2]
    if impl == "sdpa":
        if q_len == 1 and q_start == k_len - 1:  # one new token sees every key: no mask needed
            return masked_attention(q, k, v, None, impl)
        if q_start == 0 and q_len == k_len:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] > k.shape[1])
    return masked_attention(q, k, v, causal_mask(q_len, k_len, q_start, q.device), impl)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, impl: str = "sdpa") -> Tensor:
    """Attention of q (B, H, Tq, hd) over k, v (B, Hkv, Tk, hd) where the boolean `mask` (Tq, Tk) is True
    (None: every key); H a multiple of Hkv. `impl` as in `causal_attention`."""
    check_impl(impl)
    groups = q.shape[1] // k.shape[1]
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=groups > 1)
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)  # (B, H, Tk, hd)
        v = v.repeat_interleave(groups, dim=1)  # (B, H, Tk, hd)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, Tq, Tk)
    return probs @ v  # (B, H, Tq, hd)
