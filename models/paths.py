"""Where archbench keeps what it builds (trained reference models, ONNX exports): one helper."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    """archbench's cache directory: $ARCHBENCH_CACHE_DIR, else the platform's user cache directory."""
    if os.environ.get("ARCHBENCH_CACHE_DIR"):
        return Path(os.environ["ARCHBENCH_CACHE_DIR"])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "archbench" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "archbench"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "archbench"
