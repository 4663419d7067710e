"""archbench's pytest plugin: its options (declared here only), the run configuration, records, machine
info, sharding and the session fixtures the suites use.

`python -m bench` loads the plugin (`-p bench.plugin`) for every chosen study's suite, wherever it lives,
and hands it the validated `bench.run.RunConfig`; run with plain pytest (`pytest bench/ --preset quick
--benchmark-json out.json`), `bench/conftest.py` loads it and it builds the same RunConfig from these
options through the same `bench.run.validate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_benchmark
import torch

from bench import backends, prepare, presets, studies
from bench.run import RECORDS, ConfigError, ProvidedConfig, RunConfig, validate
from profiles import ceilings, hardware
from profiles.energy import EnergyCounter, energy_counter
from profiles.timers import warm_up
from reports.load import SCHEMA  # the record schema the loader reads

RUN_CONFIG = pytest.StashKey[RunConfig]()
CEILINGS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("archbench")
    group.addoption("--preset", default=os.environ.get("ARCHBENCH_PRESET", "quick"),
                    help=f"what to measure: {', '.join(presets.PRESETS)} (default quick)")
    group.addoption("--backend", action="append", default=None,
                    help=f"run only these backends (repeatable, or comma-separated): {', '.join(backends.BACKENDS)}")
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
    provided = [p for p in config.pluginmanager.get_plugins() if isinstance(p, ProvidedConfig)]
    if provided:
        run_config = provided[0].run_config
    else:
        try:
            run_config = validate(preset=config.getoption("--preset"), backends=config.getoption("--backend"),
                                  weights=config.getoption("--weights"), shard=config.getoption("--shard"))
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[RUN_CONFIG] = run_config
    config.stash[CEILINGS] = {}
    config.addinivalue_line("markers", f"{prepare.MARK}(*prerequisites): cached computations the case reads "
                            "(bench.prepare makes the missing ones before the first test)")


def run_config(config: pytest.Config) -> RunConfig:
    """The validated configuration of this run."""
    return config.stash[RUN_CONFIG]


def records_path(config: pytest.Config) -> Path | None:
    """Where records are appended as they are measured: the run's output directory, or --records."""
    cfg = run_config(config)
    if cfg.out is not None:
        return cfg.work_dir / RECORDS
    path = config.getoption("--records", default=None)
    return Path(path) if path else None


def shard_group(nodeid: str) -> str:
    """The unit sharding keeps together: a test id without its length (`-T512`), so a sweep stays whole."""
    return re.sub(r"-T\d+", "", nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = run_config(config).shard
    if not shard:
        return
    k, n = shard
    keep, drop = [], []
    for item in items:
        digest = int(hashlib.sha1(shard_group(item.nodeid).encode()).hexdigest(), 16)
        (keep if digest % n == k - 1 else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before the first test: make the cached computations the selected cases need (`bench.prepare`)."""
    if session.config.option.collectonly or not session.items:
        return
    found = [p for item in session.items for mark in item.iter_markers(prepare.MARK) for p in mark.args]
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        prepare.run(found)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    """A forward torch.compile cannot compile is a skip with its message (an engine that cannot take the
    model), never a failure of the study and never an eager run in its place."""
    from models.compiled import CompileError

    try:
        return (yield)
    except CompileError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def ceiling(pytestconfig: pytest.Config) -> Callable[[torch.device], ceilings.BandwidthCeiling]:
    """Measured bandwidth ceilings per device type, measured once per session on first use."""
    cache = pytestconfig.stash[CEILINGS]

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


@pytest.fixture(scope="session")
def energy() -> Callable[[torch.device], EnergyCounter | str]:
    """The energy counter of a device (`profiles.energy`: NVML on NVIDIA GPUs, RAPL on CPUs), or the reason
    there is none here; found once per device type for the session."""
    counters: dict[str, EnergyCounter | str] = {}

    def get(device: torch.device) -> EnergyCounter | str:
        if device.type not in counters:
            counters[device.type] = energy_counter(device)
        return counters[device.type]

    return get


def _fields(value: object) -> dict:
    """A record's params or metrics as a dict: a study's record dataclass by its fields, a mapping as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value)


def _label(target: object, rec: dict) -> None:
    """Give a benchmark (or its stats) the record's pytest-benchmark group and JSON params: variant, backend
    and the record's params, so `--benchmark-group-by=param:backend` and the CSV work."""
    study = studies.owner(rec["study"])
    target.group = study.group(rec) if study else f"{rec['study']}: {rec['variant']}"
    target.params = {"variant": rec["variant"], "backend": rec["backend"], **rec["params"]}


@pytest.fixture
def record(benchmark, request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """`record(study, variant, backend, params, metrics)`: put one archbench record into
    `benchmark.extra_info` (`backend` a Backend, or a label such as "analytic" for counts that run on no
    engine; `params` and `metrics` a study's record dataclasses, `records.py` in its folder, or dicts);
    it is appended to the run's records file when the test ends."""
    holder: dict = {}

    def _record(study: str, variant: str, backend: backends.Backend | str, params: object, metrics: object) -> None:
        if isinstance(backend, str):
            name, family, device_type = backend, backend, None
        else:
            name, family, device_type = backend.name, backend.family, backend.device_type
        rec = {"schema": SCHEMA, "study": study, "variant": variant, "backend": name, "backend_family": family,
               "device_type": device_type, "params": _fields(params), "metrics": _fields(metrics)}
        benchmark.extra_info.update(rec)
        holder["record"] = rec
        _label(benchmark, rec)

    yield _record
    path = records_path(request.config)
    stats = getattr(benchmark, "stats", None)
    if holder and stats is not None:
        _label(stats, holder["record"])  # pytest-benchmark copied group and params when the rounds ran
    if path and holder and stats is not None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"benchmark": stats.as_dict(include_data=True)}, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def machine_info_extra(config: pytest.Config) -> dict:
    """What archbench adds to pytest-benchmark's machine_info: the hardware profile, measured ceilings,
    the preset and studies, and how each selected backend's engine is configured."""
    profile = hardware.detect()
    cfg = run_config(config)
    engines, energy = {}, {}
    for name in cfg.backend_names():
        backend = backends.get(name)
        if backend.unavailable_reason() is None:
            engines[name] = {"family": backend.family, "device_type": backend.device_type, **backend.settings()}
            if backend.device_type not in energy:
                counter = energy_counter(torch.device(backend.device_type))
                energy[backend.device_type] = (counter.source if isinstance(counter, EnergyCounter)
                                               else f"not available here: {counter}")
    return {
        "schema": SCHEMA,
        "preset": cfg.preset,
        "studies": cfg.study_names(),
        "label": profile.label,
        "profile": profile.to_dict(),
        "ceilings": {device: c.to_dict() for device, c in config.stash[CEILINGS].items()},
        "backends": engines,
        "energy": energy,  # device type -> the counter decode rounds read, or why there is none
    }


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info["archbench"] = machine_info_extra(config)


def _append_machine_info(config: pytest.Config) -> None:
    """Append the current machine_info, commit_info, datetime and pytest-benchmark version to the records
    (the last such line wins when a run is rebuilt)."""
    path = records_path(config)
    if not path:
        return
    info = config.hook.pytest_benchmark_generate_machine_info(config=config)
    config.hook.pytest_benchmark_update_machine_info(config=config, machine_info=info)
    commit = config.hook.pytest_benchmark_generate_commit_info(config=config)
    config.hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit)
    provenance = {"machine_info": info, "commit_info": commit,
                  "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  "version": pytest_benchmark.__version__}  # what pytest-benchmark's own file holds
    with open(path, "a") as fh:
        fh.write(json.dumps(provenance, default=str) + "\n")


def pytest_sessionstart(session: pytest.Session) -> None:
    path = records_path(session.config)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")  # a fresh run: the file holds only this run's records
        _append_machine_info(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if records_path(session.config):
        _append_machine_info(session.config)
