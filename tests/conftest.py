"""Shared fixtures of the correctness tests (helpers are in tests/helpers.py), and the thorough tier:
tests marked `thorough` (the rest of a cross product whose all-pairs subset always runs, inductor's code
with freezing) run only with `pytest --thorough` or ARCHBENCH_THOROUGH=1; `.ci/run` runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--thorough", action="store_true", default=os.environ.get("ARCHBENCH_THOROUGH") == "1",
                     help="also run the tests marked thorough (CI runs them; about 3 more minutes on 2 cores)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--thorough"):
        return
    left_out = [item for item in items if item.get_closest_marker("thorough")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("thorough")]
        config.stash[_THOROUGH_LEFT_OUT] = len(left_out)


_THOROUGH_LEFT_OUT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    count = config.stash.get(_THOROUGH_LEFT_OUT, 0)
    if count:
        terminalreporter.write_line(f"archbench: {count} thorough tests not run (`pytest --thorough` runs them; "
                                    "CI does)")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The output directory of one `python -m bench --preset smoke --backend torch-cpu` run, shared by the
    tests that need a whole finished run (a test that changes it works on a copy)."""
    out = tmp_path_factory.mktemp("smoke-run")
    proc = subprocess.run([sys.executable, "-m", "bench", "--preset", "smoke", "--backend", "torch-cpu", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture
def unrasterised_figures(monkeypatch) -> None:
    """Report figures made (their data paths run) but not laid out or rasterised: for tests of a report's
    text and tables; `test_report_figures` draws every figure and checks it."""
    from matplotlib.figure import Figure

    from reports import page

    monkeypatch.setattr(page, "finish", lambda fig: None)
    monkeypatch.setattr(Figure, "savefig", lambda fig, target, **options: target.write(b"\x89PNG\r\n\x1a\n"))
