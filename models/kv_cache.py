"""The KV-cache kinds: one registry keyed by the public kind name, the only place a kind is parsed.

Kinds: `raw-fp32`, `raw-fp16`, `raw-bf16` (full-precision keys and values); `tq2`..`tq4` (TurboQuant:
random rotation + Lloyd-Max codebook, packed codes and an fp16 norm per vector) and `tq2.5`, `tq3.5`
(the paper's outlier-channel split: a quarter of the channels one bit higher, two instances; named by
their bits per coordinate at head_dim 128); `tq2-prod`..`tq4-prod` (TurboQuant_prod keys: b-1 bits
plus a 1-bit QJL sketch of the residual; values at b bits); `uniform2`..`uniform4` (a KIVI-style
min-max baseline: keys per channel over 32-token groups, values per token, fp16 scales and offsets).
Each `CacheSpec` knows its factory, family, code bits and options; bytes and bits per coordinate
(every byte of metadata included) come from the cache it builds, counted on the meta device, so they
are exact and cost nothing. `register` adds a kind at run time.

Every cache keeps the contract of `models.kv_base` (`KVCache`, `AttendingCache`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import ArchConfig
from .kv_base import AttendingCache, BufferedKVCache, CacheFullError, KVCache
from .quantized_cache import SplitTurboQuantKVCache, TurboQuantKVCache, TurboQuantProdKVCache, UniformKVCache
from .raw_cache import RawKVCache
from .registry import Registry

__all__ = ["CACHE_SPECS", "AttendingCache", "BufferedKVCache", "CacheFullError", "CacheSpec", "KVCache",
           "RawKVCache", "bits_per_coordinate", "bytes_per_token", "kinds", "make", "raw_kind", "register",
           "representative_kinds", "spec"]

# factory(cfg, batch, max_len, device, **options) -> a cache of the kind
CacheFactory = Callable[..., BufferedKVCache]
PROBE_TOKENS = 256  # length of the meta-device probe that counts bytes (a multiple of every group size)


@dataclass(frozen=True)
class CacheSpec:
    """One KV-cache kind: its public name, family, code bits and factory."""

    kind: str  # the public name: raw-fp16, tq3, uniform3...
    family: str  # raw | turboquant | uniform | ...: kinds of one family differ only in precision
    code_bits: float  # bits of the codes alone per coordinate (metadata excluded: see bits_per_coordinate)
    factory: CacheFactory
    description: str = ""
    dtype: torch.dtype | None = None  # the element dtype of a raw kind
    options: tuple[str, ...] = ()  # keyword options the factory takes (key_group: exact keys of a recent group)
    representative: bool = True  # may `representative_kinds` pick this family (False: studied for accuracy only)

    def make(self, cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None = None,
             **options: object) -> BufferedKVCache:
        """A cache of this kind for a model of `cfg`, holding up to `max_len` tokens of `batch` sequences."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"the {self.kind} cache takes no option {', '.join(unknown)}; its options: "
                             f"{', '.join(self.options) or 'none'}")
        with torch.inference_mode(False):  # ordinary tensors in any mode (`BufferedKVCache`)
            return self.factory(cfg, batch, max_len, device, **options)

    def probe(self, cfg: ArchConfig, batch: int = 1, tokens: int = PROBE_TOKENS) -> BufferedKVCache:
        """A cache of this kind on the meta device: every buffer's shape and dtype, no memory."""
        return self.make(cfg, batch, tokens, device="meta")

    def bytes_per_token(self, cfg: ArchConfig, batch: int = 1) -> int:
        """Bytes one more token adds (codes, norms, scales; every layer and sequence)."""
        return self.probe(cfg, batch).bytes_per_token

    def bits_per_coordinate(self, cfg: ArchConfig, tokens: int, batch: int = 1) -> float:
        """Every byte a cache of `tokens` tokens holds (metadata and fixed parts such as a rotation
        included), in bits per stored key or value coordinate."""
        return self.probe(cfg, batch, tokens).bits_per_coordinate

    def marginal_bits(self, cfg: ArchConfig) -> float:
        """What one more token costs, in bits per key or value coordinate: codes and their per-vector or
        per-group metadata (norms, scales, offsets), without the fixed parts a long cache amortises away
        (a rotation, a pending group). The figure to compare kinds at equal bits."""
        probe = self.probe(cfg)
        return probe.bytes_per_token * 8 / probe.coordinates_per_token


def _raw(kind: str, dtype: torch.dtype) -> CacheSpec:
    def make(cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None) -> BufferedKVCache:
        return RawKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, dtype=dtype, device=device)

    return CacheSpec(kind, "raw", torch.finfo(dtype).bits, make, f"keys and values in {dtype}", dtype)


def _turboquant(bits: int) -> CacheSpec:
    def make(cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None,
             **options: object) -> BufferedKVCache:
        return TurboQuantKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, bits, device=device,
                                 **options)

    return CacheSpec(f"tq{bits}", "turboquant", bits, make,
                     f"TurboQuant: rotation + {bits}-bit Lloyd-Max codes, fp16 norm per vector",
                     options=("key_group", "window", "norm_dtype", "chunk", "seed"))


def _turboquant_split(bits: int) -> CacheSpec:
    def make(cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None,
             **options: object) -> BufferedKVCache:
        return SplitTurboQuantKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, bits, device=device,
                                      **options)

    return CacheSpec(f"tq{bits}.5", "turboquant", bits + 0.25, make,
                     f"TurboQuant over an outlier-channel split: a quarter of the channels at {bits + 1} bits, the "
                     f"rest at {bits}, two instances with an fp16 norm each ({bits}.5 bits per coordinate at "
                     "head_dim 128)", options=("key_group", "outliers", "chunk", "seed"))


def _turboquant_prod(bits: int) -> CacheSpec:
    def make(cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None,
             **options: object) -> BufferedKVCache:
        return TurboQuantProdKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, bits, device=device,
                                     **options)

    return CacheSpec(f"tq{bits}-prod", "turboquant-prod", bits, make,
                     f"TurboQuant_prod keys ({bits - 1}-bit TurboQuant plus a 1-bit QJL sketch of the residual, two "
                     f"fp16 norms), {bits}-bit TurboQuant values", options=("key_group", "chunk", "seed"),
                     representative=False)


def _uniform(bits: int) -> CacheSpec:
    def make(cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None,
             **options: object) -> BufferedKVCache:
        return UniformKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, bits, device=device,
                              **options)

    return CacheSpec(f"uniform{bits}", "uniform", bits, make,
                     f"min-max {bits}-bit codes, keys per channel over 32-token groups, values per token, fp16 "
                     "scale and offset", options=("key_group", "chunk"))


CACHE_SPECS: Registry[CacheSpec] = Registry("KV cache kind", {s.kind: s for s in (
    _raw("raw-fp32", torch.float32),
    _raw("raw-fp16", torch.float16),
    _raw("raw-bf16", torch.bfloat16),
    _turboquant(2),
    _turboquant(3),
    _turboquant(4),
    _turboquant_split(2),
    _turboquant_split(3),
    _turboquant_prod(2),
    _turboquant_prod(3),
    _turboquant_prod(4),
    _uniform(2),
    _uniform(3),
    _uniform(4),
)})


def register(new: CacheSpec) -> CacheSpec:
    """Add a kind at run time (a name already taken raises ValueError); returns it."""
    return CACHE_SPECS.register(new.kind, new)


def spec(kind: str) -> CacheSpec:
    """The spec of `kind` (exact name); a miss raises ValueError listing every kind."""
    return CACHE_SPECS.lookup(kind)


def kinds(family: str | None = None) -> list[str]:
    """Every registered kind, or those of one family, in registration order."""
    return [k for k, s in CACHE_SPECS.items() if family is None or s.family == family]


def representative_kinds(code_bits: int = 3) -> list[str]:
    """One kind per family (families marked representative): the one with `code_bits` where the family
    has it, else its first kind."""
    chosen: dict[str, str] = {}
    for kind, s in CACHE_SPECS.items():
        if not s.representative:
            continue
        if s.family not in chosen or (s.code_bits == code_bits and CACHE_SPECS[chosen[s.family]].code_bits
                                      != code_bits):
            chosen[s.family] = kind
    return list(chosen.values())


def raw_kind(dtype: torch.dtype) -> str:
    """The raw kind that stores `dtype` (a model's own cache)."""
    for kind, s in CACHE_SPECS.items():
        if s.family == "raw" and s.dtype == dtype:
            return kind
    raise ValueError(f"no raw KV cache kind stores {dtype}; raw kinds: {', '.join(kinds('raw'))}")


def make(kind: str, cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None = None,
         **options: object) -> BufferedKVCache:
    """A cache of `kind` (see `CACHE_SPECS`) for a model of `cfg`, holding up to `max_len` tokens of
    `batch` sequences, on `device`. Options go to the kind's cache (`spec(kind).options` lists them)."""
    return spec(kind).make(cfg, batch, max_len, device, **options)


def bytes_per_token(kind: str, cfg: ArchConfig, batch: int = 1) -> int:
    """Bytes one more token adds to a cache of `kind` (codes, norms, scales; not fixed parts)."""
    return spec(kind).bytes_per_token(cfg, batch)


def bits_per_coordinate(kind: str, cfg: ArchConfig, tokens: int, batch: int = 1) -> float:
    """Every byte a cache of `kind` holding `tokens` tokens takes, in bits per key or value coordinate."""
    return spec(kind).bits_per_coordinate(cfg, tokens, batch)
