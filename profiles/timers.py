"""Timers that synchronise the device before reading the clock."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for every queued kernel on `device` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class DeviceTimer:
    """Elapsed seconds of a block of work on `device`, measured after the device has finished it.

    On CUDA the interval is taken from CUDA events recorded on the current stream; elsewhere from
    `time.perf_counter` after a synchronisation.
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.seconds = float("nan")

    def __enter__(self) -> DeviceTimer:
        synchronize(self.device)
        if self.device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1e3
        else:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self._t0


def time_fn(fn: Callable[[], object], device: str | torch.device, *, warmup: int = 1, repeats: int = 5) -> list[float]:
    """Seconds of `repeats` synchronised calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with DeviceTimer(device) as timer:
            fn()
        times.append(timer.seconds)
    return times


def warm_up(device: str | torch.device, seconds: float = 2.0) -> None:
    """Keep `device` busy for about `seconds` (GPUs idle at low clocks and take a moment to ramp up);
    a no-op on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a @ a
        synchronize(device)


def serving_figures(prefill_s: float, step_s: list[float]) -> dict[str, float]:
    """What serving benchmarks report for one request, named as they name it: `ttft_s` (time to first token:
    the prompt's prefill plus the first decode step, which samples and feeds that token) and `tpot_*_s` (time
    per output token after the first: mean, median, 90th and 99th percentile over the steps)."""
    if not step_s:
        return {"ttft_s": prefill_s}
    later = np.asarray(step_s[1:] or step_s)  # (steps,) seconds
    p50, p90, p99 = np.percentile(later, [50, 90, 99])
    return {"ttft_s": prefill_s + step_s[0], "tpot_mean_s": float(later.mean()), "tpot_p50_s": float(p50),
            "tpot_p90_s": float(p90), "tpot_p99_s": float(p99)}
