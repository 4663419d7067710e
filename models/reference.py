"""The deterministic reference-model trainer and its on-disk cache.

Accuracy studies (INT8, KV quantization, adapters) need a model that has learned something. This
trains a small byte-level model on the embedded corpus (`models.corpus`), seeded so that two runs
give identical weights, and caches the checkpoint (safetensors + JSON) under the user's cache
directory, keyed by the architecture, the training settings, the corpus fingerprint and the
versions of Python and torch (and the device, when it is not the CPU). `ARCHBENCH_CACHE_DIR`
overrides the directory. Training runs on CUDA when a GPU is visible (seconds instead of minutes),
else on the CPU, on a fixed number of threads (`models.memo.training_threads`: the weights then do not
depend on the core count, and `bench.prepare` trains several at once on a machine with more cores);
`ARCHBENCH_TRAIN_DEVICE` overrides the choice of device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from . import corpus as corpus_mod
from .config import ArchConfig
from .gpt import GPT, build, from_state_dict
from .memo import training_threads
from .paths import cache_dir, cache_entry_problem, private_dir, untrusted_reason, write_checksum

TRAINER_VERSION = 2  # bump when training changes in a way the cache key cannot see (2: a fixed thread count)
DEFAULT_VARIANT = "gpt2-tiny-hd64"  # GPT-2's head_dim (64), so KV-cache quantizers see what they would on GPT-2


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; all of them are part of the cache key."""

    steps: int = 500  # optimiser steps (about 2.5 minutes for gpt2-tiny on 2 CPU cores)
    batch_size: int = 32  # windows per step
    seq_len: int = 128  # bytes per window (<= the model's max_seq_len for learned positions)
    lr: float = 3e-3  # peak AdamW learning rate
    warmup_steps: int = 30  # linear warm-up from 0 (0 = none), then cosine decay to lr / 10
    weight_decay: float = 0.1  # AdamW decay of matrices (not of norms, biases or embeddings)
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    seed: int = 0  # seeds the initial weights and the order of training windows
    eval_windows: int = 128  # validation windows of seq_len bytes for the final bits per byte
    split: str = "train"  # corpus split trained on

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_windows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be a positive integer")
        if self.split not in corpus_mod.SPLITS:
            raise ValueError(f"TrainConfig.split={self.split!r}; allowed values: {', '.join(corpus_mod.SPLITS)}")


@dataclass
class TrainResult:
    """A trained model and what its training measured."""

    model: GPT
    val_bits_per_byte: float
    unigram_bits_per_byte: float
    train_losses: list[float] = field(default_factory=list)  # nats per byte, one per step
    seconds: float = 0.0
    from_cache: bool = False


def train_device() -> str:
    """Where reference models are trained: $ARCHBENCH_TRAIN_DEVICE, else CUDA when visible, else the CPU."""
    return os.environ.get("ARCHBENCH_TRAIN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def cache_key(arch: ArchConfig, train: TrainConfig, corpus: corpus_mod.Corpus, device: str = "cpu") -> str:
    """Hex key of a training run: config, settings, corpus, versions and (when not the CPU) the device type."""
    payload = {
        "arch": arch.to_dict(), "train": dataclasses.asdict(train), "corpus": corpus.fingerprint,
        "python": platform.python_version(), "torch": torch.__version__.split("+")[0], "trainer": TRAINER_VERSION,
    }
    if torch.device(device).type != "cpu":
        payload["device"] = torch.device(device).type
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _lr_at(step: int, tc: TrainConfig) -> float:
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _optimizer(model: GPT, tc: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.95), foreach=False)


@torch.no_grad()
def bits_per_byte(model: GPT, tokens: Tensor, seq_len: int, max_windows: int, batch_size: int = 32) -> float:
    """Mean next-byte cross-entropy of `model` over evenly spaced windows of `tokens`, in bits per byte."""
    was_training = model.training
    model.eval()
    windows = corpus_mod.eval_windows(tokens, seq_len, max_windows)  # (n, seq_len + 1)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for chunk in windows.split(batch_size):
        chunk = chunk.to(device)
        logits = model(chunk[:, :-1])  # (b, seq_len, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten(), reduction="sum")
        total, count = total + float(loss), count + chunk[:, 1:].numel()
    model.train(was_training)
    return total / count * corpus_mod.NATS_TO_BITS


def train(arch: ArchConfig, tc: TrainConfig = TrainConfig(), *, corpus: corpus_mod.Corpus | None = None,
          progress: bool = True, desc: str = "training", device: str | torch.device = "cpu") -> TrainResult:
    """Train a fresh model of `arch` on the corpus on `device`; the result is returned on the CPU.
    Deterministic on the CPU for a given seed, torch build and thread count."""
    from tqdm.auto import tqdm

    if arch.vocab_size < 256:
        raise ValueError(f"the corpus is byte-level: vocab_size must be >= 256, got {arch.vocab_size}")
    if arch.pos == "learned" and tc.seq_len > arch.max_seq_len:
        raise ValueError(f"TrainConfig.seq_len={tc.seq_len} exceeds the learned position table ({arch.max_seq_len})")
    corpus = corpus or corpus_mod.load()
    data = corpus.tokens(tc.split)
    device = torch.device(device)
    model = build(arch, seed=tc.seed, device=device).train()
    optimizer = _optimizer(model, tc)
    generator = torch.Generator().manual_seed(tc.seed)
    losses: list[float] = []
    start = time.perf_counter()
    # in a log (no terminal) a line every 15 s rather than every step
    bar = tqdm(range(tc.steps), desc=desc, unit="step", disable=not progress, dynamic_ncols=True, leave=False,
               mininterval=0.1 if sys.stderr.isatty() else 15.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, tc)
        x, y = corpus_mod.random_windows(data, tc.batch_size, tc.seq_len, generator)  # 2x (B, T)
        x, y = x.to(device), y.to(device)
        logits = model(x)  # (B, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip, foreach=False)
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == tc.steps - 1:
            bar.set_postfix(bits_per_byte=f"{losses[-1] * corpus_mod.NATS_TO_BITS:.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    model = model.eval().cpu()
    val = corpus.tokens("val")
    val_bpb = bits_per_byte(model, val, tc.seq_len, tc.eval_windows)
    unigram = corpus_mod.unigram_bits_per_byte(data, val)
    return TrainResult(model, val_bpb, unigram, losses, seconds)


def _entry(variant: str | ArchConfig, tc: TrainConfig, directory: Path | None, device: str | None
           ) -> tuple[ArchConfig, corpus_mod.Corpus, str, str, Path]:
    """(config, corpus, device, key, folder) of a reference model's cache entry."""
    from . import variants

    arch = variants.get(variant) if isinstance(variant, str) else variant
    corpus = corpus_mod.load()
    device = device or train_device()
    key = cache_key(arch, tc, corpus, device)
    return arch, corpus, device, key, (directory or cache_dir()) / "reference" / key


def model_key(variant: str | ArchConfig = DEFAULT_VARIANT, tc: TrainConfig = TrainConfig(), *,
              device: str | None = None) -> str:
    """The cache key `reference_model(variant, tc)` files its model under (config, settings, corpus, versions)."""
    return _entry(variant, tc, None, device)[3]


def is_cached(variant: str | ArchConfig = DEFAULT_VARIANT, tc: TrainConfig = TrainConfig(), *,
              directory: Path | None = None, device: str | None = None) -> bool:
    """Whether `reference_model` would find this model in the cache (its files are checked when it loads)."""
    folder = _entry(variant, tc, directory, device)[-1]
    return (folder / "model.safetensors").is_file() and (folder / "meta.json").is_file()


def reference_model(variant: str | ArchConfig = DEFAULT_VARIANT, tc: TrainConfig = TrainConfig(), *,
                    progress: bool = True, directory: Path | None = None,
                    device: str | None = None) -> TrainResult:
    """The trained reference model (on the CPU): loaded from the cache when present, else trained (on
    `device`, default `train_device()`) and saved there."""
    from safetensors.torch import load_file, save_file

    arch, corpus, device, key, folder = _entry(variant, tc, directory, device)
    weights, meta_file = folder / "model.safetensors", folder / "meta.json"
    if weights.exists() or meta_file.exists():  # a cache entry: used only when it checks out
        problem = cache_entry_problem(weights) or (untrusted_reason(meta_file) if meta_file.is_file() else
                                                   f"{meta_file} is missing")
        if problem is None:
            try:
                meta = json.loads(meta_file.read_text())
                model = from_state_dict(arch, load_file(str(weights))).eval()
                return TrainResult(model, meta["val_bits_per_byte"], meta["unigram_bits_per_byte"],
                                   meta["train_losses"], meta["seconds"], from_cache=True)
            except Exception as exc:  # a file that passed its checksum but does not load: rebuild it too
                problem = f"{weights.parent} does not load ({type(exc).__name__}: {exc})"
        print(f"archbench: the cached reference model cannot be used ({problem}); training it again",
              file=sys.stderr, flush=True)
    with training_threads():
        result = train(arch, tc, corpus=corpus, progress=progress, desc=f"training reference {key[:8]}",
                       device=device)
    private_dir(folder)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()
             if not (arch.tie_weights and k == "lm_head.weight")}  # a tied head is stored once
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(weights)  # atomic: a crash never leaves a half-written checkpoint under the key
    write_checksum(weights)
    meta = {"arch": arch.to_dict(), "train": dataclasses.asdict(tc), "corpus": corpus.fingerprint,
            "val_bits_per_byte": result.val_bits_per_byte, "unigram_bits_per_byte": result.unigram_bits_per_byte,
            "train_losses": result.train_losses, "seconds": result.seconds, "torch": torch.__version__,
            "device": str(device), "python": platform.python_version()}
    meta_file.write_text(json.dumps(meta, indent=1))
    return result
