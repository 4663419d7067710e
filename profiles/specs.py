"""Spec sheets of common GPUs: peak memory bandwidth and peak dense FLOP/s by dtype.

Labels for the report only; the roofline uses measured ceilings (`profiles.ceilings`). Keys are the
exact names NVML reports; a device not listed simply has no spec sheet. Figures are the vendors'
dense (no sparsity) numbers, FLOP/s in units of 1e12.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSpec:
    """Vendor peaks of one device."""

    bandwidth_GBps: float  # peak DRAM/HBM bandwidth, 1e9 bytes/s
    tflops: dict[str, float]  # dtype -> peak dense TFLOP/s (fp32 on CUDA cores; others on tensor cores)
    memory_GB: float


_H100_SXM = {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "int8": 1978.9}
_A100 = {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "int8": 624.0}

SPECS: dict[str, DeviceSpec] = {
    "NVIDIA H200": DeviceSpec(4800.0, _H100_SXM, 141),
    "NVIDIA H100 80GB HBM3": DeviceSpec(3350.0, _H100_SXM, 80),
    "NVIDIA H100 PCIe": DeviceSpec(2000.0, {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0,
                                            "fp8": 1513.0, "int8": 1513.0}, 80),
    "NVIDIA A100-SXM4-80GB": DeviceSpec(2039.0, _A100, 80),
    "NVIDIA A100-SXM4-40GB": DeviceSpec(1555.0, _A100, 40),
    "NVIDIA A100 80GB PCIe": DeviceSpec(1935.0, _A100, 80),
    "NVIDIA A100-PCIE-40GB": DeviceSpec(1555.0, _A100, 40),
    "NVIDIA L4": DeviceSpec(300.0, {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0, "fp8": 242.5,
                                    "int8": 242.5}, 24),
    "NVIDIA L40S": DeviceSpec(864.0, {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0, "fp8": 733.0,
                                      "int8": 733.0}, 48),
    "NVIDIA A10G": DeviceSpec(600.0, {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0, "int8": 250.0}, 24),
    "NVIDIA A10": DeviceSpec(600.0, {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0, "int8": 250.0}, 24),
    "Tesla T4": DeviceSpec(320.0, {"fp32": 8.1, "fp16": 65.0, "int8": 130.0}, 16),
    "Tesla V100-SXM2-16GB": DeviceSpec(900.0, {"fp32": 15.7, "fp16": 125.0}, 16),
    "Tesla V100-SXM2-32GB": DeviceSpec(900.0, {"fp32": 15.7, "fp16": 125.0}, 32),
    "NVIDIA GeForce RTX 4090": DeviceSpec(1008.0, {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2,
                                                   "fp8": 330.3, "int8": 660.6}, 24),
    "NVIDIA GeForce RTX 3090": DeviceSpec(936.0, {"fp32": 35.6, "tf32": 35.6, "bf16": 71.0, "fp16": 71.0,
                                                  "int8": 284.0}, 24),
}


def lookup(nvml_name: str) -> DeviceSpec | None:
    """The spec sheet of the device NVML calls `nvml_name` (exact name), or None."""
    return SPECS.get(nvml_name)
