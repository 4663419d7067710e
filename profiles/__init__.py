"""The hardware: detection (CPU; GPUs through NVML), spec sheets, measured ceilings, timers, memory probes,
roofline arithmetic and torch.profiler traces. `python -m profiles` prints the hardware profile."""

from .hardware import GpuInfo, HardwareProfile, detect

__all__ = ["GpuInfo", "HardwareProfile", "detect"]
