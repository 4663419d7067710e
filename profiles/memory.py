"""Memory probes: the torch allocator's peak, NVML device memory, and this process's resident set."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch


def process_rss_bytes() -> int | None:
    """This process's current resident set size (Linux /proc), else None."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far (it never goes down; compare in a fresh process)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def nvml_used_bytes(index: int = 0) -> int | None:
    """Device memory in use on GPU `index` as NVML sees it (every process), else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


class RssSampler:
    """Samples this process's RSS every `interval` seconds in a background thread; `peak_delta_bytes` is
    the highest sample above the RSS at entry (ru_maxrss cannot be reset, so it cannot do this)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.start_bytes = self.peak_bytes = 0

    def __enter__(self) -> RssSampler:
        import threading

        self.start_bytes = self.peak_bytes = process_rss_bytes() or 0
        self._stop = threading.Event()

        def poll() -> None:
            while not self._stop.wait(self.interval):
                self.peak_bytes = max(self.peak_bytes, process_rss_bytes() or 0)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, process_rss_bytes() or 0)

    @property
    def peak_delta_bytes(self) -> int:
        return self.peak_bytes - self.start_bytes


@dataclass
class MemoryReading:
    """What a `MemoryProbe` saw over a block of work (None where a probe does not apply)."""

    peak_alloc_bytes: int | None = None  # torch allocator peak above the start (CUDA)
    nvml_delta_bytes: int | None = None  # device memory growth seen by NVML (CUDA)
    rss_delta_bytes: int | None = None  # growth of this process's resident set (CPU)
    peak_rss_bytes: int | None = None  # this process's peak resident set after the block (CPU)

    def as_metrics(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class MemoryProbe:
    """Context manager measuring the memory a block of work takes on `device`.

    CUDA: the allocator peak is reset on entry, so `peak_alloc_bytes` is this block's own peak above
    what was allocated before; NVML adds the device-wide view. CPU: RSS growth over the block.
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.reading = MemoryReading()

    def __enter__(self) -> MemoryProbe:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._alloc0 = torch.cuda.memory_allocated(self.device)
            self._nvml0 = nvml_used_bytes(self.device.index or 0)
        else:
            self._rss0 = process_rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.reading.peak_alloc_bytes = torch.cuda.max_memory_allocated(self.device) - self._alloc0
            nvml1 = nvml_used_bytes(self.device.index or 0)
            if self._nvml0 is not None and nvml1 is not None:
                self.reading.nvml_delta_bytes = nvml1 - self._nvml0
        else:
            rss1 = process_rss_bytes()
            if self._rss0 is not None and rss1 is not None:
                self.reading.rss_delta_bytes = rss1 - self._rss0
            self.reading.peak_rss_bytes = peak_rss_bytes()
