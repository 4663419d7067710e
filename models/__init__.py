"""What is built: the config, the one GPT, KV caches, variants, checkpoint import, corpus and reference model."""

from . import kv_cache, variants
from .config import ArchConfig
from .generate import Decoder, generate
from .gpt import GPT, PositionLimitError, build, count_params, from_state_dict
from .hf import CheckpointError, load_hf

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
