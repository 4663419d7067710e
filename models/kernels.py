"""archbench's own CPU kernels for batch-1 decode (`kernels.c`), built with the system C compiler at first use.

- `gemv`: the single-row product. At batch 1 a decode step streams every weight once through
  matrix-vector products. On small CPUs the BLAS libraries torch calls (MKL, oneDNN) stream the
  per-layer matrices of GPT-2 124M well below the machine's read bandwidth; a plain OpenMP loop over
  four rows at a time, in the compiler's generic vectors for this CPU with a light software prefetch of
  the next rows, comes much closer. It is one of the weight layouts the backend tunes
  (`bench.backends.TorchBackend.fastest_layout`): used only where it measures fastest.
- `attend_step`: the attention of a cached single-token step (store the new keys and values, attend
  over the cache) in one call, instead of the cache writes, slices and scaled_dot_product_attention
  torch runs per layer. The raw KV cache uses it for the attention impl `kernel`.

The shared library lands in archbench's cache directory, keyed on the source, the flags, the compiler
and the CPU (`-march=native` code must not run on another CPU). No compiler, or one without OpenMP,
makes the kernels unavailable with the compiler's own message as the reason.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("kernels.c")
BASE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC")
TUNING_FLAGS = ("-march=native",)  # dropped, with a second try, where the compiler rejects them


def compiler() -> str:
    """The C compiler archbench builds with: $CC, else `cc`."""
    return os.environ.get("CC") or "cc"


def _cpu_identity() -> str:
    """What -march=native code depends on: the CPU's model and feature flags where Linux lists them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _build(cc: str, target: Path) -> str | None:
    """Compile SOURCE into `target`; None on success, else why not (the compiler's last lines)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for flags in (BASE_FLAGS + TUNING_FLAGS, BASE_FLAGS):
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            proc = subprocess.run([cc, *flags, str(SOURCE), "-o", str(built)], capture_output=True, text=True,
                                  check=False)
            if proc.returncode == 0:
                os.replace(built, target)  # atomic: a concurrent process sees no half-written library
                return None
            errors = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return f"{cc} could not build {SOURCE.name} with OpenMP: " + " | ".join(errors)


@dataclass(frozen=True)
class _Entries:
    """The library's entry points, typed for ctypes."""

    gemv: ctypes._CFuncPtr
    attend_step: ctypes._CFuncPtr


@functools.cache
def _load() -> tuple[_Entries | None, str | None]:
    """The kernels' entry points and None, or None and the reason they are unavailable (built once per process)."""
    cc = compiler()
    if shutil.which(cc) is None:
        return None, f"no C compiler: {cc!r} is not on PATH (set CC to one with OpenMP)"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(BASE_FLAGS + TUNING_FLAGS), version,
                                    _cpu_identity(), torch.__version__]).encode()).hexdigest()[:16]
    from .reference import cache_dir

    library = cache_dir() / "kernels" / f"kernels-{key}.so"
    if not library.exists():
        try:
            reason = _build(cc, library)
        except OSError as exc:  # an unwritable cache directory, a compiler that cannot be run
            reason = f"{SOURCE.name} could not be built into {library.parent}: {exc}"
        if reason:
            return None, reason
    try:
        lib = ctypes.CDLL(str(library))
        gemv_fn, attend_fn = lib.archbench_gemv, lib.archbench_attend_step
    except (OSError, AttributeError) as exc:
        return None, f"{library.name} does not load: {exc}"
    gemv_fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long, ctypes.c_long, ctypes.c_int]
    gemv_fn.restype = None
    attend_fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_long] * 10 + [ctypes.c_float, ctypes.c_int]
    attend_fn.restype = None
    return _Entries(gemv_fn, attend_fn), None


def unavailable_reason() -> str | None:
    """None where the kernels are built and loaded here, else why not."""
    return _load()[1]


def _entries() -> _Entries:
    entries, reason = _load()
    if entries is None:
        raise RuntimeError(f"archbench's CPU kernels are unavailable: {reason}")
    return entries


def gemv_kernel() -> ctypes._CFuncPtr:
    """The raw entry point `archbench_gemv(W, x, b, y, out, in, threads)` (pointers to float32 data);
    raises RuntimeError with the reason where it is unavailable. `gemv` is the checked way to call it."""
    return _entries().gemv


def gemv(weight: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = weight @ x + bias for one row: weight (out, in), x (in,), bias (out,) or None -> (out,).

    CPU float32 contiguous tensors only, no autograd; runs on torch's intra-op thread count.
    """
    fn = gemv_kernel()
    out_features, in_features = weight.shape
    for name, t, n in (("weight", weight, out_features * in_features), ("x", x, in_features),
                       ("bias", bias, out_features)):
        if t is not None and (t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous()
                              or t.numel() != n):
            raise ValueError(f"gemv needs {name} as a contiguous CPU float32 tensor of {n} elements, got "
                             f"{tuple(t.shape)} {t.dtype} on {t.device}")
    y = torch.empty(out_features, dtype=torch.float32)  # (out,)
    fn(weight.data_ptr(), x.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(),
       out_features, in_features, torch.get_num_threads())
    return y


MAX_HEAD_DIM = 256  # the attention kernel's limit (kernels.c)


def attend_step_supported(q: Tensor, k: Tensor, v: Tensor, cache: Tensor) -> bool:
    """Whether `attend_step` can take this step: one new token; CPU float32 throughout; each head's
    vector contiguous and the heads packed one after another (a single token's views of the fused
    q/k/v projection are); a contiguous cache buffer; no autograd; the kernels built here."""
    hd = q.shape[-1]
    return (q.shape[-2] == 1 and q.dtype == torch.float32 and q.is_cpu and cache.is_cpu
            and k.dtype == v.dtype == cache.dtype == q.dtype
            and hd <= MAX_HEAD_DIM and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
            and q.stride(1) == k.stride(1) == v.stride(1) == hd and cache.is_contiguous()
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
            and _load()[0] is not None)


def attend_step(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, position: int) -> Tensor:
    """Store the new keys and values k, v (B, Hkv, 1, hd) as row `position` of k_cache, v_cache
    (B, Hkv, max_len, hd), and return the attention of q (B, H, 1, hd) over rows 0..position,
    (B, H, 1, hd): one cached decode step's attention in one call (grouped-query when H > Hkv).

    Check the tensors with `attend_step_supported` first (the cache does); this runs on torch's
    intra-op thread count and gives the same result on any count.
    """
    batch, heads, _, hd = q.shape
    kv_heads, max_len = k_cache.shape[1], k_cache.shape[2]
    if position >= max_len:
        raise ValueError(f"position {position} is beyond the cache's {max_len} rows")
    out = torch.empty(batch, heads, 1, hd)  # (B, H, 1, hd)
    _entries().attend_step(q.data_ptr(), k.data_ptr(), v.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                           out.data_ptr(), batch, heads, kv_heads, hd, position, q.stride(0), k.stride(0),
                           v.stride(0), kv_heads * max_len * hd, max_len * hd, hd**-0.5, torch.get_num_threads())
    return out
