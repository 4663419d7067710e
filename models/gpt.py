"""The one GPT: every architectural choice is a switch of its ArchConfig."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import kv_cache
from .attention import check_impl
from .config import ArchConfig
from .kv_base import AttendingCache, BufferedKVCache
from .layers import (
    CausalSelfAttention,
    GeluMLP,
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    SwiGLUMLP,
    make_norm,
)


class PositionLimitError(ValueError):
    """A learned-position model was asked for positions beyond its table."""


class Block(nn.Module):
    """One transformer block; `norm` decides where the norms sit (post_ln, pre_ln, pre_rms)."""

    def __init__(self, cfg: ArchConfig, layer_idx: int) -> None:
        super().__init__()
        self.post_norm = cfg.norm == "post_ln"
        self.norm_attn = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_head, cfg.kv_heads, cfg.bias, layer_idx)
        self.norm_mlp = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        if cfg.mlp == "gelu":
            self.mlp = GeluMLP(cfg.d_model, cfg.ff_dim, cfg.bias, cfg.gelu_approximate)
        else:
            self.mlp = SwiGLUMLP(cfg.d_model, cfg.ff_dim, cfg.bias)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache: AttendingCache | None = None) -> Tensor:
        if self.post_norm:  # Vaswani et al.: normalise after each residual sum
            x = self.norm_attn(x + self.attn(x, rope, cache))  # (B, T, d)
            return self.norm_mlp(x + self.mlp(x))  # (B, T, d)
        x = x + self.attn(self.norm_attn(x), rope, cache)  # (B, T, d)
        return x + self.mlp(self.norm_mlp(x))  # (B, T, d)


class GPT(nn.Module):
    """A decoder-only transformer. `forward(idx, cache=None) -> logits (B, T, vocab)`.

    A cache passed in receives the new keys and values at its current position, and its position
    advances by T; positions (learned, sinusoidal, RoPE) start at that position.
    """

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb: nn.Module | None = None
        self.rope: RotaryEmbedding | None = None
        if cfg.pos == "learned":
            self.pos_emb = LearnedPositions(cfg.max_seq_len, cfg.d_model)
        elif cfg.pos == "sinusoidal":
            self.pos_emb = SinusoidalPositions(cfg.d_model)
        else:
            self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        # Post-LN blocks already end in a norm; pre-norm stacks need one before the head.
        self.norm_f = (nn.Identity() if cfg.norm == "post_ln"
                       else make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias))
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, std) weights, residual outputs scaled by 1/sqrt(2 * n_layer)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.out.weight, 0.0, residual_std)
            nn.init.normal_(block.mlp.down.weight, 0.0, residual_std)

    def set_attention_impl(self, impl: str) -> GPT:
        """Switch every attention layer to `sdpa` (torch's fused kernel) or `reference` (explicit softmax)."""
        check_impl(impl)
        for block in self.blocks:
            block.attn.impl = impl
        return self

    def make_cache(self, batch: int, max_len: int, kind: str | None = None) -> BufferedKVCache:
        """A fresh KV cache of `kind` (default: the raw kind of this model's dtype) on this model's device."""
        param = next(self.parameters())
        return kv_cache.make(kind or kv_cache.raw_kind(param.dtype), self.config, batch, max_len,
                             device=param.device)

    def check_positions(self, end: int) -> None:
        """Raise PositionLimitError if positions up to `end` (exclusive) exceed a learned table."""
        if torch.compiler.is_exporting():  # symbolic lengths: the runtime enforces the table instead
            return
        if isinstance(self.pos_emb, LearnedPositions) and end > self.pos_emb.max_positions:
            raise PositionLimitError(
                f"sequence needs positions up to {end}, but this model's learned position table holds "
                f"{self.pos_emb.max_positions} (max_seq_len={self.config.max_seq_len}); learned positions "
                "are not defined beyond the table (sinusoidal and rope have no such limit)"
            )

    def forward(self, idx: Tensor, cache: AttendingCache | None = None) -> Tensor:
        if idx.dim() != 2 or idx.is_floating_point() or idx.dtype == torch.bool:  # metadata: no sync, no graph break
            raise ValueError(f"idx must be (batch, length) integer token ids, got {idx.dtype} of shape "
                             f"{tuple(idx.shape)}")
        B, T = idx.shape
        start = 0 if cache is None else cache.position
        if isinstance(start, Tensor):  # a compiled step's position (0-d): its engine checked the table
            positions = start + torch.arange(T, device=idx.device)  # (T,)
        else:
            self.check_positions(start + T)
            positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.tok_emb(idx)  # (B, T, d)
        if self.config.embed_scale:  # Vaswani et al.: embeddings scaled up to the positional encodings' size
            x = x * math.sqrt(self.config.d_model)  # (B, T, d)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions).to(x.dtype)  # (B, T, d)
        rope = self.rope(positions) if self.rope is not None else None  # 2x (T, hd)
        if cache is not None:
            cache.check_append(B, T)
        for block in self.blocks:
            x = block(x, rope, cache)  # (B, T, d)
        if cache is not None:
            cache.advance(T)
        return self.lm_head(self.norm_f(x))  # (B, T, vocab)


def build(cfg: ArchConfig, *, seed: int | None = None, device: str | torch.device | None = None,
          dtype: torch.dtype | None = None) -> GPT:
    """Build the GPT of `cfg`, initialised on the CPU and then moved to `device` and `dtype`.

    With `seed` the initial weights are the same on every device and the global RNG is untouched.
    `device="meta"` builds shapes only (for counting 7B/70B-class models without memory).
    """
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return GPT(cfg)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = GPT(cfg)
    return model.to(device=device, dtype=dtype)


def from_state_dict(cfg: ArchConfig, state: dict[str, Tensor]) -> GPT:
    """A GPT of `cfg` holding the tensors of `state` (no random initialisation, no copies).

    A tied model may omit `lm_head.weight`; the head then shares the embedding's storage.
    """
    state = dict(state)
    if cfg.tie_weights:
        state.setdefault("lm_head.weight", state["tok_emb.weight"])
    model = build(cfg, device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_weights:  # assign=True replaced the shared Parameter; tie them again
        model.lm_head.weight = model.tok_emb.weight
    # non-persistent frequency buffers are not in a state dict: make them for real
    if model.rope is not None:
        model.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
    if isinstance(model.pos_emb, SinusoidalPositions):
        model.pos_emb = SinusoidalPositions(cfg.d_model)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"tensors left without data after loading: {left}")
    return model


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (a tied head is counted once)."""
    return sum(p.numel() for p in model.parameters())
