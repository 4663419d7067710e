"""The norms study's cached training runs: one per stability arm, learning rate and seed. The suite reads
them (`stability(...).result()`); `bench.prepare` makes the missing ones ahead of it on a cold cache."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from bench.prepare import CachedRun
from bench.studies.norms import NormSweep

if TYPE_CHECKING:
    from models.config import ArchConfig
    from models.reference import TrainConfig


def stability(sweep: NormSweep, norm: str, warmup: int, lr: float, seed: int) -> CachedRun:
    """Training without clipping at `lr`: the losses, the held-out and the unigram bits per byte."""
    from models import corpus, variants
    from models.reference import TrainConfig

    cfg = variants.get("gpt2-tiny").replace(norm=norm, n_layer=sweep.stability_depth, tie_weights=False)
    tc = TrainConfig(steps=sweep.stability_steps, batch_size=16, seq_len=64, lr=lr, warmup_steps=warmup,
                     grad_clip=0.0, seed=seed, eval_windows=32)
    payload = {"arch": cfg.to_dict(), "train": dataclasses.asdict(tc), "corpus": corpus.load().fingerprint}
    return CachedRun("norm-stability", payload, functools.partial(_train, cfg, tc),
                     f"{norm}-warmup{warmup}-lr{lr:g}-seed{seed}")


def _train(cfg: ArchConfig, tc: TrainConfig) -> dict:
    from models.reference import train

    trained = train(cfg, tc, progress=False)
    return {"losses": trained.train_losses, "val_bpb": trained.val_bits_per_byte,
            "unigram_bpb": trained.unigram_bits_per_byte}
