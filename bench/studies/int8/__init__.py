"""The INT8 study: what each INT8 scheme costs in accuracy on each engine, with the norms kept in full
precision or quantized, and what it buys in size and speed; plus a per-layer sensitivity sweep.

Files: `test_int8.py` (the suite), `report.py`, `judge.py`. The schemes, and what each asks of a
backend, are listed here once (`SCHEMES`); its sweeps per preset are below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import nn

from bench.backends import DECODE, GRAPH_QUANTIZATION, MODULE_TRANSFORMS
from bench.study import Study
from models.int8 import quantize_int8, quantize_torchao


@dataclass(frozen=True)
class Scheme:
    """One INT8 scheme: what a backend must support to run it, and where."""

    name: str
    feature: str  # the backend feature it needs (bench.backends)
    device_types: tuple[str, ...] | None  # None: any device type
    description: str
    transform: Callable[..., nn.Module] | None = None  # transform(model, norms=policy) -> a quantized copy, for
    # module transforms; graph quantizations run the backend's own quantizer (`Backend.quantize(..., name, ...)`)
    calibrates: bool = False  # a static quantization: it calibrates on training windows


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("fp32", DECODE, None, "the backend's own fp32 model: the reference of every scheme"),
    Scheme("weight_only", MODULE_TRANSFORMS, None, "ours: int8 weights per output channel, widened on the fly",
           partial(quantize_int8, scheme="weight_only")),
    Scheme("w8a8", MODULE_TRANSFORMS, None, "ours: int8 weights and per-token int8 activations, int32 accumulation",
           partial(quantize_int8, scheme="w8a8")),
    Scheme("llm_int8", MODULE_TRANSFORMS, None, "ours: LLM.int8()-style, input columns with |x| >= 6 in float",
           partial(quantize_int8, scheme="llm_int8")),
    Scheme("torchao_int8_weight_only", MODULE_TRANSFORMS, None,
           "torchao's Int8WeightOnlyConfig (int8 weights per output channel)",
           partial(quantize_torchao, config="torchao_int8_weight_only")),
    Scheme("torchao_int8_dynamic", MODULE_TRANSFORMS, None,
           "torchao's Int8DynamicActivationInt8WeightConfig (int8 weights per channel, activations per token)",
           partial(quantize_torchao, config="torchao_int8_dynamic")),
    Scheme("ort_dynamic", GRAPH_QUANTIZATION, None, "onnxruntime's dynamic quantization of the exported graph"),
    Scheme("ort_static", GRAPH_QUANTIZATION, None, "onnxruntime's static QDQ quantization, calibrated",
           calibrates=True),
)}


@dataclass(frozen=True)
class Int8Sweep:
    """INT8 schemes x norm policies x backends on the trained reference model, plus a per-layer sweep."""

    schemes: tuple[str, ...] = ("weight_only", "w8a8", "llm_int8", "torchao_int8_weight_only", "torchao_int8_dynamic",
                                "ort_dynamic", "ort_static")
    norms: tuple[str, ...] = ("keep", "quantize")
    compiled_schemes: tuple[str, ...] = ("torchao_int8_dynamic",)  # on engines that compile per shape
    # (torch-compile: each case compiles its own graphs), norms kept: the norm policy is judged on eager torch
    windows: int = 32  # validation windows for bits per byte, KL and top-1
    seq_len: int = 128
    decode_tokens: int = 64  # cached greedy steps timed for tokens/s
    rounds: int = 5  # timed decode rounds, each paired with the engine's fp32 model timed just before it
    sensitivity_scheme: str | None = "w8a8"  # the per-layer sweep (eager torch on the CPU); None: skip it
    sensitivity_windows: int = 16
    calibration_windows: int = 16  # training windows static quantization calibrates on
    reference: str = "gpt2-tiny-hd64"  # the trained reference model (models.reference)


_TRANSFORMS = tuple(s.name for s in SCHEMES.values() if s.feature == MODULE_TRANSFORMS)

SWEEPS = {
    # quick: eager torch and onnxruntime (a compiled engine compiles each case's graphs: standard runs them)
    "quick": (Int8Sweep(compiled_schemes=()),),
    "standard": (Int8Sweep(windows=96, decode_tokens=128, sensitivity_windows=32, compiled_schemes=_TRANSFORMS),
                 Int8Sweep(windows=96, decode_tokens=128, sensitivity_scheme=None, reference="gpt2-mini-hd64")),
    "full": (Int8Sweep(windows=64, decode_tokens=128),),
}

STUDY = Study(
    name="int8",
    title="INT8: accuracy, size and speed, with norms kept or quantized",
    suite=Path(__file__).with_name("test_int8.py"),
    sweeps=SWEEPS,
    records=("int8",),
    report="bench.studies.int8.report",
    judge="bench.studies.int8.judge",
    fields="bench.studies.int8.records",
    untimed=frozenset({("int8", "sensitivity")}),
)
