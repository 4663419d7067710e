"""Measured ceilings of this machine: memory bandwidth and matmul throughput.

The roofline uses these, not spec sheets: a laptop's or a shared VM's real ceiling is what decode
speed should be compared with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .timers import time_fn


@dataclass(frozen=True)
class BandwidthCeiling:
    """Best observed bandwidths on one device, in bytes/s."""

    copy_Bps: float  # tensor copy: read + write of a large buffer
    read_Bps: float  # a sum over a large buffer: a pure read stream
    matvec_out_in_Bps: float  # F.linear(x, W) with W stored (out, in), nn.Linear's layout
    matvec_in_out_Bps: float  # x @ W with W stored (in, out), GPT-2 Conv1D's layout
    buffer_bytes: int

    @property
    def matvec_Bps(self) -> float:
        """The fastest matrix-vector read: the read pattern of batch-1 decode."""
        return max(self.matvec_out_in_Bps, self.matvec_in_out_Bps)

    @property
    def decode_Bps(self) -> float:
        """The ceiling decode is compared with: the fastest read measured (a plain sum, or a matrix-vector
        product in either layout). A decode step only reads, so the copy figure (read + write) is
        reported beside it but not used."""
        return max(self.read_Bps, self.matvec_Bps)

    def to_dict(self) -> dict:
        return {"copy_Bps": self.copy_Bps, "read_Bps": self.read_Bps, "matvec_out_in_Bps": self.matvec_out_in_Bps,
                "matvec_in_out_Bps": self.matvec_in_out_Bps, "buffer_bytes": self.buffer_bytes,
                "decode_Bps": self.decode_Bps}


MATVEC_WIDTH = 1024  # columns of the matrix the matrix-vector reads stream: a transformer projection's width


def _default_bytes(device: torch.device) -> int:
    return (1 << 30) if device.type == "cuda" else (256 << 20)  # well beyond last-level caches


def wait_until_idle(window_s: float = 0.01, busy: float = 0.1, timeout_s: float = 0.5) -> float:
    """Sleep until this process used less than `busy` of one core over a `window_s` sleep, or `timeout_s`
    passed; returns the seconds waited.

    Thread pools keep their workers spinning for a while after their last task: onnxruntime's for 20-100
    ms after each run, on a 2-core VM enough to halve the bandwidth a measurement started at once would
    see. The process's CPU time (every thread's) shows when they have stopped.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        cpu = time.process_time()
        time.sleep(window_s)
        if time.process_time() - cpu < busy * window_s:
            break
    return time.perf_counter() - start


def measure_bandwidth(device: str | torch.device = "cpu", nbytes: int | None = None,
                      repeats: int = 5) -> BandwidthCeiling:
    """Best-of-`repeats` copy and matrix-vector bandwidths on `device` over buffers of `nbytes`.

    The matrix is tall and narrow (`MATVEC_WIDTH` columns, like a transformer's projections), read once
    per call.
    """
    device = torch.device(device)
    nbytes = nbytes or _default_bytes(device)
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    if device.type == "cpu":
        wait_until_idle()  # no other thread pool still spinning from earlier work
    copy_s = min(time_fn(lambda: dst.copy_(src), device, warmup=1, repeats=repeats))
    read_s = min(time_fn(lambda: src.sum(), device, warmup=1, repeats=2 * repeats))
    width = MATVEC_WIDTH
    rows = n // width
    out_in = src[: rows * width].view(rows, width)  # (out, in): nn.Linear's layout
    x_in = torch.ones(1, width, dtype=torch.float32, device=device)  # (1, in)
    out_in_s = min(time_fn(lambda: F.linear(x_in, out_in), device, warmup=1, repeats=repeats))
    in_out = src[: rows * width].view(width, rows)  # (in, out): the transposed layout
    in_out_s = min(time_fn(lambda: x_in @ in_out, device, warmup=1, repeats=repeats))
    matrix_bytes = rows * width * 4
    return BandwidthCeiling(copy_Bps=2 * n * 4 / copy_s, read_Bps=n * 4 / read_s,
                            matvec_out_in_Bps=matrix_bytes / out_in_s, matvec_in_out_Bps=matrix_bytes / in_out_s,
                            buffer_bytes=n * 4)


class ReadProbe:
    """The read bandwidth of `device` now, to set beside a measurement taken at the same time.

    A shared machine's memory bandwidth moves by tens of percent over seconds (on a 2-core VM, 27 to 50
    GB/s within one minute), so a decode round minutes after the session's ceiling was measured may meet
    another machine than the ceiling did. Called right before and right after each timed round, the probe
    gives the ceiling of that round's moment. Each call is the best of `repeats` reads of a buffer beyond
    the last-level caches, by a plain sum and by a matrix-vector product (F.linear, nn.Linear's layout):
    reads `measure_bandwidth` takes its decode ceiling from.
    """

    def __init__(self, device: str | torch.device = "cpu", nbytes: int | None = None, repeats: int = 2) -> None:
        self.device = torch.device(device)
        self.repeats = repeats
        n = (nbytes or _default_bytes(self.device)) // 4
        width = MATVEC_WIDTH
        rows = n // width
        self.buffer = torch.empty(rows * width, dtype=torch.float32, device=self.device).uniform_()  # (rows * width,)
        self.matrix = self.buffer.view(rows, width)  # (out, in)
        self.x = torch.ones(1, width, dtype=torch.float32, device=self.device)  # (1, in)
        self.nbytes = self.buffer.numel() * 4
        self._matvec = lambda: F.linear(self.x, self.matrix)  # (1, out)

    def __call__(self) -> float:
        """Bytes/s of the fastest of `repeats` sums and `repeats` matrix-vector reads, measured now (on the
        CPU once this process's other threads have gone idle, see `wait_until_idle`)."""
        if self.device.type == "cpu":
            wait_until_idle()
        with torch.inference_mode():
            sums = time_fn(lambda: self.buffer.sum(), self.device, warmup=0, repeats=self.repeats)
            products = time_fn(self._matvec, self.device, warmup=0, repeats=self.repeats)
        return self.nbytes / min(*sums, *products)


def measure_matmul(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                   repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of a square matmul of `size` in `dtype` on `device`."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = min(time_fn(lambda: a @ b, device, warmup=1, repeats=repeats))
    return 2 * size**3 / best
