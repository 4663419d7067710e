"""Energy counters read around timed work: NVML's total energy on NVIDIA GPUs, RAPL through Linux's
powercap interface on CPUs. Only counters the hardware keeps; no estimate from a TDP. Where none can be
read, `energy_counter` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class EnergyCounter:
    """A cumulative energy reading in joules (`read()`) and where it comes from."""

    read: Callable[[], float]
    source: str


def _rapl_domains(root: Path) -> list[Path]:
    """The top-level RAPL package domains (`intel-rapl:N`, on Intel and AMD alike), not their sub-zones."""
    return sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)


def rapl_counter(root: Path = POWERCAP) -> EnergyCounter | str:
    """The CPU packages' RAPL energy summed, or why it cannot be read (no powercap interface, no RAPL
    domains, or counters readable only by root, as Linux makes them since 5.10)."""
    if not root.is_dir():
        return f"no powercap interface ({root} is absent: not Linux, or a container or VM without RAPL)"
    domains = _rapl_domains(root)
    if not domains:
        return f"no RAPL package domains under {root}"
    try:
        ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        for domain in domains:
            int((domain / "energy_uj").read_text())
    except PermissionError:
        return f"{domains[0] / 'energy_uj'} is readable only by root here"
    except (OSError, ValueError) as exc:
        return f"RAPL counters cannot be read: {exc}"
    last = [int((d / "energy_uj").read_text()) for d in domains]  # microjoules, wrapping at the range
    total = [0.0]

    def read() -> float:
        for i, domain in enumerate(domains):
            now = int((domain / "energy_uj").read_text())
            step = now - last[i] if now >= last[i] else now + ranges[i] - last[i]  # the counter wrapped
            total[0] += step / 1e6
            last[i] = now
        return total[0]

    names = ", ".join((d / "name").read_text().strip() if (d / "name").exists() else d.name for d in domains)
    return EnergyCounter(read, f"RAPL via powercap ({names})")


def nvml_counter(index: int, nvml: object | None = None) -> EnergyCounter | str:
    """NVML's total energy consumption of GPU `index` (millijoules since the driver loaded, Volta and
    later), or why it cannot be read."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:  # NVML raises its own error classes; absent library, driver or support alike
        return f"NVML total energy not available on GPU {index}: {exc}"
    return EnergyCounter(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3,
                         f"NVML total energy consumption (GPU {index})")


def energy_counter(device: torch.device | str) -> EnergyCounter | str:
    """The energy counter of `device` (its type: cuda or cpu), or why there is none here."""
    device = torch.device(device)
    if device.type == "cuda":
        return nvml_counter(device.index if device.index is not None else torch.cuda.current_device())
    if device.type == "cpu":
        return rapl_counter()
    return f"no energy counter for {device.type} devices"
