"""Greedy decoding with a KV cache (O(T) work per token) or without one (the whole prefix again: O(T^2))."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from .config import ArchConfig
from .kv_base import KVCache


class Decoder(Protocol):
    """What decoding needs of a model: our GPT, or an engine's session of it (`OrtModel`, ...).

    `model(idx, cache)` returns logits (B, T, vocab) and appends to `cache`, which `make_cache` made.
    """

    config: ArchConfig

    def __call__(self, idx: Tensor, cache: Any = None) -> Tensor: ...

    def check_positions(self, end: int) -> None: ...

    def make_cache(self, batch: int, max_len: int) -> KVCache: ...


@torch.no_grad()
def decode(model: Decoder, tokens: Tensor, length: int, logits: Tensor, n_steps: int,
           cache: Any = None) -> Tensor:
    """Run `n_steps` greedy decode steps in place on `tokens` (B, capacity), whose first `length` are filled.

    `logits` (B, vocab) are those of the last filled token. Each step appends the argmax token and
    runs one forward: of that token alone through `cache`, or (no cache) of the whole sequence so
    far. Returns the logits after the last step. Both modes do `n_steps` forwards.
    """
    for step in range(n_steps):
        end = length + step + 1
        tokens[:, end - 1] = logits.argmax(-1)  # (B,)
        if cache is not None:
            logits = model(tokens[:, end - 1 : end], cache)[:, -1]  # (B, vocab): one cached step
        else:
            logits = model(tokens[:, :end])[:, -1]  # (B, vocab): the whole prefix recomputed
    return logits


@torch.no_grad()
def generate(model: Decoder, prompt: Tensor, max_new_tokens: int, *, use_cache: bool = True,
             cache: Any = None) -> Tensor:
    """Greedy continuation of `prompt` (B, T0) by `max_new_tokens` tokens -> (B, T0 + max_new_tokens).

    With `use_cache` the prompt is prefilled into `cache` (a fresh raw cache in the model's dtype when
    None) and each new token is one single-token forward. Without it every step runs the model over
    the whole sequence so far, which is the quadratic baseline.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be a (batch, length>=1) tensor of token ids, got shape {tuple(prompt.shape)}")
    if prompt.is_floating_point() or prompt.dtype == torch.bool:
        raise ValueError(f"prompt must hold integer token ids, got {prompt.dtype}")
    lowest, highest = int(prompt.min()), int(prompt.max())
    if lowest < 0 or highest >= model.config.vocab_size:
        raise ValueError(f"prompt holds token ids from {lowest} to {highest}; this model's are 0 to "
                         f"{model.config.vocab_size - 1} (vocab_size={model.config.vocab_size})")
    if max_new_tokens == 0:
        return prompt
    batch, prompt_len = prompt.shape
    total = prompt_len + max_new_tokens
    model.check_positions(total - 1)  # the last token is produced, never fed back
    if use_cache and cache is None:
        cache = model.make_cache(batch, total)
    elif not use_cache and cache is not None:
        raise ValueError("a cache was given with use_cache=False; pass one or the other")
    tokens = torch.empty(batch, total, dtype=prompt.dtype, device=prompt.device)  # (B, T0 + N)
    tokens[:, :prompt_len] = prompt
    logits = model(prompt, cache)[:, -1]  # (B, vocab): prefill
    logits = decode(model, tokens, prompt_len, logits, max_new_tokens - 1, cache)
    tokens[:, -1] = logits.argmax(-1)
    return tokens
