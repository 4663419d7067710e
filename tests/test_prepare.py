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
    first = _file(a)  # declared only as what b needs: made too, and before b
    after_a = Prerequisite("file b", "b", functools.partial(write_pid, str(b), str(a)), b.is_file, needs=(first,))
    again = Prerequisite("file b", "b again", functools.partial(raise_error, "made twice"), b.is_file, needs=(first,))
    already = Prerequisite("file done", "done", functools.partial(raise_error, "made again"), done.is_file)
    failed = prepare.run([after_a, _file(c), again, already], workers=workers, progress=False)
    assert failed == {}
    assert done.read_text() == "made by an earlier run"
    makers = {int(p.read_text()) for p in (a, b, c)}
    assert (os.getpid() in makers) == (workers == 1)  # in worker processes unless asked for one


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failure_is_reported_its_dependents_not_run_and_the_rest_made(tmp_path, capsys, workers) -> None:
    broken = Prerequisite("broken", "broken model", functools.partial(raise_error, "no luck"), lambda: False)
    dependent = _file(tmp_path / "dependent", key="dependent")
    dependent = Prerequisite(dependent.key, dependent.label, dependent.compute, dependent.done, needs=(broken,))
    failed = prepare.run([dependent, _file(tmp_path / "other")], workers=workers, progress=False)
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
    def make(name: str, needs: tuple[Prerequisite, ...] = ()) -> Prerequisite:
        return Prerequisite(name, name, functools.partial(write_pid, str(tmp_path / name)), lambda: False, needs)

    # two declarations under the key "a": the one `run` meets first (the listed one) stands for it, so b needs
    # a and a needs b
    b = make("b", needs=(make("a"),))
    failed = prepare.run([b, make("a", needs=(b,))], workers=workers, progress=False)  # neither can start
    assert set(failed) == {"a", "b"} and any("never made" in why for why in failed.values())


def test_summaries_are_printed_for_what_is_there_and_not_for_failures(tmp_path, capsys) -> None:
    done, made = tmp_path / "done", tmp_path / "made"
    done.write_text("made by an earlier run")
    found = Prerequisite("done", "done", functools.partial(raise_error, "made again"), done.is_file,
                         summary=lambda: "summary of done")
    fresh = Prerequisite("made", "made", functools.partial(write_pid, str(made)), made.is_file,
                         summary=lambda: "summary of made")
    broken = Prerequisite("broken", "broken", functools.partial(raise_error, "no luck"), lambda: False,
                          summary=lambda: "summary of broken")
    assert prepare.run([found, fresh, broken], workers=1) == {"broken": "RuntimeError: no luck"}
    err = capsys.readouterr().err
    assert "summary of done" in err and "summary of made" in err and "summary of broken" not in err
    assert "prepared 1 of 2 cached computations" in err
