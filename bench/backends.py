"""The engines a study runs on: one protocol, one registry line per backend.

A backend is a real runtime as its users run it (eager torch, onnxruntime on the exported graph, ...):
nothing of archbench's runs inside it. What is under study (a cache kind, an INT8 scheme, an adapter)
is archbench's; the engine that runs it is not. Suites and reports never test a backend's name:
they ask what it can do (`supports(dtype, feature)`), which family it belongs to and on which device
type it computes. Records carry `backend`, `backend_family` and `device_type`.

Features (what a suite may ask for):
- `DECODE`: `prepare(model, dtype)` gives a `models.Decoder` with its own KV cache.
- `CACHE_KINDS`: that Decoder takes archbench's KV cache kinds (`models.kv_cache`), so a cache kind
  can be studied on it.
- `MODULE_TRANSFORMS`: it runs archbench's module transforms (INT8 layers, LoRA adapters) and torch's
  own quantized modules.
- `GRAPH_QUANTIZATION`: it quantizes its own graph with its own quantizers (`quantize`).
- `MODULES`: it runs a standalone torch module (`prepare_module`), e.g. one norm layer.
- `TORCH_PEER`: transformers' torch models run on it beside ours (the peer comparison):
  `prepare_peer(hf_model)` gives the model on this engine and what its `generate` is given to run the
  way this engine runs (transformers' own switches: eager, or a static cache with torch.compile).
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from models import GPT, Decoder
from models.registry import Registry

DECODE = "decode"
CACHE_KINDS = "cache-kinds"
MODULE_TRANSFORMS = "module-transforms"
GRAPH_QUANTIZATION = "graph-quantization"
MODULES = "modules"
TORCH_PEER = "torch-peer"
FEATURES = (DECODE, CACHE_KINDS, MODULE_TRANSFORMS, GRAPH_QUANTIZATION, MODULES, TORCH_PEER)
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class CannotPrepareError(RuntimeError):
    """The engine cannot take this model (its exporter's or runtime's message); suites skip with it."""


@dataclass(frozen=True)
class PreparedModule:
    """A standalone module on an engine: `run()` computes its output for the example input."""

    run: Callable[[], Tensor]
    ops: tuple[str, ...] = ()  # the op types of the engine's graph, where it has one


class Backend(Protocol):
    """What every backend is. `device_type` is where the engine computes; `input_device` is where the
    tensors handed to its Decoder and the logits it returns live."""

    name: str
    family: str  # torch | onnxruntime | ...: backends of one family share an engine
    device_type: str  # cpu | cuda | ...
    reference: bool  # the backend others on its device are compared with (eager torch)
    fuses_ops: bool  # a compiler or graph optimiser fuses ops (eager torch runs its kernels one by one)
    compiles_per_shape: bool  # compiles code for each new input shape on first use (seconds per graph)
    own_prefill: bool  # a prompt runs on this engine's own code (False: on eager torch, the way transformers'
    # compiled generate prefills; its prefill figures would be the reference's under another name)

    @property
    def input_device(self) -> torch.device: ...

    def unavailable_reason(self) -> str | None:
        """None when usable here, else why not (the skip reason)."""
        ...

    def supports(self, dtype: torch.dtype, feature: str) -> str | None:
        """None when this backend can do `feature` in `dtype`, else why not."""
        ...

    def prepare(self, model: GPT, dtype: torch.dtype = torch.float32) -> Decoder:
        """`model` on this engine in `dtype` (a copy: the model is never changed); raises CannotPrepareError."""
        ...

    def settings(self) -> dict:
        """How the engine is configured (recorded in the run's machine info)."""
        ...


def _check_feature(feature: str) -> None:
    if feature not in FEATURES:
        raise ValueError(f"unknown backend feature {feature!r}; allowed values: {', '.join(FEATURES)}")


@dataclass(frozen=True)
class TorchBackend:
    """Eager torch on one device type, as its users run it: nn.Linear, scaled_dot_product_attention, the
    weights as the model holds them. `prepare` copies the model there."""

    name: str
    device_type: str  # "cpu" | "cuda"
    family: str = "torch"
    reference: bool = True
    fuses_ops: bool = False
    compiles_per_shape: bool = False
    own_prefill: bool = True

    @property
    def input_device(self) -> torch.device:
        return torch.device(self.device_type)

    def unavailable_reason(self) -> str | None:
        if self.device_type == "cuda":
            if torch.version.cuda is None:
                return f"torch {torch.__version__} is a CPU-only build (no CUDA)"
            if not torch.cuda.is_available():
                return "no CUDA device is visible (torch.cuda.is_available() is False)"
        return None

    def supports(self, dtype: torch.dtype, feature: str) -> str | None:
        _check_feature(feature)
        if dtype not in DTYPE_NAMES:
            return f"{self.name} runs {', '.join(DTYPE_NAMES.values())}, not {dtype}"
        if feature == GRAPH_QUANTIZATION:
            return f"{self.name} runs torch modules as they are; it quantizes no graph"
        return None

    def prepare(self, model: GPT, dtype: torch.dtype = torch.float32) -> GPT:
        """A copy of `model` on this backend's device in `dtype`, in eval mode."""
        return copy.deepcopy(model).to(device=self.input_device, dtype=dtype).eval()

    def prepare_peer(self, hf_model: nn.Module, use_cache: bool = True) -> tuple[nn.Module, dict]:
        """transformers' model on this device, generating as it does by default (eager, dynamic cache)."""
        return hf_model.to(self.input_device).eval(), {}

    def prepare_module(self, module: nn.Module, example: Tensor) -> PreparedModule:
        """`module` (a copy) and `example` on this device; `run()` is the module's forward."""
        module = copy.deepcopy(module).to(self.input_device).eval()
        x = example.to(self.input_device)
        return PreparedModule(lambda: module(x))

    def settings(self) -> dict:
        return {"engine": "torch eager", "torch": torch.__version__, "threads": torch.get_num_threads()}


@dataclass(frozen=True)
class OnnxRuntimeBackend:
    """onnxruntime on archbench's exported merged decoder (`models.onnx_export`), with one execution
    provider, all graph optimisations and torch's intra-op thread count. Inputs and logits cross on the
    host; with the CUDA provider the past stays on the GPU through IO binding. `graph` is which graph
    the session loads: `plain` (the export) or `fused` (onnxruntime's transformer optimizer applied
    offline first, as its documentation recommends for transformer models)."""

    name: str
    device_type: str  # "cpu" (CPUExecutionProvider) | "cuda" (CUDAExecutionProvider, onnxruntime-gpu)
    graph: str = "plain"  # a level of models.onnx_export.GRAPH_LEVELS
    family: str = "onnxruntime"
    reference: bool = False
    fuses_ops: bool = True
    compiles_per_shape: bool = False  # the export (cached on disk) serves every shape
    own_prefill: bool = True

    @property
    def provider(self) -> str:
        return {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[self.device_type]

    @property
    def input_device(self) -> torch.device:
        return torch.device("cpu")

    def unavailable_reason(self) -> str | None:
        for module in ("onnxruntime", "onnx", "onnxscript"):
            if importlib.util.find_spec(module) is None:
                return f"the {module} package is not installed (pip install {module})"
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            return (f"this onnxruntime ({ort.__version__}) has no {self.provider} (it has "
                    f"{', '.join(ort.get_available_providers())}; install onnxruntime-gpu for CUDA)")
        return None

    def supports(self, dtype: torch.dtype, feature: str) -> str | None:
        _check_feature(feature)
        if dtype != torch.float32:
            return f"{self.name} runs the exported fp32 graph; {DTYPE_NAMES.get(dtype, dtype)} is not exported"
        if feature == CACHE_KINDS:
            return f"{self.name} keeps its own past (the graph's concatenated presents), not archbench's cache kinds"
        if feature == MODULE_TRANSFORMS:
            return f"{self.name} runs an exported graph: torch module transforms do not apply (it quantizes its graph)"
        if feature == TORCH_PEER:
            return f"{self.name} runs no transformers model; its peer would be our own exported graph"
        if self.graph != "plain" and feature in (GRAPH_QUANTIZATION, MODULES):
            return (f"{self.name} runs the transformer optimizer's fused decoder; quantization and standalone "
                    "modules run on the plain graph (a module's graph is already one fused op)")
        return None

    def _session(self, path: Path, model: GPT) -> Decoder:
        from models.onnx_export import OrtModel

        try:
            return OrtModel(path, model.config, providers=[self.provider])
        except Exception as exc:  # onnxruntime failing to load the graph: its own message
            raise CannotPrepareError(f"onnxruntime could not load {path.name}: {type(exc).__name__}: {exc}") from exc

    def prepare(self, model: GPT, dtype: torch.dtype = torch.float32) -> Decoder:
        """Export `model` (cached on disk) and open a session on it."""
        from models.onnx_export import ExportError, export, fuse

        reason = self.supports(dtype, DECODE)
        if reason:
            raise CannotPrepareError(reason)
        try:
            path = export(model)
            return self._session(fuse(path, model.config) if self.graph == "fused" else path, model)
        except ExportError as exc:
            raise CannotPrepareError(str(exc)) from exc

    def quantize(self, model: GPT, scheme: str, norms: str, directory: Path,
                 calibration: Iterable[Tensor] = ()) -> Decoder:
        """`model` exported and quantized by onnxruntime's own quantizer `scheme` (`models.int8.ONNX_SCHEMES`)
        with the `norms` policy, in a session; static quantization calibrates on `calibration` (token id
        windows (1, T)). The Decoder's `path` is the quantized file."""
        import numpy as np

        from models.int8 import quantize_onnx
        from models.onnx_export import ExportError, export, input_names

        cfg = model.config
        names = input_names(cfg)
        empty = np.zeros((1, cfg.kv_heads, 0, cfg.head_dim), dtype=np.float32)
        feeds = [{names[0]: w.numpy().astype(np.int64), **{n: empty for n in names[1:]}} for w in calibration]
        try:
            src = export(model)
        except ExportError as exc:
            raise CannotPrepareError(str(exc)) from exc
        out = quantize_onnx(src, Path(directory) / f"{scheme}-{norms}.onnx", scheme, norms, calibration=feeds or None)
        return self._session(out, model)

    def prepare_module(self, module: nn.Module, example: Tensor) -> PreparedModule:
        """`module` exported alone with torch.onnx (dynamo, opset MODULE_OPSET: norms export as onnxruntime's
        fused LayerNormalization and RMSNormalization) and run in a session on `example`."""
        import tempfile

        import onnx
        import onnxruntime as ort

        from models.onnx_export import session_options

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "module.onnx"
            try:
                torch.onnx.export(copy.deepcopy(module).eval(), (example,), str(path), input_names=["x"],
                                  output_names=["y"], dynamo=True, verbose=False, opset_version=MODULE_OPSET)
            except Exception as exc:  # the exporter's own failure
                raise CannotPrepareError(f"torch.onnx could not export the module: {type(exc).__name__}: "
                                         f"{exc}") from exc
            ops = tuple(sorted({n.op_type for n in onnx.load(str(path)).graph.node}))
            session = ort.InferenceSession(str(path), sess_options=session_options(), providers=[self.provider])
        feed = {"x": example.detach().cpu().numpy()}
        return PreparedModule(lambda: torch.from_numpy(session.run(None, feed)[0]), ops)

    def settings(self) -> dict:
        import onnxruntime as ort

        from models.onnx_export import OPSET

        graph = {"plain": "the export as it is",
                 "fused": "onnxruntime.transformers optimize_model (model_type gpt2, opt_level 0) offline"}
        return {"engine": "onnxruntime", "onnxruntime": ort.__version__, "provider": self.provider,
                "graph": f"{self.graph}: {graph[self.graph]}", "graph_optimization_level": "ORT_ENABLE_ALL",
                "opset": OPSET, "threads": torch.get_num_threads()}


PEER_UNSUPPORTED_OPTIONS = ("freezing",)  # inductor options transformers' compiled generate cannot take
MODULE_OPSET = 23  # standalone modules: the opset with RMSNormalization beside LayerNormalization


@dataclass(frozen=True)
class TorchCompileBackend:
    """torch.compile with inductor as its users run it. Decode is the gpt-fast recipe
    (`models.compiled.CompiledDecoder`): a static cache with a tensor position, one fixed-shape graph per
    power-of-two bucket of attended positions, the prompt eager unless `compile_prefill` (as transformers'
    compiled generate and gpt-fast by default run it), uncached forwards with dynamic shapes; whatever cannot be
    compiled fails (a skip with torch.compile's message), never an eager run in its place. Standalone
    modules compile for their example's shape. Inductor's caches live under archbench's cache
    directory (`bench/__init__.py` points inductor there), so a second run reuses the compiled code."""

    name: str
    device_type: str
    family: str = "torch"
    reference: bool = False
    fuses_ops: bool = True
    compiles_per_shape: bool = True
    compile_prefill: bool = False  # prompts eager (transformers' compiled generate, gpt-fast's default); True
    # compiles them too (one dynamic-length graph per bucket: ~20 s for GPT-2 124M with freezing on a CPU)

    @property
    def own_prefill(self) -> bool:
        return self.compile_prefill

    @property
    def input_device(self) -> torch.device:
        return torch.device(self.device_type)

    def unavailable_reason(self) -> str | None:
        import shutil

        eager = TorchBackend(self.name, self.device_type).unavailable_reason()
        if eager:
            return eager
        if self.device_type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++")):
            return "inductor compiles C++ on the CPU and no C++ compiler is on PATH (g++, c++ or $CXX)"
        return None

    def supports(self, dtype: torch.dtype, feature: str) -> str | None:
        _check_feature(feature)
        if dtype not in DTYPE_NAMES:
            return f"{self.name} runs {', '.join(DTYPE_NAMES.values())}, not {dtype}"
        if feature in (DECODE, MODULES, MODULE_TRANSFORMS, TORCH_PEER, CACHE_KINDS):  # transformed modules and
            return None  # cache kinds with a bucket view (`cache_reason`) compile like any other code
        return f"{self.name} runs torch modules as they are; it quantizes no graph"

    def prepare(self, model: GPT, dtype: torch.dtype = torch.float32) -> Decoder:
        """A copy of `model` on this device in `dtype` behind a `CompiledDecoder` (compiled on first use)."""
        from models.compiled import CompiledDecoder

        reason = self.supports(dtype, DECODE)
        if reason:
            raise CannotPrepareError(reason)
        return CompiledDecoder(copy.deepcopy(model).to(device=self.input_device, dtype=dtype).eval(),
                               **self.compile_options(), compile_prefill=self.compile_prefill)

    def compile_options(self) -> dict:
        """What torch.compile is given (recorded in `settings`). On the CPU: freezing (weights folded into
        the graph and prepacked) and max-autotune (inductor's own GEMM templates where they beat the
        library call; GPT-2 124M, batch 1: about 3x eager's tokens/s here, against 1.15x with freezing
        alone, at about twice the compile time). On CUDA: CUDA graphs (what mode "reduce-overhead"
        turns on: a decode step replays as one graph, the cache written in place at a static address)
        without freezing (it would fold that cache into constants) or max-autotune (Triton's GEMM tuning
        takes minutes per graph); not measured on a GPU yet."""
        if self.device_type == "cuda":
            return {"backend": "inductor", "options": {"triton.cudagraphs": True}}
        return {"backend": "inductor", "options": {"freezing": True, "max_autotune": True}}

    def prepare_peer(self, hf_model: nn.Module, use_cache: bool = True) -> tuple[nn.Module, dict]:
        """transformers' model on this device with transformers' own fast path, as its documentation gives
        it: a static cache and the decode step compiled by generate itself (`CompileConfig`), fullgraph,
        static shapes, with this engine's inductor options but freezing (`PEER_UNSUPPORTED_OPTIONS`: freezing
        folds transformers' static cache, a module buffer, into constants and its kernels index out of
        bounds; passed as an option only, inductor never reads it). Without a cache transformers has no
        compiled path: CannotPrepareError."""
        from transformers import CompileConfig

        if not use_cache:
            raise CannotPrepareError("transformers compiles generate only over its static cache; its uncached "
                                     "generate would run eager against a compiled archbench")

        options = self.compile_options()
        peer_options = {k: v for k, v in options["options"].items() if k not in PEER_UNSUPPORTED_OPTIONS}
        config = CompileConfig(fullgraph=True, dynamic=False, backend=options["backend"], mode=None,
                               options=peer_options)
        config._compile_all_devices = True  # transformers compiles on CUDA by default; this engine is the CPU too
        return hf_model.to(self.input_device).eval(), {"cache_implementation": "static", "compile_config": config}

    def prepare_module(self, module: nn.Module, example: Tensor) -> PreparedModule:
        """`module` compiled by inductor for `example`'s shape (compiled here, on the first call)."""
        compiled = torch.compile(copy.deepcopy(module).to(self.input_device).eval(), dynamic=False)
        x = example.to(self.input_device)
        try:
            with torch.inference_mode():
                compiled(x)
        except Exception as exc:  # inductor's own failure, e.g. a compiler it cannot run
            raise CannotPrepareError(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
        return PreparedModule(lambda: compiled(x))

    def settings(self) -> dict:
        from models.compiled import MIN_BUCKET, RECOMPILE_LIMIT

        options = self.compile_options()
        return {"engine": "torch.compile", "backend": options["backend"],
                "options": ", ".join(f"{k}={v}" for k, v in options["options"].items()),
                "modules": "standalone modules (norms) with default options, static shapes",
                "decode": f"static cache, fixed shapes per power-of-two bucket (from {MIN_BUCKET} positions), "
                          "fullgraph; uncached forwards dynamic",
                "prefill": "compiled, the prompt's length dynamic" if self.compile_prefill else
                           "eager torch over the static cache (as transformers' compiled generate prefills)",
                "recompile_limit": RECOMPILE_LIMIT, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "transformers_peer": "static cache, generate's CompileConfig, the same options but "
                                     f"{', '.join(PEER_UNSUPPORTED_OPTIONS)}"}


def cache_reason(backend: Backend, cache: object) -> str | None:
    """None when `backend`'s Decoder runs over `cache` (a cache of a `models.kv_cache` kind), else why not:
    the backend does not take cache kinds at all, or it compiles per shape and the kind offers no bucket view
    (`models.kv_base.BucketedCache`: fixed shapes per bucket, the position in a tensor) to compile."""
    from models.kv_base import BucketedCache

    reason = backend.supports(torch.float32, CACHE_KINDS)
    if reason:
        return reason
    if backend.compiles_per_shape and not isinstance(cache, BucketedCache):
        return (f"{backend.name} compiles a decode step per bucket of positions; the {type(cache).__name__} has no "
                "bucket view (models.kv_base.BucketedCache) to compile it over")
    return None


BACKENDS: Registry[Backend] = Registry("backend", {b.name: b for b in (
    TorchBackend("torch-cpu", "cpu"),
    TorchBackend("torch-cuda", "cuda"),
    TorchCompileBackend("torch-compile", "cpu"),
    TorchCompileBackend("torch-compile-cuda", "cuda"),
    OnnxRuntimeBackend("onnxruntime", "cpu"),
    OnnxRuntimeBackend("onnxruntime-fused", "cpu", graph="fused"),
    OnnxRuntimeBackend("onnxruntime-cuda", "cuda"),
    OnnxRuntimeBackend("onnxruntime-cuda-fused", "cuda", graph="fused"),
)})


def register(backend: Backend) -> Backend:
    """Add a backend at run time (a name already taken raises ValueError); returns it."""
    return BACKENDS.register(backend.name, backend)


def get(name: str) -> Backend:
    """The backend called `name` (exact match); a miss lists the valid names."""
    return BACKENDS.lookup(name)


def reference(device_type: str = "cpu") -> Backend:
    """The backend others on `device_type` are compared with (eager torch there)."""
    for backend in BACKENDS.values():
        if backend.reference and backend.device_type == device_type:
            return backend
    raise ValueError(f"no reference backend is registered for device type {device_type!r}")
