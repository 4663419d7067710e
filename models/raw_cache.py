"""The raw KV cache: keys and values in full precision (fp32, fp16 or bf16), written in place."""

from __future__ import annotations

import torch
from torch import Tensor

from .attention import causal_attention, masked_attention
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

    def bucket_view(self, bucket: int) -> RawBucketView:
        """See `models.kv_base.BucketedCache`."""
        return RawBucketView(self.k[:, :, :, :bucket], self.v[:, :, :, :bucket], self.position_index())


class RawBucketView:
    """The `AttendingCache` a compiled step sees of full-precision buffers: keys and values of every layer
    over the first L positions, laid out (n_layer, B, Hkv, L, hd) or, `position_first`,
    (L, n_layer, B, Hkv, hd) (`models.compiled.StaticKVCache`), and the position as a 0-d tensor. New keys
    and values are written at the position (`index_copy_`); attention reads all L positions under a mask.
    The host checks the append before the step and advances the cache after it."""

    def __init__(self, k: Tensor, v: Tensor, index: Tensor, position_first: bool = False) -> None:
        self.k, self.v, self.position, self.position_first = k, v, index, position_first

    def check_append(self, batch: int, n_tokens: int) -> None:
        """Checked on the host before the step."""

    def advance(self, n_tokens: int) -> None:
        """Advanced on the host after the step."""

    def _layer(self, buffer: Tensor, layer: int) -> tuple[Tensor, int]:
        """One layer's buffer and its token dimension."""
        return (buffer[:, layer], 0) if self.position_first else (buffer[layer], 2)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        positions = self.position + torch.arange(k.shape[-2], device=k.device)  # (T,)
        read = []
        for buffer, new in ((self.k, k), (self.v, v)):
            stored, dim = self._layer(buffer, layer)
            stored.index_copy_(dim, positions, (new.permute(2, 0, 1, 3) if dim == 0 else new).to(stored.dtype))
            read.append((stored.permute(1, 2, 0, 3) if dim == 0 else stored).to(q.dtype))  # (B, Hkv, L, hd)
        keys, values = read
        mask = torch.arange(keys.shape[-2], device=q.device)[None, :] <= positions[:, None]  # (T, L)
        return masked_attention(q, keys, values, mask, impl)  # (B, H, T, hd)
