"""Quantized KV caches: TurboQuant (rotation + Lloyd-Max codebook), its outlier-split and inner-product
(QJL) variants, and a plain uniform baseline.

Every kind keeps the cache contract of `models.kv_base` and holds real packed bits. New tokens are
quantized once, when appended, and never re-quantized. `QuantizedKVCache` holds what they share:
attention that reads the cache back a chunk at a time (transient memory bounded by `chunk` tokens)
and an optional exact copy of recent keys:
- `key_group=G`: the keys of the latest incomplete group of G tokens stay exact. The uniform
  baseline needs this (it quantizes keys per channel over whole groups); the TurboQuant kinds accept
  it so that both families can be compared with the same exact recent keys.
- `window=W` (TurboQuant only): the W most recent keys and values stay exact (a sliding window).

TurboQuant and the uniform baseline also offer a bucket view (`models.kv_base.BucketedCache`), so a compiled
decode step (`models.compiled`) runs over them: `QuantizedBucketView` stores at a position held in a
tensor and attends over the whole view under masks. What a cache and its view read the same way (codes
to scores and values over a static range of positions) is written once, in the `_...Reads` classes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .attention import grouped_causal_softmax
from .kv_base import BufferedKVCache
from .turboquant import (
    QJLSketch,
    QuantizedVectors,
    TurboQuantizer,
    pack_codes,
    packed_bytes,
    quantize_rotated,
    unpack_codes,
)

NORM_BYTES = 2  # every norm, scale and offset is stored in fp16


def _chunks(end: int, size: int) -> list[tuple[int, int]]:
    """Token ranges [lo, hi) of at most `size` covering 0..end: attention reads a chunk at a time. Within one
    chunk no loop over `end` is taken, so a compiled step with a symbolic position guards on `end <= size`
    rather than on its value."""
    if end <= size:
        return [(0, end)] if end > 0 else []
    return [(lo, min(end, lo + size)) for lo in range(0, end, size)]


class _QuantizedReads:
    """Reading stored codes over a static range of positions: shared by a quantized cache and its bucket view.
    Subclasses give `_stored_keys` and `_values` and may override `_prepare_queries` (work done once per
    query, such as a rotation) and `_key_scores` to work on codes directly."""

    head_dim: int

    def _prepare_queries(self, q32: Tensor) -> tuple[Tensor, ...]:
        """Per-query work done once before scoring every chunk (default: none)."""
        return (q32,)

    def _stored_keys(self, layer: int, lo: int, hi: int) -> Tensor:
        """Stored keys lo..hi (B, Hkv, hi - lo, hd), dequantized, in the original basis."""
        raise NotImplementedError

    def _values(self, layer: int, lo: int, hi: int) -> Tensor:
        """Stored values lo..hi (B, Hkv, hi - lo, hd), dequantized, in the original basis."""
        raise NotImplementedError

    def _key_scores(self, layer: int, queries: tuple[Tensor, ...], lo: int, hi: int) -> Tensor:
        """Scores (B, Hkv, G*Tq, hi - lo) of the prepared queries against stored keys lo..hi."""
        return queries[0] @ self._stored_keys(layer, lo, hi).transpose(-1, -2)


class QuantizedKVCache(_QuantizedReads, BufferedKVCache):
    """What the quantized caches share: chunked attention and exact recent keys (see the module doc).

    Subclasses implement `append`, `bytes_per_token`, `_stored_keys` and `_values` (stored keys and
    values lo..hi, dequantized, in the original basis); they may override `_prepare_queries` (work done
    once per query, such as a rotation), `_key_scores` and `_weighted_values` to work on codes directly.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int, *, key_group: int = 0,
                 window: int = 0, chunk: int = 1024, device: str | torch.device | None = None) -> None:
        super().__init__(batch, max_len, 2 * n_layer * batch * n_kv_head * head_dim)
        if key_group < 0 or window < 0 or chunk <= 0:
            raise ValueError(f"key_group={key_group} and window={window} must be >= 0 and chunk={chunk} > 0")
        if key_group and window:
            raise ValueError("key_group and window both keep recent keys exact; give one of them")
        self.head_dim, self.chunk, self.key_group, self.window = head_dim, chunk, key_group, window
        recent = key_group or window
        for name in ("k", "v") if window else ("k",) if key_group else ():  # rings: position p in slot p % recent
            self.register_buffer(f"{name}_recent", torch.zeros(n_layer, batch, n_kv_head, recent, head_dim,
                                                               device=device), persistent=False)

    def exact_keys_from(self, end: int) -> int:
        """The first of `end` stored positions whose key is read exact (`end` when none is)."""
        if self.key_group:
            return (end // self.key_group) * self.key_group
        return max(0, end - self.window) if self.window else end

    def exact_values_from(self, end: int) -> int:
        """The first of `end` stored positions whose value is read exact (`end` when none is)."""
        return max(0, end - self.window) if self.window else end

    def _remember_recent(self, layer: int, k: Tensor, v: Tensor, start: int) -> None:
        """Copy keys and values (B, Hkv, T, hd) at positions start.. into the exact rings (the positions that
        can still be read exact)."""
        recent = self.key_group or self.window
        if not recent:
            return
        end = start + k.shape[-2]
        first = max(start, end - recent)
        slots = torch.arange(first, end, device=k.device) % recent
        self.k_recent[layer, :, :, slots] = k[:, :, first - start:].float()
        if self.window:
            self.v_recent[layer, :, :, slots] = v[:, :, first - start:].float()

    def _exact_values(self, layer: int, probs: Tensor, end: int) -> Tensor | float:
        """sum_t probs[..., t] v_t over the values read exact (0. when none is)."""
        exact_from = self.exact_values_from(end)
        if exact_from == end:
            return 0.0
        slots = torch.arange(exact_from, end, device=probs.device) % self.window
        return probs[..., exact_from:end] @ self.v_recent[layer][:, :, slots]

    def _weighted_values(self, layer: int, probs: Tensor, end: int) -> Tensor:
        """sum_t probs[..., t] v_t over the `end` stored values: (B, Hkv, G*Tq, hd)."""
        out = torch.zeros(*probs.shape[:-1], self.head_dim, device=probs.device)
        for lo, hi in _chunks(self.exact_values_from(end), self.chunk):
            out += probs[..., lo:hi] @ self._values(layer, lo, hi)
        return out + self._exact_values(layer, probs, end)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        B, H, q_len, hd = q.shape
        n_kv = k.shape[1]
        groups = H // n_kv
        start, end = self.position, self.position + k.shape[-2]
        self.append(layer, k, v)
        q32 = q.float().reshape(B, n_kv, groups * q_len, hd)  # (B, Hkv, G*Tq, hd): query heads grouped
        queries = self._prepare_queries(q32)
        exact_from = self.exact_keys_from(end)
        scores = torch.empty(B, n_kv, groups * q_len, end, device=q.device)  # (B, Hkv, G*Tq, end)
        for lo, hi in _chunks(exact_from, self.chunk):
            scores[..., lo:hi] = self._key_scores(layer, queries, lo, hi)
        if exact_from < end:
            slots = torch.arange(exact_from, end, device=q.device) % self.k_recent.shape[3]
            scores[..., exact_from:end] = q32 @ self.k_recent[layer][:, :, slots].transpose(-1, -2)
        probs = grouped_causal_softmax(scores / math.sqrt(hd), q_len, start, groups)  # (B, Hkv, G*Tq, end)
        return self._weighted_values(layer, probs, end).reshape(B, H, q_len, hd).to(q.dtype)  # (B, H, Tq, hd)

    def readback(self, layer: int, end: int) -> tuple[Tensor, Tensor]:
        """Keys and values 0..end (B, Hkv, end, hd) of `layer` as attention reads them (for tests): the
        exact recent keys included; for TurboQuant_prod the keys' first stage (the sketch adds to scores)."""
        exact_from = self.exact_keys_from(end)
        keys = [self._stored_keys(layer, lo, hi) for lo, hi in _chunks(exact_from, self.chunk)]
        if exact_from < end:
            keys.append(self.k_recent[layer][:, :, torch.arange(exact_from, end) % self.k_recent.shape[3]])
        values_from = self.exact_values_from(end)
        values = [self._values(layer, lo, hi) for lo, hi in _chunks(values_from, self.chunk)]
        if values_from < end:
            values.append(self.v_recent[layer][:, :, torch.arange(values_from, end) % self.window])
        return torch.cat(keys, dim=2), torch.cat(values, dim=2)


class QuantizedBucketView(_QuantizedReads):
    """The `AttendingCache` a compiled step sees of a quantized cache (`models.kv_base.BucketedCache`): the
    cache's buffers over its first `length` positions (views: writes land in the cache), the position as a
    0-d tensor, and the cache's options. New tokens are stored at the position (`_store`, the kind's); the
    exact rings are updated without a branch on the position; attention covers all `length` positions under
    the causal mask, reading the codes a chunk at a time as the cache does. The host checks the append
    before the step and advances the cache after it."""

    def __init__(self, cache: QuantizedKVCache, length: int) -> None:
        self.position = cache.position_index()
        self.length = length  # positions the view covers: static for every step in one bucket
        self.head_dim, self.chunk = cache.head_dim, cache.chunk
        self.key_group, self.window = cache.key_group, cache.window
        self.recent = cache.key_group or cache.window
        self.k_recent = getattr(cache, "k_recent", None)  # (n_layer, B, Hkv, recent, hd) rings, or None
        self.v_recent = getattr(cache, "v_recent", None)

    def check_append(self, batch: int, n_tokens: int) -> None:
        """Checked on the host before the step."""

    def advance(self, n_tokens: int) -> None:
        """Advanced on the host after the step."""

    def _store(self, layer: int, k: Tensor, v: Tensor, positions: Tensor) -> None:
        """Quantize and store keys and values (B, Hkv, T, hd) of `layer` at `positions` (T,); the exact rings
        still hold what they held before this append."""
        raise NotImplementedError

    def _exact_keys_from(self, end: Tensor) -> Tensor:
        """As `QuantizedKVCache.exact_keys_from`, on a position tensor."""
        if self.key_group:
            return torch.div(end, self.key_group, rounding_mode="floor") * self.key_group
        return (end - self.window).clamp_min(0) if self.window else end

    def _remember_recent(self, layer: int, k: Tensor, v: Tensor, start: Tensor) -> None:
        """Each ring slot s takes the newest of this append's tokens at a position p = s (mod ring size), if any."""
        if not self.recent:
            return
        n_new = k.shape[-2]
        slot = torch.arange(self.recent, device=k.device)  # (R,)
        latest = start + n_new - 1 - (start + n_new - 1 - slot) % self.recent  # (R,): newest position in each slot
        fresh = latest >= start  # (R,): slots this append writes
        source = (latest - start).clamp(0, n_new - 1)  # (R,): which new token
        for ring, new in ((self.k_recent, k), (self.v_recent, v)) if self.window else ((self.k_recent, k),):
            ring[layer].copy_(torch.where(fresh[:, None], new.float()[:, :, source], ring[layer]))

    def _weighted_values(self, layer: int, probs: Tensor, quantized: Tensor) -> Tensor:
        """sum_t probs[..., t] v_t over the quantized values (`quantized` (L,): where they are read), (B, Hkv,
        G*Tq, hd)."""
        probs = probs * quantized
        out = torch.zeros(*probs.shape[:-1], self.head_dim, device=probs.device)
        for lo, hi in _chunks(self.length, self.chunk):
            out += probs[..., lo:hi] @ self._values(layer, lo, hi)
        return out

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        B, H, q_len, hd = q.shape
        n_kv = k.shape[1]
        groups = H // n_kv
        start = self.position
        positions = start + torch.arange(k.shape[-2], device=k.device)  # (T,)
        end = start + k.shape[-2]
        self._store(layer, k, v, positions)
        self._remember_recent(layer, k, v, start)
        q32 = q.float().reshape(B, n_kv, groups * q_len, hd)  # (B, Hkv, G*Tq, hd): query heads grouped
        queries = self._prepare_queries(q32)
        scores = torch.cat([self._key_scores(layer, queries, lo, hi) for lo, hi in _chunks(self.length, self.chunk)],
                           dim=-1)  # (B, Hkv, G*Tq, L)
        slots = torch.arange(self.length, device=q.device)  # (L,)
        if self.recent:  # keys read exact from the ring
            exact = (slots >= self._exact_keys_from(end)) & (slots < end)  # (L,)
            ring_scores = q32 @ self.k_recent[layer].transpose(-1, -2)  # (B, Hkv, G*Tq, R)
            scores = torch.where(exact, ring_scores[..., slots % self.recent], scores)
        mask = (slots[None, :] <= positions[:, None]).repeat(groups, 1)  # (G*Tq, L)
        probs = torch.softmax((scores / math.sqrt(hd)).masked_fill(~mask, float("-inf")), dim=-1)  # (B, Hkv, G*Tq, L)
        if self.window:  # values read exact from the ring
            exact_values = slots >= (end - self.window).clamp_min(0)  # (L,)
            out = self._weighted_values(layer, probs, ~exact_values) + (probs * exact_values) @ self.v_recent[layer][
                :, :, slots % self.window]
        else:
            out = self._weighted_values(layer, probs, torch.ones_like(slots, dtype=torch.bool))
        return out.reshape(B, H, q_len, hd).to(q.dtype)  # (B, H, Tq, hd)


class _TurboQuantReads(_QuantizedReads):
    """TurboQuant's codes read back: queries rotated once, scored against codebook values times norms.
    The quantizer is read through its tensors (`rotation`, `levels`): a bucket view holds them as plain
    tensors, so a compiled step takes them as inputs and every cache of a kind shares its graphs."""

    k_codes: Tensor  # (n_layer, B, Hkv, positions, code bytes)
    k_norms: Tensor  # (n_layer, B, Hkv, positions)
    v_codes: Tensor
    v_norms: Tensor
    bits: int
    rotation: Tensor  # (hd, hd): R of y = R x
    levels: Tensor  # (2^bits,): the codebook, unit scale

    def _rotated(self, layer: int, name: str, lo: int, hi: int) -> Tensor:
        """Codebook values times norms of tokens lo..hi, in the rotated basis: (B, Hkv, hi - lo, hd)."""
        codes = unpack_codes(getattr(self, f"{name}_codes")[layer, :, :, lo:hi], self.bits, self.head_dim)
        norms = getattr(self, f"{name}_norms")[layer, :, :, lo:hi].float()
        return self.levels[codes] * norms[..., None]

    def _prepare_queries(self, q32: Tensor) -> tuple[Tensor, ...]:
        return (q32 @ self.rotation.T,)  # rotated once: (B, Hq, Tq, hd)

    def _key_scores(self, layer: int, queries: tuple[Tensor, ...], lo: int, hi: int) -> Tensor:
        return queries[0] @ self._rotated(layer, "k", lo, hi).transpose(-1, -2)

    def _stored_keys(self, layer: int, lo: int, hi: int) -> Tensor:
        return self._rotated(layer, "k", lo, hi) @ self.rotation  # de-rotated: (B, Hkv, hi - lo, hd)

    def _values(self, layer: int, lo: int, hi: int) -> Tensor:
        return self._rotated(layer, "v", lo, hi) @ self.rotation


class _TurboQuantBucket(_TurboQuantReads, QuantizedBucketView):
    """A TurboQuant cache's bucket view."""

    def __init__(self, cache: TurboQuantKVCache, length: int) -> None:
        super().__init__(cache, length)
        self.bits = cache.bits
        quantizer = cache.quantizer
        self.rotation, self.levels, self.thresholds = quantizer.rotation, quantizer.levels, quantizer.thresholds
        for name in ("k_codes", "k_norms", "v_codes", "v_norms"):
            setattr(self, name, getattr(cache, name)[:, :, :, :length])

    def _store(self, layer: int, k: Tensor, v: Tensor, positions: Tensor) -> None:
        for name, x in (("k", k), ("v", v)):
            codes, norms = quantize_rotated(x, self.rotation, self.thresholds)  # (B, Hkv, T, hd), (B, Hkv, T)
            getattr(self, f"{name}_codes")[layer].index_copy_(2, positions, pack_codes(codes, self.bits))
            getattr(self, f"{name}_norms")[layer].index_copy_(2, positions, norms.to(self.k_norms.dtype))

    def _weighted_values(self, layer: int, probs: Tensor, quantized: Tensor) -> Tensor:
        probs = probs * quantized
        out_rot = torch.zeros(*probs.shape[:-1], self.head_dim, device=probs.device)
        for lo, hi in _chunks(self.length, self.chunk):
            out_rot += probs[..., lo:hi] @ self._rotated(layer, "v", lo, hi)
        return out_rot @ self.rotation  # de-rotated once


class TurboQuantKVCache(_TurboQuantReads, QuantizedKVCache):
    """Keys and values as TurboQuant codes (`bits` per coordinate) plus one norm per vector.

    Attention never expands the cache to full precision: the query is rotated once and scored against
    codebook values chunk by chunk, and the probability-weighted sum of values is formed in the rotated
    basis and de-rotated once.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int, bits: int, *,
                 norm_dtype: torch.dtype = torch.float16, window: int = 0, key_group: int = 0, chunk: int = 1024,
                 seed: int = 0, device: str | torch.device | None = None) -> None:
        super().__init__(n_layer, batch, n_kv_head, head_dim, max_len, key_group=key_group, window=window,
                         chunk=chunk, device=device)
        self.bits = bits
        self.quantizer = TurboQuantizer(head_dim, bits, seed=seed, norm_dtype=norm_dtype).to(device)
        code_bytes = packed_bytes(head_dim, bits)
        shape = (n_layer, batch, n_kv_head, max_len)
        for name in ("k", "v"):
            self.register_buffer(f"{name}_codes", torch.zeros(*shape, code_bytes, dtype=torch.uint8, device=device),
                                 persistent=False)
            self.register_buffer(f"{name}_norms", torch.zeros(*shape, dtype=norm_dtype, device=device),
                                 persistent=False)

    @property
    def rotation(self) -> Tensor:
        return self.quantizer.rotation  # (hd, hd)

    @property
    def levels(self) -> Tensor:
        return self.quantizer.levels  # (2^bits,)

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token adds (codes and norms of K and V, every layer and sequence; no window)."""
        n_layer, batch, heads, _, code_bytes = self.k_codes.shape
        return 2 * n_layer * batch * heads * (code_bytes + self.k_norms.element_size())

    def _store(self, layer: int, name: str, x: Tensor, start: int, end: int) -> None:
        codes, norms = self.quantizer.quantize_rotated(x)  # (B, Hkv, T, hd), (B, Hkv, T)
        getattr(self, f"{name}_codes")[layer, :, :, start:end] = pack_codes(codes, self.bits)
        getattr(self, f"{name}_norms")[layer, :, :, start:end] = norms.to(self.k_norms.dtype)

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store keys and values (B, Hkv, T, hd) of `layer` at the current position, without attending."""
        start, end = self._span(k)
        self._store(layer, "k", k, start, end)
        self._store(layer, "v", v, start, end)
        self._remember_recent(layer, k, v, start)

    def _weighted_values(self, layer: int, probs: Tensor, end: int) -> Tensor:
        out_rot = torch.zeros(*probs.shape[:-1], self.head_dim, device=probs.device)
        for lo, hi in _chunks(self.exact_values_from(end), self.chunk):
            out_rot += probs[..., lo:hi] @ self._rotated(layer, "v", lo, hi)
        return self.quantizer.unrotate(out_rot) + self._exact_values(layer, probs, end)  # de-rotated once

    def bucket_view(self, bucket: int) -> QuantizedBucketView:
        """See `models.kv_base.BucketedCache`."""
        return _TurboQuantBucket(self, min(bucket, self.max_len))


class SplitTurboQuantKVCache(QuantizedKVCache):
    """TurboQuant over an outlier-channel split (the paper's section 4.3): in every layer and KV head the
    `outliers` channels of largest mean square get one instance at `bits + 1`, the others a second,
    independent instance at `bits`; each instance stores its codes and an fp16 norm per vector.

    The split is fixed, per layer and head and separately for keys and values, from the first tokens
    stored (the prompt), and kept as a channel permutation (int16, a fixed part of the cache). At
    head_dim 128 with 32 outliers, bits 2 and 3 give the paper's 2.5 and 3.5 bits per coordinate.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int, bits: int, *,
                 outliers: int | None = None, key_group: int = 0, chunk: int = 1024, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(n_layer, batch, n_kv_head, head_dim, max_len, key_group=key_group, chunk=chunk,
                         device=device)
        self.outliers = head_dim // 4 if outliers is None else outliers
        if not 3 <= self.outliers <= head_dim - 3:
            raise ValueError(f"outliers={self.outliers} must be between 3 and head_dim - 3 = {head_dim - 3}")
        self.bits = bits
        self.high = TurboQuantizer(self.outliers, bits + 1, seed=seed).to(device)
        self.low = TurboQuantizer(head_dim - self.outliers, bits, seed=seed + 1).to(device)
        shape = (n_layer, batch, n_kv_head, max_len)
        for name in ("k", "v"):
            for part, quantizer in (("high", self.high), ("low", self.low)):
                self.register_buffer(f"{name}_{part}_codes", torch.zeros(
                    *shape, packed_bytes(quantizer.dim, quantizer.bits), dtype=torch.uint8, device=device),
                    persistent=False)
                self.register_buffer(f"{name}_{part}_norms", torch.zeros(*shape, dtype=torch.float16, device=device),
                                     persistent=False)
            self.register_buffer(f"{name}_channels", torch.zeros(n_layer, n_kv_head, head_dim, dtype=torch.int16,
                                                                 device=device), persistent=False)
        self.calibrated = [False] * n_layer

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token adds: both instances' codes and norms, K and V, every layer and sequence."""
        n_layer, batch, heads = self.k_high_codes.shape[:3]
        per_vector = self.k_high_codes.shape[-1] + self.k_low_codes.shape[-1] + 2 * NORM_BYTES
        return 2 * n_layer * batch * heads * per_vector

    def _calibrate(self, layer: int, k: Tensor, v: Tensor) -> None:
        for name, x in (("k", k), ("v", v)):
            energy = x.float().pow(2).mean(dim=(0, 2))  # (Hkv, hd): mean square of every channel
            order = energy.argsort(dim=-1, descending=True)  # outliers first
            getattr(self, f"{name}_channels")[layer] = order.to(torch.int16)
        self.calibrated[layer] = True

    def _permutation(self, layer: int, name: str, x: Tensor) -> Tensor:
        """The channel order of `layer` and `name`, expanded to x's shape (B, Hkv, T, hd)."""
        return getattr(self, f"{name}_channels")[layer].long()[None, :, None, :].expand_as(x)

    def _store(self, layer: int, name: str, x: Tensor, start: int, end: int) -> None:
        permuted = x.float().gather(-1, self._permutation(layer, name, x))  # (B, Hkv, T, hd): outliers first
        for part, quantizer, piece in (("high", self.high, permuted[..., :self.outliers]),
                                       ("low", self.low, permuted[..., self.outliers:])):
            q = quantizer.quantize(piece)
            getattr(self, f"{name}_{part}_codes")[layer, :, :, start:end] = q.codes
            getattr(self, f"{name}_{part}_norms")[layer, :, :, start:end] = q.norms

    def _read(self, layer: int, name: str, lo: int, hi: int) -> Tensor:
        """Stored vectors lo..hi (B, Hkv, hi - lo, hd), dequantized, in the original channel order."""
        parts = [quantizer.dequantize(QuantizedVectors(getattr(self, f"{name}_{part}_codes")[layer, :, :, lo:hi],
                                                       getattr(self, f"{name}_{part}_norms")[layer, :, :, lo:hi],
                                                       quantizer.bits, quantizer.dim))
                 for part, quantizer in (("high", self.high), ("low", self.low))]
        permuted = torch.cat(parts, dim=-1)  # (B, Hkv, n, hd): outliers first
        return torch.empty_like(permuted).scatter_(-1, self._permutation(layer, name, permuted), permuted)

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store keys and values (B, Hkv, T, hd) of `layer` at the current position, without attending."""
        if not self.calibrated[layer]:
            self._calibrate(layer, k, v)
        start, end = self._span(k)
        self._store(layer, "k", k, start, end)
        self._store(layer, "v", v, start, end)
        self._remember_recent(layer, k, v, start)

    def reset(self) -> None:
        super().reset()
        self.calibrated = [False] * len(self.calibrated)

    def _stored_keys(self, layer: int, lo: int, hi: int) -> Tensor:
        return self._read(layer, "k", lo, hi)

    def _values(self, layer: int, lo: int, hi: int) -> Tensor:
        return self._read(layer, "v", lo, hi)


class TurboQuantProdKVCache(QuantizedKVCache):
    """TurboQuant_prod keys (the paper's inner-product quantizer) with TurboQuant values at `bits`.

    A key is stored as TurboQuant at `bits - 1` (codes and an fp16 norm) plus a 1-bit QJL sketch of its
    residual r = k - k_mse and |r| (fp16). Attention scores are <q, k_mse> + |r| sqrt(pi/2) / hd
    <S q, sign(S r)>: unbiased over the draw of S, where the MSE quantizer alone shrinks them.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int, bits: int, *,
                 key_group: int = 0, chunk: int = 1024, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(n_layer, batch, n_kv_head, head_dim, max_len, key_group=key_group, chunk=chunk,
                         device=device)
        if not isinstance(bits, int) or isinstance(bits, bool) or bits < 2:
            raise ValueError(f"bits={bits!r} is not supported by TurboQuant_prod; allowed values: 2, 3, 4 "
                             "(its first stage takes bits - 1)")
        self.bits = bits
        self.key_mse = TurboQuantizer(head_dim, bits - 1, seed=seed).to(device)
        self.key_sketch = QJLSketch(head_dim, seed=seed + 1).to(device)
        self.value_mse = TurboQuantizer(head_dim, bits, seed=seed + 2).to(device)
        shape = (n_layer, batch, n_kv_head, max_len)
        for name, width in (("k_codes", packed_bytes(head_dim, bits - 1)), ("k_signs", packed_bytes(head_dim, 1)),
                            ("v_codes", packed_bytes(head_dim, bits))):
            self.register_buffer(name, torch.zeros(*shape, width, dtype=torch.uint8, device=device), persistent=False)
        for name in ("k_norms", "k_residual_norms", "v_norms"):
            self.register_buffer(name, torch.zeros(*shape, dtype=torch.float16, device=device), persistent=False)

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token adds: key codes, sketch and two norms, value codes and norm; every layer."""
        n_layer, batch, heads = self.k_codes.shape[:3]
        per_token = self.k_codes.shape[-1] + self.k_signs.shape[-1] + self.v_codes.shape[-1] + 3 * NORM_BYTES
        return n_layer * batch * heads * per_token

    def _stored_keys(self, layer: int, lo: int, hi: int) -> Tensor:
        """The keys' first stage lo..hi (B, Hkv, hi - lo, hd), dequantized (scores add the sketch's estimate)."""
        return self.key_mse.dequantize(QuantizedVectors(self.k_codes[layer, :, :, lo:hi],
                                                        self.k_norms[layer, :, :, lo:hi], self.bits - 1,
                                                        self.head_dim))

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store keys and values (B, Hkv, T, hd) of `layer` at the current position, without attending."""
        start, end = self._span(k)
        first = self.key_mse.quantize(k)
        residual = k.float() - self.key_mse.dequantize(first)  # (B, Hkv, T, hd): what the first stage missed
        self.k_codes[layer, :, :, start:end] = first.codes
        self.k_norms[layer, :, :, start:end] = first.norms
        self.k_signs[layer, :, :, start:end] = pack_codes(self.key_sketch.signs(residual), 1)
        self.k_residual_norms[layer, :, :, start:end] = residual.norm(dim=-1).half()
        values = self.value_mse.quantize(v)
        self.v_codes[layer, :, :, start:end] = values.codes
        self.v_norms[layer, :, :, start:end] = values.norms
        self._remember_recent(layer, k, v, start)

    def _prepare_queries(self, q32: Tensor) -> tuple[Tensor, ...]:
        return q32, self.key_sketch.project(q32)  # S q once per query

    def _key_scores(self, layer: int, queries: tuple[Tensor, ...], lo: int, hi: int) -> Tensor:
        q32, projected = queries
        signs = unpack_codes(self.k_signs[layer, :, :, lo:hi], 1, self.head_dim)  # (B, Hkv, n, hd)
        return q32 @ self._stored_keys(layer, lo, hi).transpose(-1, -2) + self.key_sketch.inner_products(
            projected, signs, self.k_residual_norms[layer, :, :, lo:hi])

    def _values(self, layer: int, lo: int, hi: int) -> Tensor:
        return self.value_mse.dequantize(QuantizedVectors(self.v_codes[layer, :, :, lo:hi],
                                                          self.v_norms[layer, :, :, lo:hi], self.bits,
                                                          self.head_dim))


def minmax_quantize(x: Tensor, dim: int, levels: int) -> tuple[Tensor, Tensor]:
    """Min-max codes of x along `dim` in 0..levels, and the (scale, offset) pairs (fp16) of each slice,
    stacked along `dim`."""
    lo, hi = x.amin(dim=dim, keepdim=True), x.amax(dim=dim, keepdim=True)
    scale = ((hi - lo) / levels).clamp_min(1e-8)
    codes = torch.round((x - lo) / scale).clamp(0, levels)
    return codes, torch.cat((scale, lo), dim=dim).half()


class _UniformReads(_QuantizedReads):
    """The uniform baseline's codes read back: keys per channel over whole groups, values per token."""

    k_codes: Tensor  # (n_layer, B, Hkv, hd, packed bytes along the tokens of whole groups)
    k_scale: Tensor  # (n_layer, B, Hkv, groups, hd, 2)
    v_codes: Tensor  # (n_layer, B, Hkv, positions, code bytes)
    v_scale: Tensor  # (n_layer, B, Hkv, positions, 2)
    bits: int
    key_group: int

    def _stored_keys(self, layer: int, lo: int, hi: int) -> Tensor:
        """Dequantized keys lo..hi (B, Hkv, hi - lo, hd), all in complete groups."""
        G = self.key_group
        g0, g1 = lo // G, -(-hi // G)
        packed = self.k_codes[layer, :, :, :, g0 * G * self.bits // 8: g1 * G * self.bits // 8]
        codes = unpack_codes(packed, self.bits, (g1 - g0) * G).float()  # (B, Hkv, hd, n)
        params = self.k_scale[layer, :, :, g0:g1].float()  # (B, Hkv, groups, hd, 2)
        scale = params[..., 0].transpose(-1, -2).repeat_interleave(G, dim=-1)  # (B, Hkv, hd, n)
        offset = params[..., 1].transpose(-1, -2).repeat_interleave(G, dim=-1)
        keys = (codes * scale + offset).transpose(-1, -2)  # (B, Hkv, n, hd)
        return keys[:, :, lo - g0 * G: hi - g0 * G]

    def _values(self, layer: int, lo: int, hi: int) -> Tensor:
        codes = unpack_codes(self.v_codes[layer, :, :, lo:hi], self.bits, self.head_dim).float()
        params = self.v_scale[layer, :, :, lo:hi].float()
        return codes * params[..., :1] + params[..., 1:]


class UniformKVCache(_UniformReads, QuantizedKVCache):
    """A plain min-max uniform quantizer at `bits`, KIVI-style: the baseline TurboQuant is compared with.

    Values are quantized per token (one scale and offset per vector); keys per channel over groups
    of `key_group` tokens (one scale and offset per channel and group). Keys of an incomplete group wait
    in full precision (at most `key_group - 1` tokens) and are quantized once when the group fills.
    Scales and offsets are fp16.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int, bits: int, *,
                 key_group: int = 32, chunk: int = 1024, device: str | torch.device | None = None) -> None:
        if key_group <= 0 or key_group % 8:
            raise ValueError(f"key_group={key_group} must be a positive multiple of 8 (keys are packed along the "
                             "tokens of a group)")
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise ValueError(f"bits={bits!r} is not supported by the uniform cache; allowed values: an integer "
                             "from 1 to 8")
        super().__init__(n_layer, batch, n_kv_head, head_dim, max_len, key_group=key_group, chunk=chunk,
                         device=device)
        self.bits = bits
        self.levels = 2**bits - 1
        shape = (n_layer, batch, n_kv_head)
        n_groups = -(-max_len // key_group)
        kw = dict(device=device)
        self.register_buffer("v_codes", torch.zeros(*shape, max_len, packed_bytes(head_dim, bits), dtype=torch.uint8,
                                                    **kw), persistent=False)
        self.register_buffer("v_scale", torch.zeros(*shape, max_len, 2, dtype=torch.float16, **kw), persistent=False)
        # keys: codes packed along the token axis per channel (a group is a multiple of 8 tokens)
        self.register_buffer("k_codes", torch.zeros(*shape, head_dim, n_groups * key_group * bits // 8,
                                                    dtype=torch.uint8, **kw), persistent=False)
        self.register_buffer("k_scale", torch.zeros(*shape, n_groups, head_dim, 2, dtype=torch.float16, **kw),
                             persistent=False)

    @property
    def bytes_per_token(self) -> int:
        """Bytes per token once its key group is complete (codes, scales and offsets; K and V)."""
        n_layer, batch, heads = self.v_codes.shape[:3]
        per_vector = packed_bytes(self.head_dim, self.bits)
        v_bytes = per_vector + 2 * NORM_BYTES
        k_bytes = per_vector + self.head_dim * 2 * NORM_BYTES / self.key_group
        return int(n_layer * batch * heads * (v_bytes + k_bytes))

    def _store_keys(self, layer: int, k: Tensor, start: int, end: int) -> None:
        """Quantize every group that fills with these keys (B, Hkv, T, hd); its earlier tokens come from the
        exact ring, which `append` then updates."""
        G = self.key_group
        for g in range(start // G, end // G):  # groups completed by this append
            lo = g * G
            earlier = self.k_recent[layer, :, :, : max(0, start - lo)]  # tokens lo..start, stored before
            group = torch.cat((earlier, k[:, :, max(lo, start) - start: lo + G - start].float()), dim=2)
            codes, params = minmax_quantize(group, 2, self.levels)  # per channel over the group: (B, Hkv, G, hd)
            span = slice(lo * self.bits // 8, (lo + G) * self.bits // 8)
            self.k_codes[layer, :, :, :, span] = pack_codes(codes.transpose(-1, -2), self.bits)
            self.k_scale[layer, :, :, g] = params.transpose(-1, -2).reshape(*params.shape[:2], self.head_dim, 2)

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store keys and values (B, Hkv, T, hd) of `layer` at the current position, without attending."""
        start, end = self._span(k)
        codes, params = minmax_quantize(v.float(), -1, self.levels)  # per token
        self.v_codes[layer, :, :, start:end] = pack_codes(codes, self.bits)
        self.v_scale[layer, :, :, start:end] = params
        self._store_keys(layer, k, start, end)
        self._remember_recent(layer, k, v, start)

    def bucket_view(self, bucket: int) -> QuantizedBucketView:
        """See `models.kv_base.BucketedCache`."""
        return _UniformBucket(self, min(bucket, self.max_len))


class _UniformBucket(_UniformReads, QuantizedBucketView):
    """A uniform cache's bucket view. A single-token step quantizes the key group it writes into (from the
    ring, stale slots and all: an incomplete group is read exact and quantized again until it completes);
    a prompt quantizes every group it completes, all groups of the view at once, kept where completed."""

    def __init__(self, cache: UniformKVCache, length: int) -> None:
        super().__init__(cache, length)
        self.bits, self.levels = cache.bits, cache.levels
        self.groups = -(-length // cache.key_group)  # key groups the view covers (the last may be partial)
        self.v_codes, self.v_scale = cache.v_codes[:, :, :, :length], cache.v_scale[:, :, :, :length]
        self.k_codes = cache.k_codes[..., : self.groups * cache.key_group * self.bits // 8]
        self.k_scale = cache.k_scale[:, :, :, : self.groups]

    def _store(self, layer: int, k: Tensor, v: Tensor, positions: Tensor) -> None:
        codes, params = minmax_quantize(v.float(), -1, self.levels)  # per token
        self.v_codes[layer].index_copy_(2, positions, pack_codes(codes, self.bits))
        self.v_scale[layer].index_copy_(2, positions, params)
        G, group_bytes = self.key_group, self.key_group * self.bits // 8
        start, n_new = positions[0], k.shape[-2]
        if n_new == 1:  # the group of this token: ring slots 0..G-1 hold its positions (p % G)
            group = self.k_recent[layer].index_copy(2, (start % G)[None], k.float())  # (B, Hkv, G, hd)
            codes, params = minmax_quantize(group, 2, self.levels)  # (B, Hkv, G, hd), (B, Hkv, 2, hd)
            g = torch.div(start, G, rounding_mode="floor")
            self.k_codes[layer].index_copy_(3, g * group_bytes + torch.arange(group_bytes, device=k.device),
                                            pack_codes(codes.transpose(-1, -2), self.bits))  # (B, Hkv, hd, G bytes)
            self.k_scale[layer].index_copy_(2, g[None], params.transpose(-1, -2)[:, :, None])  # (B, Hkv, 1, hd, 2)
            return
        t = torch.arange(self.groups * G, device=k.device)  # (nG*G,): every position of the view's groups
        new = (t >= start) & (t < start + n_new)
        keys = torch.where(new[:, None], k.float()[:, :, (t - start).clamp(0, n_new - 1)],
                           self.k_recent[layer][:, :, t % G])  # (B, Hkv, nG*G, hd): earlier ones from the ring
        codes, params = minmax_quantize(keys.unflatten(2, (self.groups, G)), 3, self.levels)  # (B,Hkv,nG,G,hd)
        group_end = (torch.arange(self.groups, device=k.device) + 1) * G  # (nG,)
        done = (group_end <= start + n_new) & (group_end > start)  # (nG,): the groups this append completes
        packed = pack_codes(codes.transpose(-1, -2), self.bits).transpose(2, 3).flatten(3)  # (B, Hkv, hd, nG*Gb)
        self.k_codes[layer].copy_(torch.where(done.repeat_interleave(group_bytes), packed, self.k_codes[layer]))
        self.k_scale[layer].copy_(torch.where(done[:, None, None], params.transpose(-1, -2), self.k_scale[layer]))
