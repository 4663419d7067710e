"""Roofline arithmetic of decoding: bytes read and FLOPs per token, the bound on tokens/s.

A batch-1 decode step reads every weight matrix once (the token and position embeddings only one
row each, a tied head the whole embedding as the head) and the whole KV cache up to its position.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import ArchConfig


@dataclass(frozen=True)
class StepCost:
    """Work of one decode step."""

    weight_bytes: int  # weights streamed from memory
    kv_bytes: int  # keys and values read (and the new ones written)
    flops: int  # multiply-adds counted as 2

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def intensity(self) -> float:
        """FLOPs per byte."""
        return self.flops / self.bytes


def matmul_params(cfg: ArchConfig) -> int:
    """Parameters that take part in a matrix product each step (every Linear, the head included)."""
    d, hd = cfg.d_model, cfg.head_dim
    attn = d * (cfg.n_head + 2 * cfg.kv_heads) * hd + cfg.n_head * hd * d
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * cfg.ff_dim
    return cfg.n_layer * (attn + mlp) + d * cfg.vocab_size


def streamed_params(cfg: ArchConfig) -> int:
    """Parameters read each step: the matmul weights plus biases and norm gains (embeddings: one row)."""
    d = cfg.d_model
    n_norms = 2 * cfg.n_layer + (0 if cfg.norm == "post_ln" else 1)
    norms = n_norms * d * (2 if cfg.bias and cfg.norm != "pre_rms" else 1)
    biases = 0
    if cfg.bias:
        biases = cfg.n_layer * ((cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim + d
                                + (2 if cfg.mlp == "swiglu" else 1) * cfg.ff_dim + d)
    return matmul_params(cfg) + norms + biases


def decode_step(cfg: ArchConfig, position: int, *, batch: int = 1, param_bytes: int = 4,
                kv_element_bytes: int = 4) -> StepCost:
    """Cost of decoding one token per sequence at `position` (tokens already cached) for `batch` sequences."""
    context = position + 1  # keys attended, the new one included
    kv_row = 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim  # K and V elements per token
    kv_bytes = batch * kv_row * context * kv_element_bytes
    attention_flops = batch * cfg.n_layer * cfg.n_head * cfg.head_dim * context * 2 * 2  # q.k and p.v
    flops = 2 * batch * matmul_params(cfg) + attention_flops
    return StepCost(weight_bytes=streamed_params(cfg) * param_bytes, kv_bytes=kv_bytes, flops=flops)


def decode_bytes(cfg: ArchConfig, start: int, n_tokens: int, **kw: int) -> int:
    """Bytes read decoding `n_tokens` tokens after `start` cached ones."""
    return sum(decode_step(cfg, start + i, **kw).bytes for i in range(n_tokens))


def tokens_per_s_bound(cost: StepCost, bandwidth_Bps: float, flops_per_s: float | None = None,
                       batch: int = 1) -> float:
    """Roofline bound on tokens/s: the slower of streaming the step's bytes and doing its FLOPs."""
    seconds = cost.bytes / bandwidth_Bps
    if flops_per_s:
        seconds = max(seconds, cost.flops / flops_per_s)
    return batch / seconds
