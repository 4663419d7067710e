"""`bench.prepare`: the cached computations a run makes before its suites, in worker processes, each once,
dependencies first; a failure or a dead worker is reported and never hangs the run or loses the rest."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from bench import prepare
from bench.prepare import Prerequisite

from .toys import die, raise_error, write_pid


def _file(path: Path, after: Path | None = None, key: str | None = None) -> Prerequisite:
    return Prerequisite(key or f"file {path.name}", path.name,
                        functools.partial(write_pid, str(path), str(after) if after else None), path.is_file)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_runs_once_dependencies_first_and_done_ones_not_at_all(tmp_path, workers) -> None:
    a, b, c, done = (tmp_path / n for n in ("a", "b", "c", "done"))
    done.write_text("made by an earlier run")
    first = _file(a)
    after_a = Prerequisite("file b", "b", functools.partial(write_pid, str(b), str(a)), b.is_file, needs=(first.key,))
    already = Prerequisite("file done", "done", functools.partial(raise_error, "made again"), done.is_file)
    failed = prepare.run([after_a, first, first, _file(c), already], workers=workers, progress=False)
    assert failed == {}
    assert done.read_text() == "made by an earlier run"
    makers = {int(p.read_text()) for p in (a, b, c)}
    assert (os.getpid() in makers) == (workers == 1)  # in worker processes unless asked for one


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failure_is_reported_its_dependents_not_run_and_the_rest_made(tmp_path, capsys, workers) -> None:
    broken = Prerequisite("broken", "broken model", functools.partial(raise_error, "no luck"), lambda: False)
    dependent = _file(tmp_path / "dependent", key="dependent")
    dependent = Prerequisite(dependent.key, dependent.label, dependent.compute, dependent.done, needs=("broken",))
    failed = prepare.run([broken, dependent, _file(tmp_path / "other")], workers=workers, progress=False)
    assert failed == {"broken model": "RuntimeError: no luck", "dependent": "needs broken model, which failed"}
    assert (tmp_path / "other").is_file() and not (tmp_path / "dependent").exists()
    err = capsys.readouterr().err
    assert "preparing broken model failed (RuntimeError: no luck); the cases that need it will try again" in err


def test_a_worker_that_dies_ends_the_preparation_without_hanging(tmp_path) -> None:
    crash = Prerequisite("crash", "crashing run", die, lambda: False)
    later = [_file(tmp_path / f"later-{i}") for i in range(3)]
    failed = prepare.run([crash, *later], workers=2, progress=False)
    assert "crashing run" in failed and "BrokenProcessPool" in failed["crashing run"]
    for p in later:  # each was made before the pool broke, or is reported for its case to make
        assert (tmp_path / p.label).is_file() or p.label in failed


@pytest.mark.parametrize("workers", [1, 2])
def test_a_need_never_made_is_reported_not_waited_for(tmp_path, workers) -> None:
    a = Prerequisite("a", "a", functools.partial(write_pid, str(tmp_path / "a")), lambda: False, needs=("b",))
    b = Prerequisite("b", "b", functools.partial(write_pid, str(tmp_path / "b")), lambda: False, needs=("a",))
    failed = prepare.run([a, b], workers=workers, progress=False)  # a cycle: neither can start
    assert set(failed) == {"a", "b"} and any("never made" in why for why in failed.values())
