"""archbench's own single-row product (`gemv.c`), built with the system C compiler at first use.

At batch 1 a decode step streams every weight once through matrix-vector products. On small CPUs the
BLAS libraries torch calls (MKL, oneDNN) stream the per-layer matrices of GPT-2 124M well below the
machine's read bandwidth; a plain OpenMP loop over four rows at a time, in the compiler's generic
vectors for this CPU with a light software prefetch of the next rows, comes much closer. It is one of
the weight layouts the backend tunes (`bench.backends.TorchBackend.fastest_layout`): used only where
it measures fastest.

The shared library lands in archbench's cache directory, keyed on the source, the flags, the compiler
and the CPU (`-march=native` code must not run on another CPU). No compiler, or one without OpenMP,
makes the layout unavailable with the compiler's own message as the reason.
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
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("gemv.c")
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


@functools.cache
def _load() -> tuple[ctypes._CFuncPtr | None, str | None]:
    """The kernel's entry point and None, or None and the reason it is unavailable (built once per process)."""
    cc = compiler()
    if shutil.which(cc) is None:
        return None, f"no C compiler: {cc!r} is not on PATH (set CC to one with OpenMP)"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(BASE_FLAGS + TUNING_FLAGS), version,
                                    _cpu_identity(), torch.__version__]).encode()).hexdigest()[:16]
    from .reference import cache_dir

    library = cache_dir() / "kernels" / f"gemv-{key}.so"
    if not library.exists():
        try:
            reason = _build(cc, library)
        except OSError as exc:  # an unwritable cache directory, a compiler that cannot be run
            reason = f"{SOURCE.name} could not be built into {library.parent}: {exc}"
        if reason:
            return None, reason
    try:
        fn = ctypes.CDLL(str(library)).archbench_gemv
    except OSError as exc:
        return None, f"{library.name} does not load: {exc}"
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long, ctypes.c_long, ctypes.c_int]
    fn.restype = None
    return fn, None


def unavailable_reason() -> str | None:
    """None where the kernel is built and loaded here, else why not."""
    return _load()[1]


def kernel() -> ctypes._CFuncPtr:
    """The raw entry point `archbench_gemv(W, x, b, y, out, in, threads)` (pointers to float32 data);
    raises RuntimeError with the reason where it is unavailable. `gemv` is the checked way to call it."""
    fn, reason = _load()
    if fn is None:
        raise RuntimeError(f"archbench's gemv kernel is unavailable: {reason}")
    return fn


def gemv(weight: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = weight @ x + bias for one row: weight (out, in), x (in,), bias (out,) or None -> (out,).

    CPU float32 contiguous tensors only, no autograd; runs on torch's intra-op thread count.
    """
    fn = kernel()
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
