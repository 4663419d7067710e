"""The backends a study can run on, each with its availability and a reason when it is unavailable."""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass

import torch

from models import GPT
from models.layout import to_input_major, to_onednn


@dataclass(frozen=True)
class TorchBackend:
    """Eager torch on one device type. `prepare` copies the model there, in the chosen weight layout."""

    name: str
    device_type: str  # "cpu" | "cuda"

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_type)

    def unavailable_reason(self) -> str | None:
        """None when usable here, else why not (used as the pytest skip reason)."""
        if self.device_type == "cuda":
            if torch.version.cuda is None:
                return f"torch {torch.__version__} is a CPU-only build (no CUDA)"
            if not torch.cuda.is_available():
                return "no CUDA device is visible (torch.cuda.is_available() is False)"
        return None

    def prepare(self, model: GPT, *, dtype: torch.dtype = torch.float32, layout: str = "out_in") -> GPT:
        """A copy of `model` on this backend's device in `dtype`, with Linear weights in `layout`."""
        if layout not in LAYOUTS:
            raise ValueError(f"weight layout {layout!r} is not valid; allowed values: {', '.join(LAYOUTS)}")
        if layout == "onednn" and (self.device_type != "cpu" or dtype != torch.float32):
            raise ValueError(f"the onednn layout is for fp32 on the CPU, not {dtype} on {self.device_type}")
        prepared = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval()
        if layout == "in_out":
            to_input_major(prepared)
        elif layout == "onednn":
            to_onednn(prepared)
        return prepared


LAYOUTS = ("out_in", "in_out", "onednn")


@dataclass(frozen=True)
class OnnxRuntimeBackend:
    """onnxruntime on the exported merged decoder: the CUDA execution provider when onnxruntime-gpu
    provides it (past kept on the GPU through IO binding), else the CPU one, with torch's thread count."""

    name: str = "onnxruntime"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # inputs and logits cross on the host; the past stays where ORT keeps it

    def unavailable_reason(self) -> str | None:
        for module in ("onnxruntime", "onnx", "onnxscript"):
            if importlib.util.find_spec(module) is None:
                return f"the {module} package is not installed (pip install {module})"
        return None

    def prepare(self, model: GPT, *, dtype: torch.dtype = torch.float32, layout: str = "onnx"):
        """Export `model` (cached on disk) and open an onnxruntime session on it.

        Raises `models.onnx_export.ExportError` with the exporter's message when export fails.
        """
        from models.onnx_export import OrtModel, export

        if dtype != torch.float32:
            raise ValueError(f"the onnxruntime backend exports fp32 graphs only; {dtype} is not supported")
        return OrtModel(export(model), model.config)

    @property
    def provider(self) -> str:
        from models.onnx_export import available_providers

        return available_providers()[0]


Backend = TorchBackend | OnnxRuntimeBackend

BACKENDS: dict[str, Backend] = {
    "torch-cpu": TorchBackend("torch-cpu", "cpu"),
    "torch-cuda": TorchBackend("torch-cuda", "cuda"),
    "onnxruntime": OnnxRuntimeBackend(),
}


def get(name: str) -> Backend:
    """The backend called `name` (exact match); a miss lists the valid names."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid names: {', '.join(BACKENDS)}")
    return BACKENDS[name]
