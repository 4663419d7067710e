"""Results of deterministic runs cached on disk: a study's training outcome (losses, held-out bits per
byte), keyed by everything that decides it, computed once and reused by later runs.

Only JSON-ready results are kept (never models: `models.reference` caches those). The key is a hash of
the payload the caller gives (the configuration, the seed, the corpus fingerprint) plus the versions
of Python and torch; a write is atomic, so a crash never leaves half a result under a key. A result is
computed on a fixed number of CPU threads (`TRAIN_THREADS`, `training_threads`): its last bits then do
not depend on the machine's core count, nor on whether `bench.prepare` made it in a worker process or a
suite made it itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .paths import cache_dir

MEMO_VERSION = 2  # bump when a result changes in a way its payload cannot see (2: on TRAIN_THREADS threads)
# threads of a cached computation: two run these small models 1.6x faster than one on the CPU (a fixed
# count: one more or less changes the last bits of a result); `bench.prepare` runs cores / 2 at once
TRAIN_THREADS = 2


def memo_path(namespace: str, payload: dict) -> Path:
    """Where the result for `payload` lives (whether or not it has been computed)."""
    keyed = {**payload, "python": platform.python_version(), "torch": torch.__version__.split("+")[0],
             "memo": MEMO_VERSION}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "memo" / namespace / f"{key}.json"


@contextlib.contextmanager
def training_threads() -> Iterator[None]:
    """Run the body on `TRAIN_THREADS` CPU threads (torch's intra-op pool), restoring the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_memoized(namespace: str, payload: dict) -> bool:
    """Whether a result for `payload` is on disk (it is read, and recomputed if damaged, by `memoized`)."""
    return memo_path(namespace, payload).is_file()


def memoized(namespace: str, payload: dict, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """`compute()`'s result for `payload`: read from the cache when there, else computed and saved;
    returns it and whether it came from the cache. An unreadable entry is computed again. `compute` runs on
    `TRAIN_THREADS` threads (`training_threads`)."""
    path = memo_path(namespace, payload)
    if path.is_file():
        try:
            return json.loads(path.read_text()), True
        except (OSError, ValueError):
            pass  # a damaged entry: compute it again below
    with training_threads():
        result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    return result, False
