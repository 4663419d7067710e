"""Where a quantized cache loses its accuracy: one layer's keys, or values, quantized alone.

`PartlyQuantizedCache` is a raw fp32 cache that stores the keys or values of some layers as TurboQuant
reproduces them (quantized, then dequantized, norms in fp16 as the TurboQuant cache keeps them).
TurboQuant's cache attends exactly as attention over its dequantized keys and values does
(tests/test_turboquant.py), so this measures what quantizing that part alone costs.
"""

from __future__ import annotations

from torch import Tensor

from models.config import ArchConfig
from models.raw_cache import RawKVCache
from models.turboquant import TurboQuantizer

PARTS = ("k", "v")


class PartlyQuantizedCache(RawKVCache):
    """A raw fp32 cache whose `targets` ((layer, "k" | "v") pairs) are stored round-tripped through `quantizer`."""

    def __init__(self, cfg: ArchConfig, batch: int, max_len: int, quantizer: TurboQuantizer,
                 targets: set[tuple[int, str]]) -> None:
        super().__init__(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len)
        self.quantizer, self.targets = quantizer, targets

    def _roundtrip(self, x: Tensor) -> Tensor:
        return self.quantizer.dequantize(self.quantizer.quantize(x)).to(x.dtype)  # (B, Hkv, T, hd)

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        k = self._roundtrip(k) if (layer, "k") in self.targets else k
        v = self._roundtrip(v) if (layer, "v") in self.targets else v
        super().append(layer, k, v)
