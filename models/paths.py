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


def private_dir(path: Path) -> Path:
    """`path` as a directory readable and writable by this user only (0700; created with its parents)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid") and path.stat().st_uid == os.getuid():
        path.chmod(0o700)
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def untrusted_reason(path: Path) -> str | None:
    """Why a cache entry must not be used (None when it may): not owned by this user, or writable by
    others (someone else could have put or changed it)."""
    if not hasattr(os, "getuid"):
        return None
    info = path.stat()
    if info.st_uid != os.getuid():
        return f"{path} is owned by uid {info.st_uid}, not this user ({os.getuid()})"
    if info.st_mode & 0o002:
        return f"{path} is writable by other users (mode {oct(info.st_mode & 0o777)})"
    return None


def write_checksum(path: Path) -> None:
    """Record `path`'s sha256 beside it (`<name>.sha256`), as the cache writes an entry."""
    path.with_name(path.name + ".sha256").write_text(sha256_file(path) + "\n")


def cache_entry_problem(path: Path) -> str | None:
    """Why a cached file cannot be used as it is (None when it can): absent, untrusted (`untrusted_reason`),
    without its recorded sha256, or with other bytes than were written."""
    if not path.is_file():
        return f"{path} is missing"
    reason = untrusted_reason(path)
    if reason:
        return reason
    recorded = path.with_name(path.name + ".sha256")
    if not recorded.is_file():
        return f"{path} has no recorded checksum (written by an older archbench, or cut short)"
    if recorded.read_text().strip() != sha256_file(path):
        return f"{path} does not match the checksum recorded when it was written (changed or corrupt)"
    return None
