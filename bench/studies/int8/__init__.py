"""The INT8 study: what each INT8 scheme costs in accuracy on each engine, with the norms kept in full
precision or quantized, and what it buys in size and speed; plus a per-layer sensitivity sweep.

Files: `test_int8.py` (the suite), `report.py`, `judge.py`. The schemes, and what each asks of a
backend, are listed here once (`SCHEMES`); its sweeps per preset are below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.backends import DECODE, GRAPH_QUANTIZATION, MODULE_TRANSFORMS
from bench.study import Study


@dataclass(frozen=True)
class Scheme:
    """One INT8 scheme: what a backend must support to run it, and where."""

    name: str
    feature: str  # the backend feature it needs (bench.backends)
    device_types: tuple[str, ...] | None  # None: any device type
    description: str


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("fp32", DECODE, None, "the backend's own fp32 model: the reference of every scheme"),
    Scheme("weight_only", MODULE_TRANSFORMS, None, "ours: int8 weights per output channel, widened on the fly"),
    Scheme("w8a8", MODULE_TRANSFORMS, None, "ours: int8 weights and per-token int8 activations, int32 accumulation"),
    Scheme("llm_int8", MODULE_TRANSFORMS, None, "ours: LLM.int8()-style, input columns with |x| >= 6 in float"),
    Scheme("torch_dynamic", MODULE_TRANSFORMS, ("cpu",), "torch.ao's quantize_dynamic (per-tensor int8 Linear)"),
    Scheme("ort_dynamic", GRAPH_QUANTIZATION, None, "onnxruntime's dynamic quantization of the exported graph"),
    Scheme("ort_static", GRAPH_QUANTIZATION, None, "onnxruntime's static QDQ quantization, calibrated"),
)}


@dataclass(frozen=True)
class Int8Sweep:
    """INT8 schemes x norm policies x backends on the trained reference model, plus a per-layer sweep."""

    schemes: tuple[str, ...] = ("weight_only", "w8a8", "llm_int8", "torch_dynamic", "ort_dynamic", "ort_static")
    norms: tuple[str, ...] = ("keep", "quantize")
    windows: int = 32  # validation windows for bits per byte, KL and top-1
    seq_len: int = 128
    decode_tokens: int = 64  # cached greedy steps timed for tokens/s
    rounds: int = 3
    sensitivity_scheme: str | None = "w8a8"  # the per-layer sweep (eager torch on the CPU); None: skip it
    sensitivity_windows: int = 16
    calibration_windows: int = 16  # training windows static quantization calibrates on
    reference: str = "gpt2-tiny-hd64"  # the trained reference model (models.reference)


SWEEPS = {
    "quick": (Int8Sweep(),),
    "standard": (Int8Sweep(windows=96, decode_tokens=128, sensitivity_windows=32),
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
    untimed=frozenset({("int8", "sensitivity")}),
    references=lambda sweeps: {s.reference for s in sweeps},
)
