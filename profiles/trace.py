"""torch.profiler traces of decoding, with time per op class (attention, MLP, norms, head, embeddings).

Each class is a `record_function` range opened by forward hooks on the model's modules, so the
classification follows the model's structure, not kernel names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from models import GPT
from models.generate import decode
from models.layers import CausalSelfAttention, GeluMLP, LayerNorm, RMSNorm, SwiGLUMLP

OP_CLASSES = ("attention", "mlp", "norm", "head", "embedding")


def _op_class(name: str, module: nn.Module) -> str | None:
    if isinstance(module, CausalSelfAttention):
        return "attention"
    if isinstance(module, (GeluMLP, SwiGLUMLP)):
        return "mlp"
    if isinstance(module, (LayerNorm, RMSNorm)):
        return "norm"
    if name == "lm_head":
        return "head"
    if name in ("tok_emb", "pos_emb"):
        return "embedding"
    return None


@contextmanager
def op_class_ranges(model: GPT) -> Iterator[None]:
    """Wrap every classified module's forward in a `record_function("archbench::<class>")` range."""
    handles = []
    for name, module in model.named_modules():
        cls = _op_class(name, module)
        if cls is None:
            continue

        def pre(mod: nn.Module, args: tuple, _cls: str = cls) -> None:
            mod._archbench_range = torch.autograd.profiler.record_function(f"archbench::{_cls}")
            mod._archbench_range.__enter__()

        def post(mod: nn.Module, args: tuple, out: object) -> None:
            mod._archbench_range.__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def trace_decode(model: GPT, *, prompt_len: int = 16, decode_tokens: int = 64, batch: int = 1,
                 use_cache: bool = True, out: str | Path | None = None) -> dict[str, float]:
    """Profile a greedy decode; write a Chrome trace to `out` when given; return seconds per op class."""
    device = next(model.parameters()).device
    cfg = model.config
    total = prompt_len + decode_tokens
    model.check_positions(total)
    prompt = torch.randint(0, cfg.vocab_size, (batch, prompt_len), device=device)
    tokens = torch.zeros(batch, total, dtype=torch.long, device=device)
    tokens[:, :prompt_len] = prompt
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.inference_mode(), op_class_ranges(model):
        cache = model.make_cache(batch, total) if use_cache else None
        decode(model, tokens, prompt_len, model(prompt, cache)[:, -1], min(4, decode_tokens), cache)  # warm-up
        if cache is not None:
            cache.reset()
        with torch.profiler.profile(activities=activities) as prof:
            logits = model(prompt, cache)[:, -1]
            decode(model, tokens, prompt_len, logits, decode_tokens, cache)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(out))
    per_class = dict.fromkeys(OP_CLASSES, 0.0)
    for event in prof.key_averages():
        if event.key.startswith("archbench::"):
            cls = event.key.split("::", 1)[1]
            per_class[cls] += event.cpu_time_total / 1e6
    return per_class
