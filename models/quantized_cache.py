"""Quantized KV caches: TurboQuant (rotation + Lloyd-Max codebook) and a plain uniform baseline.

Both keep the cache contract of `models.kv_cache` and hold real packed bits. New tokens are
quantized once, when appended, and never re-quantized.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .attention import grouped_causal_softmax
from .kv_base import BufferedKVCache
from .turboquant import TurboQuantizer, pack_codes, packed_bytes, unpack_codes


def _chunks(end: int, size: int) -> list[tuple[int, int]]:
    """Token ranges [lo, hi) of at most `size` covering 0..end: attention reads a chunk at a time."""
    return [(lo, min(end, lo + size)) for lo in range(0, end, size)]


class TurboQuantKVCache(BufferedKVCache):
    """Keys and values as TurboQuant codes (`bits` per coordinate) plus one norm per vector.

    Attention never expands the cache to full precision: the query is rotated once and scored
    against codebook values chunk by chunk (transient memory bounded by `chunk` tokens), and the
    probability-weighted sum of values is formed in the rotated basis and de-rotated once. An
    optional full-precision window keeps the `window` most recent tokens exact as well (default 0).
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int, bits: int, *,
                 norm_dtype: torch.dtype = torch.float16, window: int = 0, chunk: int = 1024, seed: int = 0,
                 window_dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> None:
        super().__init__(batch, max_len, 2 * n_layer * batch * n_kv_head * head_dim)
        if window < 0 or chunk <= 0:
            raise ValueError(f"window={window} must be >= 0 and chunk={chunk} > 0")
        self.bits, self.head_dim, self.window, self.chunk = bits, head_dim, window, chunk
        self.quantizer = TurboQuantizer(head_dim, bits, seed=seed, norm_dtype=norm_dtype).to(device)
        code_bytes = packed_bytes(head_dim, bits)
        shape = (n_layer, batch, n_kv_head, max_len)
        for name in ("k", "v"):
            self.register_buffer(f"{name}_codes", torch.zeros(*shape, code_bytes, dtype=torch.uint8, device=device),
                                 persistent=False)
            self.register_buffer(f"{name}_norms", torch.zeros(*shape, dtype=norm_dtype, device=device),
                                 persistent=False)
            if window:
                self.register_buffer(f"{name}_window",
                                     torch.zeros(n_layer, batch, n_kv_head, window, head_dim, dtype=window_dtype,
                                                 device=device), persistent=False)

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token adds (codes and norms of K and V, every layer and sequence; no window)."""
        n_layer, batch, heads, _, code_bytes = self.k_codes.shape
        return 2 * n_layer * batch * heads * (code_bytes + self.k_norms.element_size())

    def _store(self, layer: int, name: str, x: Tensor, start: int, end: int) -> None:
        codes, norms = self.quantizer.quantize_rotated(x)  # (B, Hkv, T, hd), (B, Hkv, T)
        getattr(self, f"{name}_codes")[layer, :, :, start:end] = pack_codes(codes, self.bits)
        getattr(self, f"{name}_norms")[layer, :, :, start:end] = norms.to(self.k_norms.dtype)
        if self.window:
            slots = torch.arange(start, end, device=x.device) % self.window
            getattr(self, f"{name}_window")[layer, :, :, slots] = x.to(self.k_window.dtype)

    def _rotated(self, layer: int, name: str, lo: int, hi: int) -> Tensor:
        """Codebook values times norms of tokens lo..hi, in the rotated basis: (B, Hkv, hi - lo, hd)."""
        codes = unpack_codes(getattr(self, f"{name}_codes")[layer, :, :, lo:hi], self.bits, self.head_dim)
        norms = getattr(self, f"{name}_norms")[layer, :, :, lo:hi].float()
        return self.quantizer.dequantize_rotated(codes) * norms[..., None]

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store keys and values (B, Hkv, T, hd) of `layer` at the current position, without attending."""
        start, end = self.position, self.position + k.shape[-2]
        self._store(layer, "k", k, start, end)
        self._store(layer, "v", v, start, end)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        B, H, q_len, hd = q.shape
        n_kv = k.shape[1]
        groups = H // n_kv
        start, end = self.position, self.position + k.shape[-2]
        self.append(layer, k, v)
        exact_from = max(0, end - self.window) if self.window else end  # tokens >= this are exact
        q32 = q.float().reshape(B, n_kv, groups * q_len, hd)  # (B, Hkv, G*Tq, hd): query heads grouped
        q_rot = self.quantizer.rotate(q32)  # rotated once
        scores = torch.empty(B, n_kv, groups * q_len, end, device=q.device)  # (B, Hkv, G*Tq, end)
        for lo, hi in _chunks(exact_from, self.chunk):
            scores[..., lo:hi] = q_rot @ self._rotated(layer, "k", lo, hi).transpose(-1, -2)
        if exact_from < end:
            slots = torch.arange(exact_from, end, device=q.device) % self.window
            recent_k = self.k_window[layer][:, :, slots].float()  # (B, Hkv, W, hd)
            scores[..., exact_from:end] = q32 @ recent_k.transpose(-1, -2)
        probs = grouped_causal_softmax(scores / math.sqrt(hd), q_len, start, groups)  # (B, Hkv, G*Tq, end)
        out_rot = torch.zeros(B, n_kv, groups * q_len, hd, device=q.device)
        for lo, hi in _chunks(exact_from, self.chunk):
            out_rot += probs[..., lo:hi] @ self._rotated(layer, "v", lo, hi)
        out = self.quantizer.unrotate(out_rot)  # de-rotated once
        if exact_from < end:
            recent_v = self.v_window[layer][:, :, slots].float()  # (B, Hkv, W, hd)
            out = out + probs[..., exact_from:end] @ recent_v
        return out.reshape(B, H, q_len, hd).to(q.dtype)  # (B, H, Tq, hd)


class UniformKVCache(BufferedKVCache):
    """A plain min-max uniform quantizer at `bits`, KIVI-style: the baseline TurboQuant is compared with.

    Values are quantized per token (one scale and offset per vector); keys per channel over groups
    of `group` tokens (one scale and offset per channel and group). Keys of an incomplete group wait
    in full precision (at most `group - 1` tokens) and are quantized once when the group fills.
    Scales and offsets are fp16. Attention dequantizes `chunk` tokens at a time.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int, bits: int, *,
                 group: int = 32, chunk: int = 1024, device: str | torch.device | None = None) -> None:
        super().__init__(batch, max_len, 2 * n_layer * batch * n_kv_head * head_dim)
        if group % 8:
            raise ValueError(f"group={group} must be a multiple of 8 (keys are packed along the tokens of a group)")
        self.bits, self.head_dim, self.group, self.chunk = bits, head_dim, group, chunk
        self.levels = 2**bits - 1
        shape = (n_layer, batch, n_kv_head)
        n_groups = -(-max_len // group)
        padded = n_groups * group
        kw = dict(device=device)
        self.register_buffer("v_codes", torch.zeros(*shape, max_len, packed_bytes(head_dim, bits), dtype=torch.uint8,
                                                    **kw), persistent=False)
        self.register_buffer("v_scale", torch.zeros(*shape, max_len, 2, dtype=torch.float16, **kw), persistent=False)
        # keys: codes packed along the token axis per channel (group is a multiple of 8)
        self.register_buffer("k_codes", torch.zeros(*shape, head_dim, padded * bits // 8, dtype=torch.uint8, **kw),
                             persistent=False)
        self.register_buffer("k_scale", torch.zeros(*shape, n_groups, head_dim, 2, dtype=torch.float16, **kw),
                             persistent=False)
        self.register_buffer("k_residual", torch.zeros(*shape, group, head_dim, dtype=torch.float32, **kw),
                             persistent=False)

    @property
    def bytes_per_token(self) -> int:
        """Bytes per token once its key group is complete (codes, scales and offsets; K and V)."""
        n_layer, batch, heads = self.v_codes.shape[:3]
        per_vector = packed_bytes(self.head_dim, self.bits)
        v_bytes = per_vector + 2 * 2
        k_bytes = per_vector + self.head_dim * 2 * 2 / self.group
        return int(n_layer * batch * heads * (v_bytes + k_bytes))

    def _quantize(self, x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """Min-max codes of x along `dim`, and (scale, offset) pairs (fp16) per slice."""
        lo, hi = x.amin(dim=dim, keepdim=True), x.amax(dim=dim, keepdim=True)
        scale = ((hi - lo) / self.levels).clamp_min(1e-8)
        codes = torch.round((x - lo) / scale).clamp(0, self.levels)
        return codes, torch.cat((scale, lo), dim=dim).half()

    def _store_keys(self, layer: int, k: Tensor, start: int, end: int) -> None:
        for pos in range(start, end):  # residual fills one token at a time; full groups are quantized
            slot = pos % self.group
            self.k_residual[layer, :, :, slot] = k[:, :, pos - start].float()
            if slot == self.group - 1:
                g = pos // self.group
                codes, params = self._quantize(self.k_residual[layer], dim=2)  # per channel over the group
                span = slice(g * self.group * self.bits // 8, (g + 1) * self.group * self.bits // 8)
                self.k_codes[layer, :, :, :, span] = pack_codes(codes.transpose(-1, -2), self.bits)
                self.k_scale[layer, :, :, g] = params.transpose(-1, -2).reshape(*params.shape[:2], self.head_dim, 2)

    def _keys(self, layer: int, lo: int, hi: int, end: int) -> Tensor:
        """Dequantized keys lo..hi (B, Hkv, hi - lo, hd) of `end` stored; an incomplete last group comes
        from the full-precision residual."""
        full_end = (end // self.group) * self.group
        parts = []
        if lo < min(hi, full_end):
            g0, g1 = lo // self.group, -(-min(hi, full_end) // self.group)
            packed = self.k_codes[layer, :, :, :, g0 * self.group * self.bits // 8: g1 * self.group * self.bits // 8]
            codes = unpack_codes(packed, self.bits, (g1 - g0) * self.group).float()  # (B, Hkv, hd, n)
            params = self.k_scale[layer, :, :, g0:g1].float()  # (B, Hkv, groups, hd, 2)
            scale = params[..., 0].transpose(-1, -2).repeat_interleave(self.group, dim=-1)  # (B, Hkv, hd, n)
            offset = params[..., 1].transpose(-1, -2).repeat_interleave(self.group, dim=-1)
            keys = (codes * scale + offset).transpose(-1, -2)  # (B, Hkv, n, hd)
            parts.append(keys[:, :, lo - g0 * self.group: min(hi, full_end) - g0 * self.group])
        if hi > full_end:
            parts.append(self.k_residual[layer, :, :, max(lo, full_end) - full_end: hi - full_end])
        return torch.cat(parts, dim=2)

    def _values(self, layer: int, lo: int, hi: int) -> Tensor:
        codes = unpack_codes(self.v_codes[layer, :, :, lo:hi], self.bits, self.head_dim).float()
        params = self.v_scale[layer, :, :, lo:hi].float()
        return codes * params[..., :1] + params[..., 1:]

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store keys and values (B, Hkv, T, hd) of `layer` at the current position, without attending."""
        start, end = self.position, self.position + k.shape[-2]
        codes, params = self._quantize(v.float(), dim=-1)  # per token
        self.v_codes[layer, :, :, start:end] = pack_codes(codes, self.bits)
        self.v_scale[layer, :, :, start:end] = params
        self._store_keys(layer, k, start, end)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        B, H, q_len, hd = q.shape
        n_kv = k.shape[1]
        groups = H // n_kv
        start, end = self.position, self.position + k.shape[-2]
        self.append(layer, k, v)
        q32 = q.float().reshape(B, n_kv, groups * q_len, hd)
        scores = torch.empty(B, n_kv, groups * q_len, end, device=q.device)
        for lo, hi in _chunks(end, self.chunk):
            scores[..., lo:hi] = q32 @ self._keys(layer, lo, hi, end).transpose(-1, -2)
        probs = grouped_causal_softmax(scores / math.sqrt(hd), q_len, start, groups)  # (B, Hkv, G*Tq, end)
        out = torch.zeros(B, n_kv, groups * q_len, hd, device=q.device)
        for lo, hi in _chunks(end, self.chunk):
            out += probs[..., lo:hi] @ self._values(layer, lo, hi)
        return out.reshape(B, H, q_len, hd).to(q.dtype)
