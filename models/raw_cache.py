"""The raw KV cache: keys and values in full precision (fp32, fp16 or bf16), written in place."""

from __future__ import annotations

import torch
from torch import Tensor

from .attention import causal_attention
from .kv_base import BufferedKVCache


class RawKVCache(BufferedKVCache):
    """Keys and values in (n_layer, B, Hkv, max_len, hd) buffers of `dtype`, written in place."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> None:
        super().__init__(batch, max_len, 2 * n_layer * batch * n_kv_head * head_dim)
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token takes across every layer and sequence of the batch."""
        n_layer, batch, heads, _, hd = self.k.shape
        return 2 * n_layer * batch * heads * hd * self.k.element_size()

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        start, end = self._span(k)
        self.k[layer, :, :, start:end] = k  # (B, Hkv, T, hd) written in place
        self.v[layer, :, :, start:end] = v

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        start, end = self.position, self.position + k.shape[-2]
        self.append(layer, k, v)
        k_all = self.k[layer, :, :, :end]  # (B, Hkv, end, hd)
        v_all = self.v[layer, :, :, :end]  # (B, Hkv, end, hd)
        if k_all.dtype != q.dtype:  # a lower-precision cache is read back in the compute dtype
            k_all, v_all = k_all.to(q.dtype), v_all.to(q.dtype)
        return causal_attention(q, k_all, v_all, q_start=start, impl=impl)  # (B, H, T, hd)
