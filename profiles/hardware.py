"""Hardware detection: the CPU, memory, versions and every NVIDIA GPU (through NVML), as a frozen profile.

Everything degrades to empty fields: no GPU, no NVML library, or NVML raising never crashes detection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML (and torch, for the compute capability) reports it."""

    index: int
    name: str
    memory_total_bytes: int
    driver: str
    sm_clock_max_mhz: int | None = None
    memory_clock_max_mhz: int | None = None
    compute_capability: str | None = None  # e.g. "9.0", from torch where CUDA is usable
    uuid: str | None = None


# The software versions a profile records: (label, field of HardwareProfile), shown by `python -m profiles`
# and in the report's hardware table.
SOFTWARE = (("Python", "python"), ("torch", "torch"), ("CUDA (torch build)", "cuda"),
            ("onnxruntime", "onnxruntime"))


@dataclass(frozen=True)
class HardwareProfile:
    """What this machine is: CPU, memory, OS, versions, GPUs."""

    cpu_model: str
    cpu_count_logical: int
    torch_threads: int
    memory_total_bytes: int | None
    os: str
    machine: str
    python: str
    torch: str
    cuda: str | None  # CUDA version torch was built with
    onnxruntime: str | None
    onnxruntime_providers: tuple[str, ...] = ()
    gpus: tuple[GpuInfo, ...] = ()
    nvml_error: str | None = None  # why NVML gave nothing (absent, no driver...), None when it answered
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict (GPUs as a list of dicts)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @property
    def label(self) -> str:
        """A short name of the machine for report columns: the first GPU, else the CPU."""
        return self.gpus[0].name if self.gpus else self.cpu_model


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux, else platform)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_total_bytes() -> int | None:
    """Physical memory in bytes, where the OS tells."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ort_providers() -> tuple[str, ...]:
    try:
        import onnxruntime

        return tuple(onnxruntime.get_available_providers())
    except Exception:  # an absent or broken onnxruntime is a fact to record, not a crash
        return ()


def _decode(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_gpus(nvml: object | None = None) -> tuple[tuple[GpuInfo, ...], str | None]:
    """GPUs through NVML, and the reason when there are none to report. `nvml` defaults to `pynvml`."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as exc:
            return (), f"nvidia-ml-py (pynvml) is not installed: {exc}"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded...
        return (), f"NVML did not initialise: {exc}"
    gpus = []
    try:
        driver = _decode(nvml.nvmlSystemGetDriverVersion())
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)

            def optional(fn, *args, _handle=handle):
                try:
                    return fn(_handle, *args)
                except Exception:
                    return None

            uuid = optional(nvml.nvmlDeviceGetUUID)
            capability = None
            if torch.cuda.is_available() and i < torch.cuda.device_count():
                major, minor = torch.cuda.get_device_capability(i)
                capability = f"{major}.{minor}"
            gpus.append(GpuInfo(
                index=i, name=_decode(nvml.nvmlDeviceGetName(handle)),
                memory_total_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total), driver=driver,
                sm_clock_max_mhz=optional(nvml.nvmlDeviceGetMaxClockInfo, getattr(nvml, "NVML_CLOCK_SM", 1)),
                memory_clock_max_mhz=optional(nvml.nvmlDeviceGetMaxClockInfo, getattr(nvml, "NVML_CLOCK_MEM", 2)),
                compute_capability=capability, uuid=_decode(uuid) if uuid is not None else None,
            ))
    except Exception as exc:
        return tuple(gpus), f"NVML failed while listing devices: {exc}"
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return tuple(gpus), None


def detect(nvml: object | None = None) -> HardwareProfile:
    """The profile of this machine. `nvml` replaces the pynvml module (tests pass a failing one)."""
    gpus, nvml_error = nvml_gpus(nvml)
    return HardwareProfile(
        cpu_model=cpu_model(), cpu_count_logical=os.cpu_count() or 1, torch_threads=torch.get_num_threads(),
        memory_total_bytes=memory_total_bytes(), os=platform.platform(), machine=platform.machine(),
        python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
        onnxruntime=_version("onnxruntime") or _version("onnxruntime-gpu"), onnxruntime_providers=_ort_providers(),
        gpus=gpus, nvml_error=nvml_error,
    )
