"""ONNX export of any variant with its KV cache, an on-disk export cache, and an onnxruntime decoder.

The exported graph is one merged decoder: inputs `input_ids` (batch, seq) and, per layer,
`past_key_values.{i}.key|value` (batch, kv_heads, past, head_dim); outputs `logits` (batch, seq,
vocab) and `present.{i}.key|value` (batch, kv_heads, past + seq, head_dim). A prefill feeds an empty
past (past = 0); each decode step feeds the previous presents back. Batch, seq and past are dynamic.

`OrtModel` and `OrtCache` present an onnxruntime session through the same interface as our GPT and
its caches (`model(idx, cache) -> logits`), so `models.generate` and the benchmarks drive either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .attention import causal_attention
from .config import ArchConfig
from .gpt import GPT
from .kv_base import CacheFullError
from .paths import cache_dir, cache_entry_problem, private_dir, write_checksum

if TYPE_CHECKING:  # onnxruntime is imported where a session is made
    import onnxruntime as ort

EXPORT_VERSION = 1  # bump when the graph's interface or export settings change
OPSET = 18


def input_names(cfg: ArchConfig) -> list[str]:
    """Graph input names: input_ids, then past keys and values per layer."""
    return ["input_ids"] + [f"past_key_values.{i}.{kv}" for i in range(cfg.n_layer) for kv in ("key", "value")]


def output_names(cfg: ArchConfig) -> list[str]:
    """Graph output names: logits, then present keys and values per layer."""
    return ["logits"] + [f"present.{i}.{kv}" for i in range(cfg.n_layer) for kv in ("key", "value")]


class ConcatCache:
    """A functional cache for export: keys and values are concatenated to the past given as inputs.

    It keeps the `AttendingCache` protocol of `models.kv_base` (`position`, `attend`, `advance`), reading
    the past length from tensor shapes so that it stays symbolic in the exported graph.
    """

    def __init__(self, past: list[tuple[Tensor, Tensor]]) -> None:
        self.past = past
        self.present: list[tuple[Tensor, Tensor]] = list(past)

    @property
    def position(self) -> int:
        return self.past[0][0].shape[2]

    def check_append(self, batch: int, n_tokens: int) -> None:
        """No capacity to check: the graph grows its presents."""

    def advance(self, n_tokens: int) -> None:
        """Nothing to advance: the next call receives the presents as its past."""

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        past_k, past_v = self.past[layer]
        k_all = torch.cat((past_k, k), dim=2)  # (B, Hkv, P + T, hd)
        v_all = torch.cat((past_v, v), dim=2)  # (B, Hkv, P + T, hd)
        self.present[layer] = (k_all, v_all)
        # the explicit path: no shape-dependent branches, so one graph serves prefill and decode
        return causal_attention(q, k_all, v_all, q_start=past_k.shape[2], impl="reference")  # (B, H, T, hd)


class DecoderForExport(nn.Module):
    """(input_ids, past...) -> (logits, present...): the GPT with its cache as explicit tensors."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, *past_flat: Tensor) -> tuple[Tensor, ...]:
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        cache = ConcatCache(past)
        logits = self.model(input_ids, cache)  # (B, T, vocab)
        return (logits, *[t for kv in cache.present for t in kv])


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of every parameter and persistent buffer (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def export_key(model: GPT) -> str:
    """Cache key of an export: config, weights, exporter versions."""
    import onnx

    payload = {"config": model.config.fingerprint(), "weights": weights_fingerprint(model),
               "torch": torch.__version__, "onnx": onnx.__version__, "export": EXPORT_VERSION, "opset": OPSET,
               "python": platform.python_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def default_export_dir() -> Path:
    """Where exports are cached: the `onnx` folder of archbench's cache directory (`models.paths`)."""
    return cache_dir() / "onnx"


class ExportError(RuntimeError):
    """The exporter or the ONNX checker rejected a model; the message carries theirs."""


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[io.StringIO]:
    """Keep the exporter's warnings, logging and prints out of the user's way (they are returned)."""
    captured = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript",
                                                "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield captured
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def export(model: GPT, directory: str | Path | None = None, *, force: bool = False) -> Path:
    """Export `model` to ONNX (cached on disk by config, weights and versions); returns the .onnx path.

    The export runs on the CPU in fp32 with example sizes of at least 2 in every dynamic dimension;
    `onnx.checker` validates the result. A second call with the same model reuses the file.
    """
    import onnx

    model = model.float().cpu().eval()
    cfg = model.config
    key = export_key(model)
    folder = Path(directory) if directory is not None else default_export_dir()
    target = folder / key / "decoder.onnx"
    if _reusable(target, force):
        return target
    private_dir(target.parent)
    batch, seq, past = 2, 3, 2
    if cfg.pos == "learned":
        past = min(past, cfg.max_seq_len - seq)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    past_tensors = [torch.randn(batch, cfg.kv_heads, past, cfg.head_dim) for _ in range(2 * cfg.n_layer)]
    batch_dim, seq_dim, past_dim = (torch.export.Dim(n) for n in ("batch", "seq", "past"))
    # forward(input_ids, *past_flat): the varargs are one tuple in the spec
    dynamic_shapes = ({0: batch_dim, 1: seq_dim}, tuple({0: batch_dim, 2: past_dim} for _ in past_tensors))
    tmp = target.with_suffix(".tmp.onnx")
    wrapper = DecoderForExport(model).eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(wrapper, (ids, *past_tensors), dynamic_shapes=dynamic_shapes,
                                        input_names=input_names(cfg), output_names=output_names(cfg),
                                        opset_version=OPSET, dynamo=True, external_data=False, optimize=True)
            program.save(str(tmp))
        onnx.checker.check_model(str(tmp))
    except Exception as exc:  # the exporter's own message, without its log noise
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {cfg} failed: {type(exc).__name__}: {exc}".strip()[:4000]) from exc
    os.replace(tmp, target)  # atomic: a crash never leaves a half-written export under the key
    write_checksum(target)
    (target.parent / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    return target


def _reusable(target: Path, force: bool) -> bool:
    """Whether a cached graph can be used as it is; an entry that fails its check is rebuilt, and said so."""
    if force or not target.exists():
        return False
    problem = cache_entry_problem(target)
    if problem:
        print(f"archbench: the cached graph cannot be used ({problem}); building it again", file=sys.stderr,
              flush=True)
    return problem is None


GRAPH_LEVELS = ("plain", "fused")  # the export as it is | onnxruntime's transformer optimizer applied offline
FUSED_OP_TYPES = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "RotaryEmbedding", "LayerNormalization",
                  "SkipLayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
                  "EmbedLayerNormalization", "Gelu", "FastGelu", "BiasGelu")


def fuse(src: str | Path, config: ArchConfig, *, force: bool = False) -> Path:
    """onnxruntime's transformer optimizer on an export (model type gpt2: LayerNormalization and
    SkipLayerNormalization, their RMSNorm forms SimplifiedLayerNormalization and SkipSimplified..., GELU as
    FastGelu/BiasGelu, attention where its pattern matches), saved beside it as `decoder.fused.onnx` and
    reused. Raises ExportError with the optimizer's message."""
    src = Path(src)
    target = src.with_name("decoder.fused.onnx")
    if _reusable(target, force):
        return target
    tmp = target.with_suffix(".tmp.onnx")
    try:
        from onnxruntime.transformers import optimizer

        with _quiet_exporter():
            fused = optimizer.optimize_model(str(src), model_type="gpt2", num_heads=config.n_head,
                                             hidden_size=config.d_model, opt_level=0)
            fused.save_model_to_file(str(tmp))
    except Exception as exc:  # the optimizer's own failure
        tmp.unlink(missing_ok=True)
        raise ExportError(f"onnxruntime's transformer optimizer failed on {src.name}: {type(exc).__name__}: "
                          f"{exc}"[:4000]) from exc
    os.replace(tmp, target)
    write_checksum(target)
    return target


def op_counts(path: str | Path) -> dict[str, int]:
    """How many nodes of each op type the graph at `path` holds."""
    import collections

    import onnx

    return dict(collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node))


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """onnxruntime session options: all graph optimisations, `threads` (default: torch's) intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def available_providers() -> list[str]:
    """Execution providers archbench uses, in preference order, of those this onnxruntime has."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


@dataclass
class OrtCache:
    """The past of an onnxruntime decoder as OrtValues on the session's device (fed back as they come).

    It keeps the `KVCache` protocol of `models.kv_base`; the graph grows its presents by concatenation,
    so it holds exactly the tokens stored so far (fp32 keys and values).
    """

    batch: int
    max_len: int
    past: list  # OrtValue per past input, in input order
    bytes_per_token: int  # fp32 keys and values of one more token, every layer and sequence
    position: int = 0
    empty: list | None = None  # the zero-length past of a fresh cache

    def check_append(self, batch: int, n_tokens: int) -> None:
        if batch != self.batch:
            raise ValueError(f"input batch {batch} does not match the cache's batch {self.batch}")
        if self.position + n_tokens > self.max_len:
            raise CacheFullError(f"cache holds {self.position} of {self.max_len} tokens; appending {n_tokens} "
                                 "would exceed max_len")

    def reset(self) -> None:
        self.past = list(self.empty or [])
        self.position = 0

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held now (the presents grow with every step)."""
        total = 0
        for value in self.past:
            n = 1
            for d in value.shape():
                n *= d
            total += n * 4
        return total

    @property
    def bits_per_coordinate(self) -> float:
        """fp32 keys and values: 32 bits, no metadata."""
        return 32.0


class OrtModel:
    """An onnxruntime session of an exported decoder, called like our GPT: `model(idx, cache) -> logits`.

    With CUDAExecutionProvider (onnxruntime-gpu) the past stays on the GPU through IO binding; on the
    CPU the presents are OrtValues fed back without copies either way.
    """

    def __init__(self, path: str | Path, config: ArchConfig, *, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.config = config
        self.path = Path(path)
        self.providers = providers or available_providers()
        self.session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                            providers=self.providers)
        self.device_type = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._inputs, self._outputs = input_names(config), output_names(config)

    def check_positions(self, end: int) -> None:
        """The learned-position limit, as our GPT enforces it."""
        if self.config.pos == "learned" and end > self.config.max_seq_len:
            from .gpt import PositionLimitError

            raise PositionLimitError(f"sequence needs positions up to {end}, but the learned position table holds "
                                     f"{self.config.max_seq_len}")

    def make_cache(self, batch: int, max_len: int) -> OrtCache:
        """A fresh (empty) past for `batch` sequences."""
        import numpy as np
        import onnxruntime as ort

        cfg = self.config
        empty = np.zeros((batch, cfg.kv_heads, 0, cfg.head_dim), dtype=np.float32)
        values = [ort.OrtValue.ortvalue_from_numpy(empty, self.device_type, 0) for _ in range(2 * cfg.n_layer)]
        per_token = 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim * batch * 4
        return OrtCache(batch, max_len, list(values), per_token, 0, values)

    def __call__(self, idx: Tensor, cache: OrtCache | None = None) -> Tensor:
        B, T = idx.shape
        start = 0 if cache is None else cache.position
        self.check_positions(start + T)
        local = cache if cache is not None else self.make_cache(B, T)
        if cache is not None:
            cache.check_append(B, T)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", idx.detach().cpu().numpy())
        for name, value in zip(self._inputs[1:], local.past, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._outputs[1:]:
            binding.bind_output(name, self.device_type)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        if cache is not None:
            cache.past = list(outputs[1:])
            cache.position += T
        return torch.from_numpy(outputs[0].numpy())  # (B, T, vocab)

    def present_shapes(self, cache: OrtCache) -> list[tuple[int, ...]]:
        """Shapes of the keys and values now held (for tests: they grow by exactly the new length)."""
        return [tuple(v.shape()) for v in cache.past]

    def fused_ops(self) -> dict[str, int]:
        """The fused op types in the graph file (`FUSED_OP_TYPES`) and their counts; the session fuses
        more when it loads it (graph optimisation level ORT_ENABLE_ALL)."""
        return {op: n for op, n in op_counts(self.path).items() if op in FUSED_OP_TYPES}

    @property
    def file_bytes(self) -> int:
        """Size of the graph file on disk (weights included: exports hold no external data)."""
        return self.path.stat().st_size
