"""KV caches: preallocated buffers written in place, one `make(kind, ...)` for every kind.

The contract every cache kind keeps (the GPT and the benchmarks rely on it):
- `position`: tokens stored so far; `max_len`: capacity; `batch`.
- `attend(layer, q, k, v, impl)`: store the new keys/values of `layer` at `position` and return the
  causal attention of q over everything stored for that layer. The model calls it once per layer
  per forward, then `advance(T)` once.
- `nbytes`: every byte the cache holds; `reset()`: empty it for reuse (no reallocation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import kernels
from .config import ArchConfig
from .layers import causal_attention


class CacheFullError(ValueError):
    """An append would go past the cache's preallocated length."""


class KVCache(nn.Module):
    """Shared bookkeeping of every cache kind (position, capacity, checks)."""

    def __init__(self, batch: int, max_len: int) -> None:
        super().__init__()
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"cache batch={batch} and max_len={max_len} must both be positive integers")
        self.batch = batch
        self.max_len = max_len
        self.position = 0

    def check_append(self, batch: int, n_tokens: int) -> None:
        """Raise a clear error if `n_tokens` more tokens of `batch` sequences do not fit."""
        if batch != self.batch:
            raise ValueError(f"input batch {batch} does not match the cache's batch {self.batch}")
        if self.position + n_tokens > self.max_len:
            raise CacheFullError(
                f"cache holds {self.position} of {self.max_len} tokens; appending {n_tokens} would exceed "
                "max_len (make the cache with a larger max_len)"
            )

    def advance(self, n_tokens: int) -> None:
        """Mark `n_tokens` more tokens as stored (called by the model after every layer attended)."""
        self.position += n_tokens

    def reset(self) -> None:
        """Forget every stored token; buffers are kept for reuse."""
        self.position = 0

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store keys and values (B, Hkv, T, hd) of `layer` at the current position without attending
        (to fill a cache from precomputed keys and values); `advance` once every layer has them."""
        raise NotImplementedError

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Every byte the cache holds (its buffers as allocated)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())


class RawKVCache(KVCache):
    """Full-precision keys and values in (n_layer, B, Hkv, max_len, hd) buffers, written in place."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> None:
        super().__init__(batch, max_len)
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token takes across every layer and sequence of the batch."""
        n_layer, batch, heads, _, hd = self.k.shape
        return 2 * n_layer * batch * heads * hd * self.k.element_size()

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        start, end = self.position, self.position + k.shape[-2]
        self.k[layer, :, :, start:end] = k  # (B, Hkv, T, hd) written in place
        self.v[layer, :, :, start:end] = v

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        if impl == "kernel" and kernels.attend_step_supported(q, k, v, self.k):  # a one-token CPU fp32 step
            return kernels.attend_step(q, k, v, self.k[layer], self.v[layer], self.position)  # (B, H, 1, hd)
        start, end = self.position, self.position + k.shape[-2]
        self.append(layer, k, v)
        k_all = self.k[layer, :, :, :end]  # (B, Hkv, end, hd)
        v_all = self.v[layer, :, :, :end]  # (B, Hkv, end, hd)
        if k_all.dtype != q.dtype:  # a lower-precision cache is read back in the compute dtype
            k_all, v_all = k_all.to(q.dtype), v_all.to(q.dtype)
        return causal_attention(q, k_all, v_all, q_start=start, impl=impl)  # (B, H, T, hd)


def _make_raw(cfg: ArchConfig, batch: int, max_len: int, dtype: torch.dtype,
              device: str | torch.device | None, **options: object) -> KVCache:
    if options:
        raise ValueError(f"the raw cache takes no options; got {', '.join(options)}")
    return RawKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, dtype=dtype, device=device)


def _make_turboquant(bits: int) -> Callable[..., KVCache]:
    def make_tq(cfg: ArchConfig, batch: int, max_len: int, dtype: torch.dtype, device: str | torch.device | None,
                **options: object) -> KVCache:
        from .quantized_cache import TurboQuantKVCache

        return TurboQuantKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, bits, device=device,
                                 **options)

    return make_tq


def _make_uniform(bits: int) -> Callable[..., KVCache]:
    def make_uniform(cfg: ArchConfig, batch: int, max_len: int, dtype: torch.dtype,
                     device: str | torch.device | None, **options: object) -> KVCache:
        from .quantized_cache import UniformKVCache

        return UniformKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, bits, device=device,
                              **options)

    return make_uniform


# kind -> factory(cfg, batch, max_len, dtype, device, **options); new cache kinds register here.
CACHE_KINDS: dict[str, Callable[..., KVCache]] = {
    "raw": _make_raw,
    "tq2": _make_turboquant(2),
    "tq3": _make_turboquant(3),
    "tq4": _make_turboquant(4),
    "uniform2": _make_uniform(2),
    "uniform3": _make_uniform(3),
    "uniform4": _make_uniform(4),
}


def bytes_per_token(kind: str, cfg: ArchConfig, batch: int = 1, dtype: torch.dtype = torch.float32) -> int:
    """Bytes one more token adds to a cache of `kind` (codes, norms, scales; not fixed codebooks)."""
    probe = make(kind, cfg.replace(n_layer=1), batch, 64, dtype=dtype)  # per layer, then scaled
    return probe.bytes_per_token * cfg.n_layer


def make(kind: str, cfg: ArchConfig, batch: int, max_len: int, dtype: torch.dtype = torch.float32,
         device: str | torch.device | None = None, **options: object) -> KVCache:
    """A cache of `kind` for a model of `cfg`, holding up to `max_len` tokens of `batch` sequences.

    Kinds: `raw` (keys and values in `dtype`), `tq2` / `tq3` / `tq4` (TurboQuant; options `window`,
    `norm_dtype`, `chunk`, `seed`), `uniform2` / `uniform3` / `uniform4` (min-max baseline; options
    `group`, `chunk`).
    """
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown KV cache kind {kind!r}; allowed values: {', '.join(CACHE_KINDS)}")
    return CACHE_KINDS[kind](cfg, batch, max_len, dtype, device, **options)
