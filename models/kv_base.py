"""The KV-cache contract, declared once, and the base class of the caches that live in torch buffers.

Two protocols, both structural (`typing.Protocol`):
- `KVCache`: what a decode loop and a benchmark use of any cache, our buffered caches and an
  onnxruntime session's past (`models.onnx_export.OrtCache`) alike: `batch`, `max_len`, `position`,
  `nbytes` (every byte held), `bytes_per_token`, `bits_per_coordinate`, `check_append`, `reset`.
- `AttendingCache`: what `GPT.forward` calls on a cache inside the model: `position`, `check_append`,
  `attend(layer, q, k, v, impl)` (store the new keys and values of `layer` and return the attention
  over everything stored) and `advance(T)` once every layer has attended.
- `BucketedCache`: a cache a compiled decode step can run over (`models.compiled`): `bucket_view(bucket)`
  is the `AttendingCache` the step sees, with fixed shapes for every step inside one bucket.

`BufferedKVCache` keeps the bookkeeping every buffered kind shares (position, capacity, checks, bytes).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


class CacheFullError(ValueError):
    """An append would go past the cache's preallocated length."""


@runtime_checkable
class KVCache(Protocol):
    """What a decode loop and the benchmarks use of any KV cache."""

    batch: int  # sequences held
    max_len: int  # tokens each sequence can hold
    position: int  # tokens stored so far

    @property
    def nbytes(self) -> int:
        """Every byte the cache holds now."""
        ...

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token adds across every layer and sequence of the batch."""
        ...

    @property
    def bits_per_coordinate(self) -> float:
        """Every byte held (codes and all metadata) in bits, over the coordinates the cache can hold."""
        ...

    def check_append(self, batch: int, n_tokens: int) -> None:
        """Raise a clear error if `n_tokens` more tokens of `batch` sequences do not fit."""
        ...

    def reset(self) -> None:
        """Forget every stored token (buffers are kept for reuse)."""
        ...


@runtime_checkable
class AttendingCache(Protocol):
    """What `GPT.forward` calls on a cache: store each layer's new keys and values and attend over them."""

    position: int | Tensor  # tokens stored so far; a 0-d tensor inside a compiled step (`models.compiled`)

    def check_append(self, batch: int, n_tokens: int) -> None: ...

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        """Store k, v (B, Hkv, T, hd) of `layer` at `position`; return the causal attention of q (B, H, T, hd)
        over everything stored for that layer, (B, H, T, hd)."""
        ...

    def advance(self, n_tokens: int) -> None: ...


@runtime_checkable
class BucketedCache(Protocol):
    """A cache a compiled decode step runs over (`models.compiled.CompiledDecoder`)."""

    position: int

    def check_append(self, batch: int, n_tokens: int) -> None: ...

    def bucket_view(self, bucket: int) -> AttendingCache:
        """What a compiled step attends through: the buffers' first `bucket` positions (views, so the step's
        writes land in this cache; fewer where the cache holds fewer) and the position as a 0-d int64 tensor,
        so every step whose end falls inside one bucket has the same shapes and shares one graph. Attention
        covers the whole view under a mask. The host advances the cache after the step."""
        ...

    def advance(self, n_tokens: int) -> None: ...


class BufferedKVCache(nn.Module):
    """Shared bookkeeping of the caches held in preallocated torch buffers (position, capacity, bytes).

    Subclasses register their buffers (non-persistent) and implement `append`, `attend` and
    `bytes_per_token`; `coordinates_per_token` is the number of key and value coordinates one token
    stores (2 x layers x kv heads x head_dim x batch). Caches are made (`kv_cache.make`) with ordinary
    tensors even under `torch.inference_mode`: a compiled step guards on the kind of tensor it is given,
    so a cache of inference tensors would compile every graph a second time.
    """

    def __init__(self, batch: int, max_len: int, coordinates_per_token: int) -> None:
        super().__init__()
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"cache batch={batch} and max_len={max_len} must both be positive integers")
        self.batch = batch
        self.max_len = max_len
        self.position = 0
        self.coordinates_per_token = coordinates_per_token
        self._index: Tensor | None = None  # `position` as a tensor, for compiled steps (not cache content)

    def position_index(self) -> Tensor:
        """`position` as a 0-d int64 tensor on the cache's device: the same tensor at every call (a compiled
        step reads it; a CUDA graph replays over its address). Not a buffer: it is no cache content."""
        if self._index is None:
            with torch.inference_mode(False):  # an ordinary tensor, as the buffers are
                self._index = torch.zeros((), dtype=torch.long, device=next(self.buffers()).device)
        self._index.fill_(self.position)
        return self._index

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

    def _span(self, k: Tensor) -> tuple[int, int]:
        """The positions [start, end) new keys (B, Hkv, T, hd) go to, after the checks of `check_append`
        (an append past `max_len` is a CacheFullError naming the limit, not an indexing error)."""
        self.check_append(k.shape[0], k.shape[-2])
        return self.position, self.position + k.shape[-2]

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        """See `AttendingCache.attend`."""
        raise NotImplementedError

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token adds across every layer and sequence of the batch."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Every byte the cache holds (its buffers as allocated, a quantizer's rotation and codebook included)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    @property
    def bits_per_coordinate(self) -> float:
        """Every byte held, in bits, over the coordinates the cache can hold (max_len tokens): codes plus
        every byte of metadata (norms, scales, offsets, a rotation amortised over the whole cache)."""
        return self.nbytes * 8 / (self.max_len * self.coordinates_per_token)
