"""ArchConfig: every architectural switch of the one GPT, validated, with derived sizes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

POS_KINDS = ("learned", "sinusoidal", "rope")
NORM_KINDS = ("post_ln", "pre_ln", "pre_rms")
MLP_KINDS = ("gelu", "swiglu")
GELU_APPROXIMATIONS = ("tanh", "none")


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"ArchConfig.{field}={value!r} is not valid; allowed values: {', '.join(allowed)}")


def _positive(field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"ArchConfig.{field}={value!r} is not valid; allowed values: a positive integer")


@dataclass(frozen=True)
class ArchConfig:
    """The architecture of a GPT-style decoder; one field per switch.

    `__post_init__` only validates. Sizes that follow from the fields are properties.
    """

    vocab_size: int = 256  # tokens in the vocabulary (256 = byte-level)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # query heads per attention layer
    d_model: int = 128  # residual stream width
    max_seq_len: int = 256  # learned: size of the position table (a hard limit); others: trained context
    pos: str = "learned"  # positional embedding: learned | sinusoidal | rope
    norm: str = "pre_ln"  # norm placement and kind: post_ln | pre_ln (LayerNorm) | pre_rms (RMSNorm)
    tie_weights: bool = True  # output head shares the token embedding's storage
    mlp: str = "gelu"  # feed-forward: gelu (up, GELU, down) | swiglu (down(silu(gate) * up))
    bias: bool = True  # biases in every Linear layer and in LayerNorm
    d_ff: int | None = None  # hidden width of the MLP; None -> 4 * d_model (gelu) or Llama's 8/3 rule (swiglu)
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None -> n_head
    norm_eps: float = 1e-5  # epsilon of LayerNorm / RMSNorm (passed explicitly, never a library default)
    rope_theta: float = 10000.0  # RoPE base: theta_i = rope_theta ** (-2i / head_dim)
    gelu_approximate: str = "tanh"  # GELU form: tanh (GPT-2's gelu_new) | none (exact erf)
    init_std: float = 0.02  # std of the normal initialisation of weights
    embed_scale: bool = False  # token embeddings times sqrt(d_model) (Vaswani et al. 2017, section 3.4)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "max_seq_len"):
            _positive(name, getattr(self, name))
        _choice("pos", self.pos, POS_KINDS)
        _choice("norm", self.norm, NORM_KINDS)
        _choice("mlp", self.mlp, MLP_KINDS)
        _choice("gelu_approximate", self.gelu_approximate, GELU_APPROXIMATIONS)
        for name in ("tie_weights", "bias", "embed_scale"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ArchConfig.{name}={getattr(self, name)!r} is not valid; allowed values: True, False")
        if self.d_model % self.n_head:
            raise ValueError(
                f"ArchConfig.d_model={self.d_model} is not valid; allowed values: a multiple of n_head={self.n_head}"
            )
        if self.d_ff is not None:
            _positive("d_ff", self.d_ff)
        if self.n_kv_head is not None:
            _positive("n_kv_head", self.n_kv_head)
            if self.n_head % self.n_kv_head:
                raise ValueError(
                    f"ArchConfig.n_kv_head={self.n_kv_head} is not valid; "
                    f"allowed values: a divisor of n_head={self.n_head}"
                )
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(
                f"ArchConfig.pos='rope' needs an even head_dim (d_model / n_head = {self.head_dim}); "
                "allowed values for pos with this width: learned, sinusoidal"
            )
        if self.pos == "sinusoidal" and self.d_model % 2:
            raise ValueError(
                f"ArchConfig.pos='sinusoidal' needs an even d_model (got {self.d_model}); "
                "allowed values for pos with this width: learned, rope"
            )
        for name in ("norm_eps", "rope_theta", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise ValueError(f"ArchConfig.{name}={value!r} is not valid; allowed values: a positive finite "
                                 "number")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_kv_head, or n_head without grouping)."""
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def ff_dim(self) -> int:
        """Hidden width of the MLP."""
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "gelu":
            return 4 * self.d_model
        hidden = int(2 * 4 * self.d_model / 3)  # Llama: 2/3 of 4d, rounded up to a multiple of 256
        return 256 * ((hidden + 255) // 256)

    @property
    def position_limit(self) -> int | None:
        """The most positions the model can encode: a learned table's size (a hard limit); None for
        sinusoidal and rotary positions, which extend past the trained context."""
        return self.max_seq_len if self.pos == "learned" else None

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes one token adds to an fp32 KV cache at batch 1 (keys and values, every layer)."""
        return 2 * self.n_layer * self.kv_heads * self.head_dim * 4

    def replace(self, **changes: object) -> ArchConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of every field (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short stable hash of every field, for cache keys."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
