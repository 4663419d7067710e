"""Greedy decoding with a KV cache (O(T) work per token) or without one (the whole prefix again: O(T^2))."""

from __future__ import annotations

import torch
from torch import Tensor

from . import kv_cache
from .gpt import GPT


@torch.no_grad()
def generate(model: GPT, prompt: Tensor, max_new_tokens: int, *, use_cache: bool = True,
             cache: kv_cache.KVCache | None = None) -> Tensor:
    """Greedy continuation of `prompt` (B, T0) by `max_new_tokens` tokens -> (B, T0 + max_new_tokens).

    With `use_cache` the prompt is prefilled into `cache` (a fresh raw cache in the model's dtype when
    None) and each new token is one single-token forward. Without it every step runs the model over
    the whole sequence so far, which is the quadratic baseline.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be a (batch, length>=1) tensor of token ids, got shape {tuple(prompt.shape)}")
    if max_new_tokens == 0:
        return prompt
    batch, prompt_len = prompt.shape
    model.check_positions(prompt_len + max_new_tokens - 1)  # the last token is produced, never fed back
    if not use_cache:
        if cache is not None:
            raise ValueError("a cache was given with use_cache=False; pass one or the other")
        seq = prompt
        for _ in range(max_new_tokens):
            logits = model(seq)[:, -1]  # (B, vocab): the whole prefix recomputed
            seq = torch.cat((seq, logits.argmax(-1, keepdim=True)), dim=1)  # (B, T + 1)
        return seq
    if cache is None:
        param = next(model.parameters())
        cache = kv_cache.make("raw", model.config, batch, prompt_len + max_new_tokens, dtype=param.dtype,
                              device=param.device)
    new_tokens = []
    logits = model(prompt, cache)[:, -1]  # (B, vocab): prefill
    for step in range(max_new_tokens):
        token = logits.argmax(-1, keepdim=True)  # (B, 1)
        new_tokens.append(token)
        if step + 1 < max_new_tokens:
            logits = model(token, cache)[:, -1]  # (B, vocab): one cached step
    return torch.cat([prompt, *new_tokens], dim=1)  # (B, T0 + N)
