"""A toy backend, a toy KV-cache kind and a toy study, each registered at run time by
`tests/test_extending.py` without any other file of archbench changed: what an extension looks like.

- `ToyBackend`: eager torch behind a Decoder of its own (family "toy"); it decodes and takes archbench's
  cache kinds, nothing else.
- `toy-int8`: keys and values as int8 codes with one fp16 absmax scale per vector (family "absmax").
- the `toy` study: softmax time against width (`tests/toy_suite.py`), its section, a claim and a gate;
  each case reads a "cached computation" that `bench.prepare` makes before the suite starts.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch
from torch import Tensor

from bench import backends
from bench.prepare import Prerequisite
from bench.study import Study
from models import GPT, ArchConfig
from models.attention import causal_attention
from models.kv_base import BufferedKVCache
from models.kv_cache import CacheSpec
from models.paths import cache_dir
from reports.gates import Gate, GateContext
from reports.load import TIME
from reports.page import Section, Table, fmt, study_rows
from reports.verdicts import FAILS, HOLDS, Claim, Verdict, unmeasured

# ---- a backend ----------------------------------------------------------------------------------------


class ToyDecoder:
    """Our GPT behind an engine of its own: called like the model, it keeps its own copy."""

    def __init__(self, model: GPT) -> None:
        self.model = model
        self.config = model.config
        self.calls = 0

    def __call__(self, idx: Tensor, cache: object = None) -> Tensor:
        self.calls += 1
        return self.model(idx, cache)

    def check_positions(self, end: int) -> None:
        self.model.check_positions(end)

    def make_cache(self, batch: int, max_len: int) -> BufferedKVCache:
        return self.model.make_cache(batch, max_len)


@dataclass(frozen=True)
class ToyBackend:
    name: str = "toy-eager"
    device_type: str = "cpu"
    family: str = "toy"
    reference: bool = False
    fuses_ops: bool = False
    compiles_per_shape: bool = False
    own_prefill: bool = True

    @property
    def input_device(self) -> torch.device:
        return torch.device("cpu")

    def unavailable_reason(self) -> str | None:
        return None

    def supports(self, dtype: torch.dtype, feature: str) -> str | None:
        if dtype != torch.float32:
            return "the toy engine runs fp32 only"
        return None if feature in (backends.DECODE, backends.CACHE_KINDS) else f"the toy engine has no {feature}"

    def prepare(self, model: GPT, dtype: torch.dtype = torch.float32) -> ToyDecoder:
        return ToyDecoder(copy.deepcopy(model).eval())

    def settings(self) -> dict:
        return {"engine": "toy"}


# ---- a cache kind -------------------------------------------------------------------------------------


class AbsmaxInt8Cache(BufferedKVCache):
    """Keys and values as int8 codes with one fp16 absmax scale per vector; attention over them dequantized."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int,
                 device: str | torch.device | None = None) -> None:
        super().__init__(batch, max_len, 2 * n_layer * batch * n_kv_head * head_dim)
        shape = (n_layer, batch, n_kv_head, max_len)
        for name in ("k", "v"):
            self.register_buffer(f"{name}_codes", torch.zeros(*shape, head_dim, dtype=torch.int8, device=device),
                                 persistent=False)
            self.register_buffer(f"{name}_scale", torch.zeros(*shape, dtype=torch.float16, device=device),
                                 persistent=False)

    @property
    def bytes_per_token(self) -> int:
        n_layer, batch, heads, _, hd = self.k_codes.shape
        return 2 * n_layer * batch * heads * (hd + 2)

    def _store(self, layer: int, name: str, x: Tensor, start: int, end: int) -> None:
        scale = x.abs().amax(-1).clamp_min(1e-8) / 127  # (B, Hkv, T)
        getattr(self, f"{name}_codes")[layer, :, :, start:end] = torch.round(x / scale[..., None]).to(torch.int8)
        getattr(self, f"{name}_scale")[layer, :, :, start:end] = scale.half()

    def _read(self, layer: int, name: str, end: int) -> Tensor:
        codes = getattr(self, f"{name}_codes")[layer, :, :, :end].float()  # (B, Hkv, end, hd)
        return codes * getattr(self, f"{name}_scale")[layer, :, :, :end].float()[..., None]

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        start, end = self._span(k)
        self._store(layer, "k", k, start, end)
        self._store(layer, "v", v, start, end)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        start, end = self.position, self.position + k.shape[-2]
        self.append(layer, k, v)
        keys, values = self._read(layer, "k", end).to(q.dtype), self._read(layer, "v", end).to(q.dtype)
        return causal_attention(q, keys, values, q_start=start, impl=impl)  # (B, H, T, hd)


def _make_absmax(cfg: ArchConfig, batch: int, max_len: int, device: str | torch.device | None,
                 **options: object) -> BufferedKVCache:
    return AbsmaxInt8Cache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, device=device)


TOY_KIND = CacheSpec("toy-int8", "absmax", 8, _make_absmax, "int8 codes, one fp16 absmax scale per vector")

# ---- a study ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToySweep:
    widths: tuple[int, ...]
    rows: int = 256


def toy_entry(width: int) -> Path:
    """Where the toy study's cached computation for `width` lives."""
    return cache_dir() / "toy" / f"softmax-{width}.txt"


def make_toy_entry(width: int) -> None:
    """The toy study's cached computation: a file naming the process that made it."""
    toy_entry(width).parent.mkdir(parents=True, exist_ok=True)
    toy_entry(width).write_text(str(os.getpid()))


def _made(width: int) -> bool:
    return toy_entry(width).is_file()


def toy_prerequisite(width: int) -> Prerequisite:
    return Prerequisite(f"toy {width}", f"toy entry {width}", functools.partial(make_toy_entry, width),
                        functools.partial(_made, width))


def section(df: pd.DataFrame) -> Section | None:
    d = study_rows(df, "toy")
    if d.empty:
        return None
    out = Section("toy", "Toy study: softmax time against width", "Registered at run time by a test.")
    out.tables.append(Table("Softmax over rows", ["machine", "backend", "width", "time"],
                            [[r.machine, r.backend, fmt(int(r.p_width)), f"{1e6 * getattr(r, TIME):.1f} µs"]
                             for r in d.itertuples()]))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    d = study_rows(df, "toy")
    return [f"Toy study: {len(d)} softmax widths measured."] if not d.empty else []


def grows(df: pd.DataFrame) -> Verdict:
    d = study_rows(df, "toy")
    if len(d) < 2:
        return unmeasured("toy records")
    d = d.sort_values("p_width")
    first, last = d.iloc[0], d.iloc[-1]
    return Verdict(HOLDS if last[TIME] > first[TIME] else FAILS,
                   f"{int(last['p_width'])} wide: {last[TIME] / first[TIME]:.1f}x the time of {int(first['p_width'])}")


def gates(ctx: GateContext) -> list[Gate]:
    base, cur = study_rows(ctx.fullest_base, "toy"), study_rows(ctx.cur_df, "toy")
    if base.empty:
        return []
    return [Gate("toy widths", "softmax widths measured", str(len(cur)), f"== {len(base)}", len(cur) == len(base))]


TOY_STUDY = Study(
    name="toy",
    title="Toy study: softmax time against width",
    suite=Path(__file__).with_name("toy_suite.py"),
    sweeps={"smoke": ToySweep(widths=(64, 1024))},
    records=("toy",),
    report=SimpleNamespace(section=section, summary=summary),
    judge=SimpleNamespace(CLAIMS=(Claim("toy-grows", "Softmax takes longer on wider rows.", "toy", grows),),
                          gates=gates),
)


# ---- cached computations for bench.prepare ----------------------------------------------------------------


def write_pid(path: str, after: str | None = None) -> None:
    """Write this process's id to `path`; with `after`, first check that file was made already."""
    if after is not None and not Path(after).is_file():
        raise RuntimeError(f"{after} was not made first")
    Path(path).write_text(str(os.getpid()))


def raise_error(message: str) -> None:
    raise RuntimeError(message)


def die() -> None:
    """End the process at once, as a crash of a native library would."""
    os._exit(3)
