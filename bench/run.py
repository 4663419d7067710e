"""One validated run configuration, and running it: pytest-benchmark over the chosen studies, then the report.

`validate` is the only place a run's arguments are checked: `python -m bench` calls it on its command
line, and the pytest plugin (`bench.plugin`) on pytest's options when the suites are run with plain
pytest. `run` runs the suites in this process with the validated `RunConfig` handed to the plugin;
`finish` turns what was measured into `results.json` (rebuilt from the records when a run ended early)
and `index.html`. `python -m bench.run CONFIG.json` is the worker `python -m bench` starts, so that a
crash of the measured engines cannot take the report down with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS, RECORDS, REPORT, CONFIG = "results.json", "records.jsonl", "index.html", "run-config.json"
INCOMING, INTERRUPTED_RUN, LOCK = ".incoming", "interrupted-run", ".lock"  # inside the output directory


class ConfigError(ValueError):
    """An argument of a run that cannot be used; the message names it and the allowed values."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one run is asked to do, validated (`validate`)."""

    preset: str = "quick"
    studies: tuple[str, ...] = ()  # study names; () = every registered study
    backends: tuple[str, ...] = ()  # backend names; () = every registered backend
    weights: str | None = None  # a local transformers checkpoint directory (--weights)
    shard: tuple[int, int] | None = None  # (K, N): shard K of N
    out: str | None = None  # output directory (results.json, records.jsonl, index.html)
    pytest_args: tuple[str, ...] = ()  # extra pytest arguments

    def study_names(self) -> list[str]:
        from bench import studies

        return list(self.studies) or list(studies.STUDIES)

    def backend_names(self) -> list[str]:
        from bench import backends

        return list(self.backends) or list(backends.BACKENDS)

    @property
    def out_dir(self) -> Path:
        if self.out is None:
            raise ConfigError("this run has no output directory (--out)")
        return Path(self.out)

    @property
    def work_dir(self) -> Path:
        """Where a run in progress writes (records, results, report); `finish` moves its outputs into
        `out_dir` once it has results, so the previous run's stay whole until then."""
        return self.out_dir / INCOMING

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data = json.loads(text)
        data["shard"] = tuple(data["shard"]) if data.get("shard") else None
        for key in ("studies", "backends", "pytest_args"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` -> (K, N), 1 <= K <= N; a bad value names the expected form."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected K/N with whole numbers, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


SLURM_ARRAY = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")


def shard_from_slurm(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(K, N) of a Slurm job array task (`sbatch --array=0-3`: task 2 is shard 3/4), None outside one; the
    array's ids may start anywhere and step (`--array=1-7:2`)."""
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    try:
        task, count = int(environ["SLURM_ARRAY_TASK_ID"]), int(environ["SLURM_ARRAY_TASK_COUNT"])
        first, step = int(environ.get("SLURM_ARRAY_TASK_MIN", "0")), int(environ.get("SLURM_ARRAY_TASK_STEP", "1"))
    except (KeyError, ValueError):
        shown = ", ".join(f"{key}={environ.get(key)!r}" for key in SLURM_ARRAY)
        raise ConfigError(f"a Slurm job array without a usable task id and count ({shown}); give --shard K/N") from None
    k = (task - first) // max(step, 1) + 1
    if not 1 <= k <= count:
        raise ConfigError(f"Slurm array task {task} (first {first}, step {step}) is not one of {count} tasks; "
                          "give --shard K/N")
    return k, count


def validate(preset: str = "quick", studies: list[str] | tuple[str, ...] | None = None,
             backends: list[str] | tuple[str, ...] | None = None, weights: str | None = None,
             shard: str | tuple[int, int] | None = None, out: str | Path | None = None,
             pytest_args: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A RunConfig from a run's arguments, each checked before any work starts; ConfigError otherwise."""
    from bench import backends as backend_registry
    from bench import presets
    from bench import studies as study_registry

    studies, backends = _names(studies), _names(backends)
    try:
        presets.get(preset)
        for name in studies or ():
            study_registry.get(name)
        for name in backends or ():
            backend_registry.get(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if backends:
        reasons = {name: backend_registry.get(name).unavailable_reason() for name in backends}
        if all(reasons.values()):  # nothing could run: say why now rather than after a run of skips
            raise ConfigError("no requested backend is available here: "
                              + "; ".join(f"{name}: {why}" for name, why in reasons.items()))
    if weights is not None:
        folder = Path(weights)
        if not folder.is_dir():
            raise ConfigError(f"--weights {weights}: no such directory (give a local transformers checkpoint "
                              "directory: config.json, weights and tokenizer files)")
        if not (folder / "config.json").is_file():
            raise ConfigError(f"--weights {weights}: no config.json in it; it does not look like a transformers "
                              "checkpoint directory")
        from models.hf import CheckpointError, inspect_checkpoint

        try:
            inspect_checkpoint(folder)
        except CheckpointError as exc:
            raise ConfigError(f"--weights {weights}: {exc}") from None
        weights = str(folder.resolve())
    if isinstance(shard, str):
        shard = parse_shard(shard)
    elif shard is None:
        shard = shard_from_slurm(os.environ)
    if out is not None:
        out_path = Path(out)
        if out_path.exists() and not out_path.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a directory")
        existing = next(p for p in (out_path, *out_path.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"--out {out}: cannot write there ({existing} is a file, not a directory)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: cannot write there ({existing} is not writable by this user)")
        out = str(out_path.resolve())
    return RunConfig(preset=preset, studies=tuple(dict.fromkeys(studies or ())),
                     backends=tuple(dict.fromkeys(backends or ())), weights=weights, shard=shard, out=out,
                     pytest_args=tuple(pytest_args))


def _names(values: list[str] | tuple[str, ...] | None) -> list[str]:
    """Names given repeated (`--only kv --only int8`) or comma-separated (`--only kv,int8`), in order."""
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


class ProvidedConfig:
    """A pytest plugin object that hands the validated RunConfig to `bench.plugin` (no options re-parsed)."""

    def __init__(self, config: RunConfig) -> None:
        self.run_config = config


def run(config: RunConfig) -> int:
    """Run the chosen studies' suites under pytest-benchmark in this process (the plugin first makes what
    their cases read from the cache: `bench.prepare`), writing records as they are measured and
    pytest-benchmark's JSON at the end; pytest's exit code."""
    import pytest

    from bench import studies

    out = config.work_dir
    suites = [str(studies.get(name).suite) for name in config.study_names()
              if studies.get(name).sweep(config.preset) is not None]
    if not suites:
        print(f"archbench: no chosen study runs in preset {config.preset!r}", file=sys.stderr)
        return 5
    args = [*suites, "-p", "bench.plugin", "-p", "no:cacheprovider", "-q", "-rs", "--rootdir", str(ROOT),
            f"--benchmark-json={out / RESULTS}", "--benchmark-columns=mean,stddev,rounds",
            "--benchmark-sort=fullname", *config.pytest_args]
    try:
        return int(pytest.main(args, plugins=[ProvidedConfig(config)]))
    except KeyboardInterrupt:
        return 130


def rebuild_from_records(records: Path, results: Path) -> int:
    """Write `results` in pytest-benchmark's JSON shape from the JSON-lines records; returns the count."""
    from reports.load import results_from_records

    payload = results_from_records(records)
    results.write_text(json.dumps(payload, indent=1))
    return len(payload["benchmarks"])


INTERRUPTED = 2  # pytest's exit code when a run was interrupted (Ctrl-C)


def _ended_early(code: int) -> bool:
    """Whether a run's exit status means it stopped before its end: interrupted, or killed by a signal."""
    return code == INTERRUPTED or code >= 128


def _mark_partial(results: Path) -> int:
    """Flag a complete-looking results file of an interrupted run as partial; returns its benchmark count."""
    data = json.loads(results.read_text())
    data["archbench_partial"] = True
    results.write_text(json.dumps(data, indent=1))
    return len(data.get("benchmarks") or [])


def _complete(results: Path) -> bool:
    """Whether pytest-benchmark finished writing `results` (a crash or an interrupt can leave it empty)."""
    try:
        return bool(json.loads(results.read_text()).get("benchmarks") is not None)
    except (OSError, ValueError, AttributeError):
        return False


def finish(config: RunConfig, code: int) -> int:
    """results.json (rebuilt from the records when the run ended early) and index.html from a run that
    exited with `code`; the exit status of the whole run."""
    from reports.build import build_report
    from reports.load import ResultsFileError

    out = config.work_dir
    results, records, report = out / RESULTS, out / RECORDS, out / REPORT
    if not _complete(results):  # interrupted, or nothing ran: pytest-benchmark never wrote the file
        n = rebuild_from_records(records, results) if records.exists() else 0
        if n == 0:
            why = (": every benchmark was skipped or deselected (the skip reasons are listed above)"
                   if code in (0, 5) else f" (exit {code})")
            print(f"archbench: nothing was measured{why}", file=sys.stderr)
            return code or 1
        print(f"archbench: the run ended early (exit {code}); {n} measured records kept in {results}", flush=True)
    elif _ended_early(code):  # pytest-benchmark wrote what was measured before the interrupt
        n = _mark_partial(results)
        print(f"archbench: the run ended early (exit {code}); {n} measured records kept in {results}", flush=True)
    try:
        build_report([results], report)
    except ResultsFileError as exc:  # nothing measured (every benchmark skipped): say so, no traceback
        print(f"archbench: no report written: {exc}", file=sys.stderr)
        return code or 1
    published = publish(config)
    print(f"archbench: wrote {published / RESULTS} and {published / REPORT}", flush=True)
    return code


def publish(config: RunConfig) -> Path:
    """Move a finished run's outputs from its work directory into the output directory, each file by an
    atomic rename (the report last, so a reader never sees a report of other results); returns it."""
    import shutil

    out, work = config.out_dir, config.work_dir
    for name in (RECORDS, CONFIG, RESULTS, REPORT):
        if (work / name).exists():
            os.replace(work / name, out / name)
    shutil.rmtree(work, ignore_errors=True)
    return out


def prepare_out(config: RunConfig) -> Path:
    """Create the output directory and the run's work directory in it, and write the run's configuration
    there; returns the config file. The previous run's outputs stay in place until this run publishes
    its own; a work directory left by a run that was killed is kept as `interrupted-run` (its records
    rebuild a partial report: `python -m reports build DIR/interrupted-run/records.jsonl`)."""
    import shutil

    out, work = config.out_dir, config.work_dir
    out.mkdir(parents=True, exist_ok=True)
    if work.exists():
        if (work / RECORDS).exists():
            shutil.rmtree(out / INTERRUPTED_RUN, ignore_errors=True)
            os.replace(work, out / INTERRUPTED_RUN)
            print(f"archbench: an earlier run into {out} was killed; its records are kept in "
                  f"{out / INTERRUPTED_RUN} (python -m reports build {out / INTERRUPTED_RUN / RECORDS})",
                  file=sys.stderr)
        else:
            shutil.rmtree(work)
    work.mkdir()
    path = work / CONFIG
    path.write_text(config.to_json())
    return path


class OutputLock:
    """An exclusive lock on an output directory for one run (`fcntl.flock` on `DIR/.lock`, released when
    the process ends, however it ends). A second run gets a ConfigError naming the first one's pid."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK
        self._file = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no lock
            self._file = handle
            return self
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(f"--out {self.path.parent}: another archbench run (pid {holder}) is writing there; "
                              "wait for it to end or give another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def run_and_report(config: RunConfig) -> int:
    """`run` then `finish`, all in this process (for embedding, and for studies registered at run time)."""
    with OutputLock(config.out_dir):
        prepare_out(config)
        return finish(config, run(config))


def main(argv: list[str] | None = None) -> int:
    """The worker: run the RunConfig saved at argv[0] (written by `python -m bench`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.run RUN-CONFIG.json (written by python -m bench)", file=sys.stderr)
        return 2
    return run(RunConfig.from_json(Path(args[0]).read_text()))


if __name__ == "__main__":
    # run as `python -m bench.run`, this file is `__main__`; the plugin knows the classes of `bench.run`
    from bench.run import main as worker_main

    sys.exit(worker_main())
