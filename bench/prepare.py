"""What a run computes before its suites start: the reference models and the studies' cached training runs.

They are deterministic, cached on disk by everything that decides them (`models.reference`,
`models.memo`), and independent of each other but for the reference models the fine-tunes start from,
so on a cold cache they run here, before the first test, under one progress bar: side by side in worker
processes where the machine has the cores (one per `models.memo.TRAIN_THREADS` cores: small models use
cores better as several processes than as many threads of one), else one after another in this
process. A cached computation runs on `TRAIN_THREADS` threads wherever it runs, so its result does not
depend on how it was made. Nothing here is timed: the pool is gone before the first benchmark runs.

A suite declares what a case needs where it makes the case: `pytest.param(case, marks=needs(p))`, with
`p` a `Prerequisite` (and what `p` starts from in `p.needs`); the plugin gathers the needs of the selected
cases alone (after `--shard`, `-k` and `--only`: a run of the checkpoint's cases trains no reference
model) and calls `run`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from models.config import ArchConfig
    from models.reference import TrainConfig

MARK = "archbench_needs"  # the pytest mark a case's prerequisites ride on


@dataclass(frozen=True)
class Prerequisite:
    """One cached computation a case needs: made by `compute` (picklable: a module-level function or a
    partial of one, run in a worker process), already there when `done()` (checked in this process)."""

    key: str  # what identifies the result (its cache entry): two cases needing it share one computation
    label: str  # what the progress bar calls it
    compute: Callable[[], object]
    done: Callable[[], bool]
    needs: tuple[Prerequisite, ...] = ()  # what must be made first (made too when missing, each once)
    summary: Callable[[], str] | None = None  # a line the run prints about it once it is there


def needs(*prerequisites: Prerequisite) -> pytest.MarkDecorator:
    """The mark a case carries for what it reads from the cache."""
    return getattr(pytest.mark, MARK)(*prerequisites)


_in_worker = False  # set in the worker processes: only the run's own process draws progress bars


def _train(variant: str | ArchConfig, tc: TrainConfig) -> None:
    from models.reference import reference_model

    reference_model(variant, tc, progress=not _in_worker)  # its steps under the run's bar when made here


def _describe(variant: str) -> str:
    from models.reference import reference_model

    result = reference_model(variant, progress=False)
    return (f"archbench: reference model {variant}: {result.val_bits_per_byte:.3f} bits/byte on held-out files "
            f"(unigram {result.unigram_bits_per_byte:.3f}; trained in {result.seconds:.0f} s)")


def trained(variant: str | ArchConfig, tc: TrainConfig | None = None, label: str | None = None) -> Prerequisite:
    """A model `models.reference.reference_model(variant, tc)` trains and caches. With default settings
    (`tc` None) it is the accuracy studies' reference model, and the run prints its held-out score."""
    from models.reference import TrainConfig, is_cached, model_key

    reference = tc is None and isinstance(variant, str)
    tc = tc or TrainConfig()
    return Prerequisite(f"model {model_key(variant, tc)}", label or f"reference model {variant}",
                        functools.partial(_train, variant, tc), functools.partial(is_cached, variant, tc),
                        summary=functools.partial(_describe, variant) if reference else None)


@dataclass(frozen=True)
class CachedRun:
    """A memoised computation (`models.memo.memoized(namespace, payload, compute)`): what a case reads with
    `result()`, and what `prerequisite()` makes ahead of it. `compute` must pickle (a module-level function
    or a partial of one); `after` are the prerequisites it starts from (a trained model)."""

    namespace: str
    payload: dict
    compute: Callable[[], dict]
    label: str
    after: tuple[Prerequisite, ...] = ()

    def result(self) -> tuple[dict, bool]:
        """The result, and whether it came from the cache."""
        from models.memo import memoized

        return memoized(self.namespace, self.payload, self.compute)

    def prerequisite(self) -> Prerequisite:
        from models.memo import is_memoized, memo_path, memoized

        return Prerequisite(f"{self.namespace} {memo_path(self.namespace, self.payload).stem}",
                            f"{self.namespace} {self.label}",
                            functools.partial(memoized, self.namespace, self.payload, self.compute),
                            functools.partial(is_memoized, self.namespace, self.payload), self.after)


def _start_worker() -> None:
    """A worker process's start: the cached computations' thread count, and no progress bars of its own."""
    global _in_worker
    import torch

    from models.memo import TRAIN_THREADS

    _in_worker = True
    torch.set_num_threads(TRAIN_THREADS)


def default_workers() -> int:
    """How many computations run at once: one per `TRAIN_THREADS` cores this process may use (1: one after
    another, in this process); one when training runs on a GPU."""
    from models.memo import TRAIN_THREADS
    from models.reference import train_device

    if train_device() != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // TRAIN_THREADS)


def gather(prerequisites: Iterable[Prerequisite]) -> dict[str, Prerequisite]:
    """Each prerequisite and what it needs, once per key (the first one declared under a key stands for it)."""
    unique: dict[str, Prerequisite] = {}
    queue = list(prerequisites)
    while queue:
        p = queue.pop(0)
        if p.key not in unique:
            unique[p.key] = p
            queue += p.needs
    return unique


def _needs(p: Prerequisite) -> list[str]:
    return [need.key for need in p.needs]


def _ordered(todo: dict[str, Prerequisite]) -> list[Prerequisite]:
    """Dependencies first, then in the order they were declared."""
    ordered, placed = [], set()

    def place(p: Prerequisite) -> None:
        if p.key in placed:
            return
        placed.add(p.key)
        for key in _needs(p):
            if key in todo:
                place(todo[key])
        ordered.append(p)

    for p in todo.values():
        place(p)
    return ordered


def run(prerequisites: Iterable[Prerequisite], workers: int | None = None, progress: bool = True) -> dict[str, str]:
    """Make every prerequisite (and what it needs) that is not `done()` yet, each once, dependencies first, on
    `workers` processes (default `default_workers()`; 1: in this process); with `progress`, a bar while they
    are made and, after, the `summary` line of each that is there. Returns the labels of those that failed,
    with their errors (a failure is reported and the rest go on: the cases that need it compute it again,
    and fail there with their own message)."""
    unique = gather(prerequisites)
    todo = {key: p for key, p in unique.items() if not p.done()}
    failed = _make(todo, workers, progress) if todo else {}
    for p in unique.values():
        if progress and p.summary is not None and p.label not in failed:
            print(p.summary(), file=sys.stderr, flush=True)
    return failed


def _make(todo: dict[str, Prerequisite], workers: int | None, progress: bool) -> dict[str, str]:
    from tqdm.auto import tqdm

    workers = min(workers or default_workers(), len(todo))
    failed: dict[str, str] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="archbench: preparing", unit="run", disable=not progress, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 15.0, file=sys.stderr)
    try:
        if workers == 1:
            made: set[str] = set()
            for p in _ordered(todo):
                bar.set_postfix_str(p.label)  # shown while it runs
                blocked = [todo[k].label for k in _needs(p) if k in failed]
                unmet = [todo[k].label for k in _needs(p) if k in todo and k not in made and k not in failed]
                if blocked:
                    failed[p.key] = f"needs {', '.join(blocked)}, which failed"
                elif unmet:  # a cycle
                    failed[p.key] = f"needs {', '.join(unmet)}, which were never made"
                else:
                    try:
                        p.compute()
                        made.add(p.key)
                    except Exception as exc:  # reported below; the case that needs it tries again
                        failed[p.key] = f"{type(exc).__name__}: {exc}"
                bar.update()
        else:
            _run_pool(_ordered(todo), workers, failed, bar)
    finally:
        bar.close()
    for key, why in failed.items():
        print(f"archbench: preparing {todo[key].label} failed ({why}); the cases that need it will try again",
              file=sys.stderr, flush=True)
    failed = {todo[key].label: why for key, why in failed.items()}
    if progress:
        where = f"{workers} worker processes" if workers > 1 else "this process"
        print(f"archbench: prepared {len(todo) - len(failed)} of {len(todo)} cached computations in "
              f"{time.perf_counter() - start:.0f} s in {where}", file=sys.stderr, flush=True)
    return failed


def _run_pool(ordered: list[Prerequisite], workers: int, failed: dict[str, str], bar) -> None:
    """Submit each prerequisite once its needs are made; at most `workers` run at once."""
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    pending = list(ordered)
    labels = {p.key: p.label for p in ordered}
    keys = set(labels)
    made: set[str] = set()
    running: dict[Future, Prerequisite] = {}

    def finish(p: Prerequisite, error: str | None) -> None:
        if error is None:
            made.add(p.key)
        else:
            failed[p.key] = error
        bar.set_postfix_str(p.label, refresh=False)
        bar.update()

    context = multiprocessing.get_context("spawn")  # never fork a process whose torch has started threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker) as pool:
        try:
            while pending or running:
                for p in list(pending):
                    if len(running) >= workers:
                        break
                    blocked = [labels[k] for k in _needs(p) if k in failed]
                    if blocked:
                        pending.remove(p)
                        finish(p, f"needs {', '.join(blocked)}, which failed")
                    elif all(k in made or k not in keys for k in _needs(p)):
                        pending.remove(p)
                        try:
                            running[pool.submit(p.compute)] = p
                        except BrokenProcessPool as exc:  # a worker died: what is left is the cases' to make
                            finish(p, f"the worker processes stopped ({exc})")
                if not running:
                    for p in pending:  # needs that can never be met (a cycle)
                        finish(p, f"needs {', '.join(labels.get(k, k) for k in _needs(p))}, which were never made")
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    p = running.pop(future)
                    try:
                        future.result()
                        finish(p, None)
                    except Exception as exc:  # the worker's own error, or its death (BrokenProcessPool)
                        finish(p, f"{type(exc).__name__}: {exc}")
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
