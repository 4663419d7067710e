"""Helpers the suites share: their sweep, the backends that can run a case, skips with reasons, device
synchronised callables, and the evaluation sets of the accuracy studies."""

from __future__ import annotations

import functools
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

from bench import backends, prepare
from bench.plugin import run_config
from bench.study import Study
from profiles.timers import synchronize

T = TypeVar("T")
ANALYTIC = "analytic"  # the backend label of records that count rather than run (parameters, bytes)


def sweep(config: pytest.Config, study: Study) -> Any | None:
    """What `study` runs in this run's preset (None: nothing)."""
    return study.sweep(run_config(config).preset)


def selected_backends(config: pytest.Config, feature: str = backends.DECODE,
                      dtype: torch.dtype = torch.float32) -> list[backends.Backend]:
    """The run's backends (every registered one unless --backend chose) that support `feature` in `dtype`.
    Unavailable ones are included: their cases skip with the reason."""
    chosen = [backends.get(name) for name in run_config(config).backend_names()]
    return [b for b in chosen if b.supports(dtype, feature) is None]


def reference_backend(config: pytest.Config, device_type: str = "cpu") -> backends.Backend | None:
    """The reference backend of `device_type` (eager torch) if this run selected it, else None."""
    ref = backends.reference(device_type)
    return ref if ref.name in run_config(config).backend_names() else None


def available_or_skip(backend: backends.Backend) -> backends.Backend:
    """`backend`, or a pytest skip naming why it is unavailable here."""
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"{backend.name} unavailable: {reason}")
    return backend


def prepare_or_skip(backend: backends.Backend, model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> Any:
    """`backend.prepare(model, dtype)`, or a skip carrying the engine's message when it cannot take it."""
    try:
        return backend.prepare(model, dtype)
    except backends.CannotPrepareError as exc:
        pytest.skip(f"{backend.name} cannot run {getattr(model, 'config', type(model).__name__)}: {exc}")


def _prepared_budget() -> int:
    """Bytes of source weights the prepared models kept between cases may hold: a quarter of the
    machine's memory, at most 4 GiB (GPT-2 124M on four engines, or one GPT-2 774M)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 16 * 2**30
    return min(4 * 2**30, memory // 4)


class PreparedModels:
    """Models prepared on engines (a session over an export, a compiled model and its graphs), kept for the
    cases that come back to them: the most recently used, within a budget of their source weights' bytes
    (the latest is always kept). A source model is compared by identity (and held, so its identity stays
    its own): the same architecture with other weights is another model."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget = _prepared_budget() if budget_bytes is None else budget_bytes
        self._kept: OrderedDict[tuple, tuple[torch.nn.Module, Any, float, int]] = OrderedDict()
        # key -> (source model, prepared model, seconds its preparation took, source bytes)

    def get(self, backend: backends.Backend, cpu_model: torch.nn.Module, dtype: torch.dtype) -> tuple[Any, float]:
        """The prepared model and the seconds its preparation took, or a skip carrying the engine's message."""
        key = (id(cpu_model), backend.name, dtype)
        if key in self._kept:
            self._kept.move_to_end(key)
            _, model, seconds, _ = self._kept[key]
            return model, seconds
        size = sum(p.numel() for p in cpu_model.parameters()) * torch.finfo(dtype).bits // 8
        while self._kept and sum(entry[3] for entry in self._kept.values()) + size > self.budget:
            self._kept.popitem(last=False)  # the least recently used goes first
        started = time.perf_counter()
        model = prepare_or_skip(backend, cpu_model, dtype)
        self._kept[key] = (cpu_model, model, time.perf_counter() - started, size)
        return model, self._kept[key][2]


_PREPARED = PreparedModels()  # one per run: every study's cases of one model and engine share it


@functools.cache
def random_model(variant: str) -> torch.nn.Module:
    """`variant` with random weights (seed 0), in eval mode, built once per run: what speed and memory cases
    run (they do not depend on what weights learned), the same object in every study, so the models
    prepared on an engine from it (`prepared`) are shared between studies."""
    from models import build, variants

    return build(variants.get(variant), seed=0).eval()


def prepared(backend: backends.Backend, cpu_model: torch.nn.Module,
             dtype: torch.dtype = torch.float32) -> tuple[Any, float]:
    """`cpu_model` on `backend` in `dtype` and the seconds preparing it took, kept for the cases (of any study)
    that come back to it; or a skip carrying the engine's message."""
    return _PREPARED.get(backend, cpu_model, dtype)


def synced(fn: Callable[..., T], device: torch.device) -> Callable[..., T]:
    """`fn` followed by a device synchronisation: what pytest-benchmark's wall clock times must include
    (CUDA kernels run asynchronously; without it a round would time only their launches)."""

    def call(*args: object, **kwargs: object) -> T:
        out = fn(*args, **kwargs)
        synchronize(device)
        return out

    return call


@dataclass(frozen=True)
class EvalSet:
    """A model and the held-out windows its accuracy is measured on."""

    model: torch.nn.Module
    windows: torch.Tensor  # (n, seq_len + 1) token ids
    target_bytes: int  # text bytes the targets (tokens 1.. of each window) cover: bits per byte = bits / this
    name: str  # the variant column of records: the reference variant, or "checkpoint:<directory name>"
    description: str  # what a verdict is judged on: the model, its size, head_dim and training
    unigram_bpb: float  # a byte-frequency model's held-out bits per byte on the same split (the floor to beat)


def describe_model(name: str, model: torch.nn.Module, training: str) -> str:
    """A model in a line for verdicts: name, parameters, head_dim, how it was trained."""
    from models import count_params

    cfg = model.config
    return f"{name} ({count_params(model) / 1e6:.2f}M parameters, head_dim {cfg.head_dim}, {training})"


def accuracy_sources(config: pytest.Config) -> list[str]:
    """`reference` (the trained byte-level model) and, with --weights, `checkpoint` (the user's real model)."""
    return ["reference", "checkpoint"] if run_config(config).weights else ["reference"]


def reads_model(source: str, reference: str) -> tuple[pytest.MarkDecorator, ...]:
    """The marks of an accuracy case that reads `source`'s model: the trained `reference` model is made before
    the first test (`bench.prepare`); a checkpoint is on disk already."""
    return (prepare.needs(prepare.trained(reference)),) if source == "reference" else ()


@functools.cache
def _eval_set(source: str, reference: str, weights: str | None, seq_len: int, count: int) -> EvalSet:
    from models import corpus
    from models.hf import load_hf, load_tokenizer, tokenized_windows

    data = corpus.load()
    unigram = corpus.unigram_bits_per_byte(data.tokens("train"), data.tokens("val"))
    if source == "checkpoint":
        windows, nbytes = tokenized_windows(load_tokenizer(weights), corpus.text("val"), seq_len, count)
        model, name = load_hf(weights).eval(), f"checkpoint:{Path(weights).name}"
        return EvalSet(model, windows, nbytes, name, describe_model(name, model, "as loaded"), unigram)
    from models.reference import TrainConfig, reference_model

    windows = corpus.eval_windows(data.tokens("val"), seq_len, count)
    model = reference_model(reference, progress=False).model.eval()
    tc = TrainConfig()
    training = f"trained {tc.steps} steps of {tc.batch_size} x {tc.seq_len} bytes of the stdlib corpus"
    return EvalSet(model, windows, windows[:, 1:].numel(), reference, describe_model(reference, model, training),
                   unigram)


def eval_set(config: pytest.Config, source: str, reference: str, seq_len: int, count: int) -> EvalSet:
    """The model and windows of an accuracy study for `source` (see `accuracy_sources`), made once per run."""
    return _eval_set(source, reference, run_config(config).weights, seq_len, count)


def calibration_windows(config: pytest.Config, source: str, seq_len: int, count: int) -> torch.Tensor:
    """`count` training windows (never the validation ones) of `source` as (count, seq_len) token ids."""
    from models import corpus

    if source == "checkpoint":
        from models.hf import load_tokenizer, tokenized_windows

        text = corpus.text("train", max_bytes=400 * seq_len * count)  # enough tokens for the windows
        windows, _ = tokenized_windows(load_tokenizer(run_config(config).weights), text, seq_len, count)
    else:
        windows = corpus.eval_windows(corpus.load().tokens("train"), seq_len, count)
    return windows[:, :-1]
