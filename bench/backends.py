"""The backends a study can run on, each with its availability and a reason when it is unavailable."""

from __future__ import annotations

import copy
import importlib.util
import math
from dataclasses import dataclass, field

import torch

from models import GPT, kernels
from models.generate import decode
from models.layout import onednn_available, to_input_major, to_onednn, to_row_gemv
from profiles.roofline import streamed_params
from profiles.timers import DeviceTimer

# A model whose weights stream less than this per token keeps the preferred layout untuned: its decode
# is bound by per-op overhead, and on a shared machine its layouts' step times trade places from one
# tuning to the next (measured: the tiny models flip by 10-30%), which would make the uncached-slope
# and cache-speed-up gates depend on a coin toss.
TUNE_MIN_WEIGHT_BYTES = 64 << 20


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
        """A copy of `model` on this backend's device in `dtype`, with Linear weights in `layout` and the
        attention impl of `attention(dtype)`."""
        if layout not in LAYOUTS:
            raise ValueError(f"weight layout {layout!r} is not valid; allowed values: {', '.join(LAYOUTS)}")
        if layout in CPU_FP32_LAYOUTS and (self.device_type != "cpu" or dtype != torch.float32):
            raise ValueError(f"the {layout} layout is for fp32 on the CPU, not {dtype} on {self.device_type}")
        prepared = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval()
        if layout == "in_out":
            to_input_major(prepared)
        elif layout == "onednn":
            to_onednn(prepared)
        elif layout == "gemv":
            to_row_gemv(prepared)
        prepared.set_attention_impl(self.attention(dtype))
        return prepared

    def attention(self, dtype: torch.dtype = torch.float32) -> str:
        """The attention impl `prepare` gives models: `kernel` (archbench's one-token step over the raw
        cache, `models.kernels.attend_step`) for fp32 on a CPU where the kernels build, else `sdpa`."""
        if self.device_type == "cpu" and dtype == torch.float32 and kernels.unavailable_reason() is None:
            return "kernel"
        return "sdpa"

    def layouts(self, dtype: torch.dtype = torch.float32) -> tuple[str, ...]:
        """The weight layouts this backend can run `dtype` in (oneDNN: fp32 on a CPU build with oneDNN;
        gemv: fp32 on a CPU where archbench's kernel builds, see `models.kernels`)."""
        usable = ("out_in", "in_out")
        if self.device_type == "cpu" and dtype == torch.float32:
            usable += ("onednn",) if onednn_available() else ()
            usable += ("gemv",) if kernels.unavailable_reason() is None else ()
        return usable

    def fastest_layout(self, model: GPT, *, dtype: torch.dtype = torch.float32, batch: int = 1,
                       prefer: str | None = None, window_s: float = 0.05, repeats: int = 5,
                       tie: float = 0.03, min_weight_bytes: int = TUNE_MIN_WEIGHT_BYTES
                       ) -> tuple[LayoutChoice, GPT]:
        """Time cached single-token decode steps of `model` in every usable layout and pick the fastest;
        returns the choice and the model prepared in that layout. `prefer` (default: the first of
        `layouts()`, no transform) wins when it is within `tie` (3%) of the fastest, so near-equal
        layouts do not flip from run to run, and is taken untimed for a model whose weights stream less
        than `min_weight_bytes` per token (see TUNE_MIN_WEIGHT_BYTES).

        Each timed window holds enough steps to last about `window_s` (at least 4, at most 64); rounds
        go round-robin over the layouts (a slow phase of a shared machine hits them alike) and each
        layout keeps its best of `repeats`, after one warm-up; the prompt's prefill is not timed.
        Which layout streams a model's weights fastest depends on the model as much as the machine:
        oneDNN's prepacked matrix-vector product wins once the weights are far beyond the caches
        (GPT-2 124M on an x86 CPU), while its per-call overhead loses on models that fit in them.
        """
        usable = self.layouts(dtype)
        prefer = prefer if prefer in usable else usable[0]
        if streamed_params(model.config) * torch.finfo(dtype).bits // 8 < min_weight_bytes:
            return LayoutChoice(prefer), self.prepare(model, dtype=dtype, layout=prefer)
        prompt_len, max_steps = 4, 64
        runs = {}
        for layout in usable:
            prepared = self.prepare(model, dtype=dtype, layout=layout)
            tokens = torch.zeros(batch, prompt_len + max_steps, dtype=torch.long, device=self.device)  # (B, P + n)
            runs[layout] = (prepared, tokens, prepared.make_cache(batch, prompt_len + max_steps))

        def timed_step(layout: str, steps: int) -> float:
            prepared, tokens, cache = runs[layout]
            cache.reset()
            logits = prepared(tokens[:, :prompt_len], cache)[:, -1]  # (B, vocab)
            with DeviceTimer(self.device) as timer:
                decode(prepared, tokens, prompt_len, logits, steps, cache)
            return timer.seconds / steps

        with torch.inference_mode():
            warm = min(timed_step(layout, 4) for layout in usable)  # also the warm-up
            steps = max(4, min(max_steps, math.ceil(window_s / max(warm, 1e-9))))
            times: dict[str, list[float]] = {layout: [] for layout in usable}
            for _ in range(repeats):
                for layout in usable:
                    times[layout].append(timed_step(layout, steps))
        step_s = {layout: min(t) for layout, t in times.items()}
        best = min(step_s.values())
        chosen = prefer if step_s[prefer] <= (1 + tie) * best else min(step_s, key=step_s.get)
        winner = runs[chosen][0]
        runs.clear()  # the other candidates' copies go now
        return LayoutChoice(chosen, step_s), winner


@dataclass(frozen=True)
class LayoutChoice:
    """The weight layout chosen for one model on one backend, and what each candidate measured."""

    layout: str
    step_s: dict[str, float] = field(default_factory=dict)  # layout -> seconds per cached decode step


LAYOUTS = ("out_in", "in_out", "onednn", "gemv")
CPU_FP32_LAYOUTS = ("onednn", "gemv")


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
