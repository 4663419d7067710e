"""The benchmark harness: options, backends, parametrisation from presets, records, machine info.

Runs under plain pytest with pytest-benchmark's own flags (`--benchmark-json`, `--benchmark-compare`,
`-k`, `--benchmark-disable` for a single quick correctness pass). `python -m bench` adds the preset,
the output directory and the report.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from bench import backends, presets
from profiles import ceilings, hardware
from profiles.timers import synchronize, warm_up

T = TypeVar("T")

SCHEMA = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("archbench")
    group.addoption("--preset", default=os.environ.get("ARCHBENCH_PRESET", "quick"),
                    help=f"what to measure: {', '.join(presets.PRESETS)} (default quick)")
    group.addoption("--backend", action="append", default=None,
                    help=f"run only these backends (repeatable): {', '.join(backends.BACKENDS)}")
    group.addoption("--records", default=None,
                    help="append every record to this JSON-lines file as it is measured (survives a crash)")
    group.addoption("--shard", default=None, metavar="K/N",
                    help="run only shard K of N (1-based) of the selected benchmarks; the lengths of one sweep "
                         "stay in one shard (their slope is fitted together). Run N processes, e.g. one per GPU "
                         "with CUDA_VISIBLE_DEVICES, or on N machines, then `python -m reports merge`.")
    group.addoption("--weights", default=None,
                    help="a local transformers GPT-2 or Llama checkpoint directory (with its tokenizer): the peer "
                         "comparison uses its weights, and the accuracy studies (KV cache, INT8) run on it too")


def pytest_configure(config: pytest.Config) -> None:
    preset_name = config.getoption("--preset")
    try:
        config.archbench_preset = presets.get(preset_name)
        for name in config.getoption("--backend") or []:
            backends.get(name)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.archbench_ceilings = {}


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` -> (K, N), 1 <= K <= N; a bad value names the expected form."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard {text!r}: expected K/N with whole numbers, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def shard_group(nodeid: str) -> str:
    """The unit sharding keeps together: a test id without its length (`-T512`), so a sweep stays whole."""
    return re.sub(r"-T\d+", "", nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    text = config.getoption("--shard")
    if not text:
        return
    k, n = parse_shard(text)
    keep, drop = [], []
    for item in items:
        digest = int(hashlib.sha1(shard_group(item.nodeid).encode()).hexdigest(), 16)
        (keep if digest % n == k - 1 else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def selected_backends(config: pytest.Config) -> list[str]:
    return config.getoption("--backend") or list(backends.BACKENDS)


@pytest.fixture(scope="session")
def preset(pytestconfig: pytest.Config) -> presets.Preset:
    return pytestconfig.archbench_preset


def synced(fn: Callable[..., T], device: torch.device) -> Callable[..., T]:
    """`fn` followed by a device synchronisation: what pytest-benchmark's wall clock times must include
    (CUDA kernels run asynchronously; without it a round would time only their launches)."""

    def call(*args: object, **kwargs: object) -> T:
        out = fn(*args, **kwargs)
        synchronize(device)
        return out

    return call


def backend_fixture(name: str) -> backends.TorchBackend:
    """The backend `name`, or a pytest skip naming why it is unavailable here."""
    backend = backends.get(name)
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"{name} unavailable: {reason}")
    return backend


@pytest.fixture(scope="session")
def ceiling(pytestconfig: pytest.Config) -> Callable[[torch.device], ceilings.BandwidthCeiling]:
    """Measured bandwidth ceilings per device type, measured once per session on first use."""
    cache = pytestconfig.archbench_ceilings

    def get(device: torch.device) -> ceilings.BandwidthCeiling:
        if device.type not in cache:
            warm_up(device)  # a GPU at idle clocks would make the first benchmarks slow
            cache[device.type] = ceilings.measure_bandwidth(device)
            _append_machine_info(pytestconfig)  # a crash later still leaves the ceiling on disk
        return cache[device.type]

    return get


@pytest.fixture(scope="session")
def read_probe() -> Iterator[Callable[[torch.device], ceilings.ReadProbe]]:
    """A `profiles.ceilings.ReadProbe` per device type, made on first use and kept for the session (its
    buffer, 256 MiB on the CPU, is allocated once)."""
    probes: dict[str, ceilings.ReadProbe] = {}

    def get(device: torch.device) -> ceilings.ReadProbe:
        if device.type not in probes:
            probes[device.type] = ceilings.ReadProbe(device)
        return probes[device.type]

    yield get
    probes.clear()


@pytest.fixture
def record(benchmark, request: pytest.FixtureRequest) -> Callable[..., None]:
    """Put one archbench record into `benchmark.extra_info`; appended to --records when the test ends."""
    holder: dict = {}

    def _record(study: str, variant: str, backend: str, params: dict, metrics: dict) -> None:
        rec = {"schema": SCHEMA, "study": study, "variant": variant, "backend": backend,
               "params": params, "metrics": metrics}
        benchmark.extra_info.update(rec)
        holder["record"] = rec

    yield _record
    path = request.config.getoption("--records")
    stats = getattr(benchmark, "stats", None)
    if path and holder and stats is not None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"benchmark": stats.as_dict(include_data=True)}, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def machine_info_extra(config: pytest.Config) -> dict:
    """What archbench adds to pytest-benchmark's machine_info: the hardware profile and measured ceilings."""
    profile = hardware.detect()
    return {
        "schema": SCHEMA,
        "preset": config.archbench_preset.name,
        "label": profile.label,
        "profile": profile.to_dict(),
        "ceilings": {device: c.to_dict() for device, c in config.archbench_ceilings.items()},
    }


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info["archbench"] = machine_info_extra(config)


def _append_machine_info(config: pytest.Config) -> None:
    """Append the current machine_info to --records (the last such line wins when a run is rebuilt)."""
    path = config.getoption("--records")
    if not path:
        return
    info = config.hook.pytest_benchmark_generate_machine_info(config=config)
    config.hook.pytest_benchmark_update_machine_info(config=config, machine_info=info)
    with open(path, "a") as fh:
        fh.write(json.dumps({"machine_info": info}, default=str) + "\n")


def pytest_sessionstart(session: pytest.Session) -> None:
    path = session.config.getoption("--records")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("")  # a fresh run: the file holds only this run's records
        _append_machine_info(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.getoption("--records"):
        _append_machine_info(session.config)


@dataclass(frozen=True)
class EvalSet:
    """A model and the held-out windows its accuracy is measured on."""

    model: torch.nn.Module
    windows: torch.Tensor  # (n, seq_len + 1) token ids
    target_bytes: int  # text bytes the targets (tokens 1.. of each window) cover: bits per byte = bits / this
    name: str  # the variant column of records: the reference variant, or "checkpoint:<directory name>"


def accuracy_sources(config: pytest.Config) -> list[str]:
    """`reference` (the trained byte-level model) and, with --weights, `checkpoint` (the user's real model)."""
    return ["reference", "checkpoint"] if config.getoption("--weights") else ["reference"]


@functools.cache
def _eval_set(source: str, reference: str, weights: str | None, seq_len: int, count: int) -> EvalSet:
    from models import corpus
    from models.hf import load_hf, load_tokenizer, tokenized_windows

    if source == "checkpoint":
        windows, nbytes = tokenized_windows(load_tokenizer(weights), corpus.text("val"), seq_len, count)
        return EvalSet(load_hf(weights).eval(), windows, nbytes, f"checkpoint:{Path(weights).name}")
    from models.reference import reference_model

    windows = corpus.eval_windows(corpus.load().tokens("val"), seq_len, count)
    return EvalSet(reference_model(reference, progress=False).model.eval(), windows,
                   windows[:, 1:].numel(), reference)


def eval_set(config: pytest.Config, source: str, reference: str, seq_len: int, count: int) -> EvalSet:
    """The model and windows of an accuracy study for `source` (see `accuracy_sources`), made once per run."""
    return _eval_set(source, reference, config.getoption("--weights"), seq_len, count)
