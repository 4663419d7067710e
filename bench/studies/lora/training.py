"""The LoRA study's cached fine-tunes: one per scaling, rank, learning rate and seed, each from the trained
reference model. The suite reads them (`finetune(...).result()`); `bench.prepare` makes the missing ones
ahead of it on a cold cache, after the reference model."""

from __future__ import annotations

import functools
from functools import cache
from typing import TYPE_CHECKING

from bench import prepare
from bench.prepare import CachedRun
from bench.studies.lora import LoraSweep

if TYPE_CHECKING:
    import torch

SCALINGS = {"lora": False, "rslora": True}  # scaling name -> rank-stabilised (gamma = alpha / sqrt(r))


@cache
def adapt_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The `adapt` package's bytes: the first 90% to fine-tune on, the last 10% held out."""
    from models import corpus

    tokens = corpus.load().tokens("adapt")
    cut = int(tokens.numel() * 0.9)
    return tokens[:cut], tokens[cut:]


def finetune(sweep: LoraSweep, scaling: str, rank: int, lr: float, seed: int) -> CachedRun:
    """The reference model fine-tuned with adapters of `rank`: losses, gradient norms, held-out bits per byte
    before and after, and the adapters' size."""
    from models import corpus
    from models.reference import model_key

    payload = {"reference": model_key(sweep.reference), "corpus": corpus.load().fingerprint, "scaling": scaling,
               "rank": rank, "alpha": sweep.alpha, "lr": lr, "steps": sweep.steps, "batch": sweep.batch_size,
               "seq_len": sweep.seq_len, "seed": seed, "eval_windows": sweep.eval_windows}
    return CachedRun("lora-finetune", payload, functools.partial(_finetune, sweep, scaling, rank, lr, seed),
                     f"{scaling}-r{rank}-lr{lr:g}-seed{seed}", after=(prepare.trained(sweep.reference),))


def _finetune(sweep: LoraSweep, scaling: str, rank: int, lr: float, seed: int) -> dict:
    from models.lora import apply_lora, lora_parameters
    from models.lora import finetune as train_adapters
    from models.reference import bits_per_byte, reference_model

    base = reference_model(sweep.reference, progress=False).model.eval()
    train_tokens, held_out = adapt_split()
    model = apply_lora(base, rank, sweep.alpha, rslora=SCALINGS[scaling], seed=seed)
    before = bits_per_byte(model, held_out, sweep.seq_len, sweep.eval_windows)
    losses, grad_norms = train_adapters(model, train_tokens, steps=sweep.steps, lr=lr, batch_size=sweep.batch_size,
                                        seq_len=sweep.seq_len, seed=seed)
    return {"losses": losses, "grad_norms": grad_norms, "before": before,
            "after": bits_per_byte(model, held_out, sweep.seq_len, sweep.eval_windows),
            "adapter_params": sum(p.numel() for p in lora_parameters(model))}
