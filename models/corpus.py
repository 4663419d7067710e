"""The embedded corpus: the Python standard library's own source files, as bytes.

Every Python installation carries it, so accuracy figures need no download. What is taken:
- every `*.py` file under `sysconfig.get_paths()["stdlib"]`;
- except third-party and generated code: `site-packages` / `dist-packages`, test suites (`test`,
  `tests`, `idle_test` directories), `encodings` (generated codec tables) and `pydoc_data` (one
  generated string of documentation), and `__pycache__`.

The split is by file and deterministic: the `email` package is set aside whole as the `adapt` split
(a domain no model was trained on, for fine-tuning studies); of the rest, a file whose relative path
hashes (SHA-256) into the lowest 10% goes to `val`, every other file to `train`. Files are joined in
sorted path order, each followed by a blank line. The corpus differs between Python versions; its
fingerprint (version, paths and sizes) keys everything derived from it.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

SPLITS = ("train", "val", "adapt")
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "encodings",
                           "pydoc_data", "__pycache__"})
ADAPT_PACKAGE = "email"
VAL_FRACTION = 0.10
FILE_SEPARATOR = b"\n\n"


def stdlib_root() -> Path:
    """The directory of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _split_of(relpath: str) -> str:
    if relpath.split("/")[0] == ADAPT_PACKAGE:
        return "adapt"
    digest = hashlib.sha256(relpath.encode()).digest()
    return "val" if int.from_bytes(digest[:4], "big") < VAL_FRACTION * 2**32 else "train"


@dataclass(frozen=True)
class Corpus:
    """The split file lists of the standard library, and their bytes on demand."""

    root: Path
    files: dict[str, tuple[str, ...]]  # split -> sorted relative paths (posix)
    fingerprint: str  # Python version + every path and size

    def tokens(self, split: str) -> Tensor:
        """Byte-level tokens of one split as a uint8 tensor (1-D)."""
        if split not in SPLITS:
            raise ValueError(f"unknown corpus split {split!r}; allowed values: {', '.join(SPLITS)}")
        return _read_tokens(self.root, self.files[split])


@cache
def _read_tokens(root: Path, relpaths: tuple[str, ...]) -> Tensor:
    data = bytearray()
    for rel in relpaths:
        data += (root / rel).read_bytes() + FILE_SEPARATOR
    return torch.frombuffer(data, dtype=torch.uint8).clone() if data else torch.zeros(0, dtype=torch.uint8)


@cache
def load(root: str | None = None) -> Corpus:
    """The corpus of the standard library at `root` (default: the running Python's)."""
    base = Path(root) if root is not None else stdlib_root()
    if not base.is_dir():
        raise FileNotFoundError(f"standard library directory {base} does not exist")
    split_files: dict[str, list[str]] = {s: [] for s in SPLITS}
    fingerprint = hashlib.sha256(platform.python_version().encode())
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)  # prune: never descend
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not name.endswith(".py") or not path.is_file():
                continue
            relpath = path.relative_to(base).as_posix()
            split_files[_split_of(relpath)].append(relpath)
            fingerprint.update(f"{relpath}:{path.stat().st_size};".encode())
    split_files = {s: sorted(v) for s, v in split_files.items()}
    if not split_files["train"] or not split_files["val"]:
        raise FileNotFoundError(f"no standard library source files found under {base}")
    files = {s: tuple(v) for s, v in split_files.items()}
    return Corpus(root=base, files=files, fingerprint=fingerprint.hexdigest()[:16])


def random_windows(tokens: Tensor, batch: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`batch` random windows of `seq_len` inputs and their next-byte targets, each (batch, seq_len) int64."""
    if tokens.numel() < seq_len + 2:
        raise ValueError(f"corpus split of {tokens.numel()} bytes is shorter than a window of {seq_len + 1}")
    starts = torch.randint(0, tokens.numel() - seq_len - 1, (batch,), generator=generator)  # (batch,)
    offsets = torch.arange(seq_len + 1)  # (seq_len + 1,)
    windows = tokens[starts[:, None] + offsets[None, :]].long()  # (batch, seq_len + 1)
    return windows[:, :-1], windows[:, 1:]


def window_starts(length: int, seq_len: int, max_windows: int, what: str = "corpus split") -> Tensor:
    """Starts of up to `max_windows` evenly spaced, non-overlapping windows of seq_len + 1 items in a
    sequence of `length` items, (n,)."""
    available = length // (seq_len + 1)
    if available == 0:
        raise ValueError(f"{what} of {length} items is shorter than a window of {seq_len + 1}")
    n = min(max_windows, available)
    starts = torch.linspace(0, (available - 1) * (seq_len + 1), n).long()  # (n,)
    return starts - starts % (seq_len + 1)


def eval_windows(tokens: Tensor, seq_len: int, max_windows: int) -> Tensor:
    """Up to `max_windows` evenly spaced, non-overlapping windows of seq_len + 1 bytes, (n, seq_len + 1)."""
    starts = window_starts(tokens.numel(), seq_len, max_windows)  # (n,)
    return tokens[starts[:, None] + torch.arange(seq_len + 1)[None, :]].long()  # (n, seq_len + 1)


def unigram_bits_per_byte(train: Tensor, val: Tensor) -> float:
    """Cross-entropy on `val` of a byte-frequency model fitted on `train` (add-one smoothing), in bits per byte."""
    counts = torch.bincount(train.long(), minlength=256).double() + 1.0  # (256,)
    log2_probs = torch.log2(counts / counts.sum())  # (256,)
    return float(-log2_probs[val.long()].mean())


NATS_TO_BITS = 1.0 / math.log(2.0)


def text(split: str, root: str | None = None, max_bytes: int | None = None) -> str:
    """One split (or its first `max_bytes`) as text (UTF-8, undecodable bytes replaced), for tokenizers
    of real checkpoints."""
    data = load(root).tokens(split)[:max_bytes]
    return bytes(data.numpy()).decode("utf-8", errors="replace")
