"""What is built: the config, the one GPT, KV caches, variants, checkpoint import, corpus and reference model."""

import logging

from . import kv_cache, variants
from .config import ArchConfig
from .generate import Decoder, generate
from .gpt import GPT, PositionLimitError, build, count_params, from_state_dict
from .hf import CheckpointError, load_hf


class _ImportNotices(logging.Filter):
    """Drops two import-time notices about torchao that say nothing to an archbench user: its CUDA-only
    kernel libraries failing to load on a machine without them, and torch noting that an enum torchao
    registers is now supported natively. Everything else those loggers say gets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ((text.startswith("Failed to load") and "torchao" in text)
                    or "is an Enum subclass and is now natively supported" in text)


for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).addFilter(_ImportNotices())

__all__ = [
    "GPT",
    "ArchConfig",
    "CheckpointError",
    "Decoder",
    "PositionLimitError",
    "build",
    "count_params",
    "from_state_dict",
    "generate",
    "kv_cache",
    "load_hf",
    "variants",
]
