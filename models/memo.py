"""Results of deterministic runs cached on disk: a study's training outcome (losses, held-out bits per
byte), keyed by everything that decides it, computed once and reused by later runs.

Only JSON-ready results are kept (never models: `models.reference` caches those). The key is a hash of
the payload the caller gives (the configuration, the seed, the corpus fingerprint) plus the versions
of Python and torch; a write is atomic, so a crash never leaves half a result under a key.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from .paths import cache_dir

MEMO_VERSION = 1  # bump when what a memoised computation returns changes in a way its payload cannot see


def memo_path(namespace: str, payload: dict) -> Path:
    """Where the result for `payload` lives (whether or not it has been computed)."""
    keyed = {**payload, "python": platform.python_version(), "torch": torch.__version__.split("+")[0],
             "memo": MEMO_VERSION}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "memo" / namespace / f"{key}.json"


def memoized(namespace: str, payload: dict, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """`compute()`'s result for `payload`: read from the cache when there, else computed and saved;
    returns it and whether it came from the cache. An unreadable entry is computed again."""
    path = memo_path(namespace, payload)
    if path.is_file():
        try:
            return json.loads(path.read_text()), True
        except (OSError, ValueError):
            pass  # a damaged entry: compute it again below
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    return result, False
