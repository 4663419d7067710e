"""The toy study's pytest-benchmark suite (see tests/toys.py): not collected by the tests themselves
(its name does not start with test_), only when the toy study is registered and run."""

from __future__ import annotations

import pytest
import torch

from bench import backends, harness
from bench.prepare import needs
from bench.studies import get as get_study

from .toys import toy_entry, toy_prerequisite


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "toy_width" in metafunc.fixturenames:
        sweep = harness.sweep(metafunc.config, get_study("toy"))
        widths = list(sweep.widths) if sweep else []
        metafunc.parametrize("toy_width", [pytest.param(w, marks=needs(toy_prerequisite(w))) for w in widths],
                             ids=[str(w) for w in widths])


def test_toy_softmax(benchmark, record, pytestconfig, toy_width: int) -> None:
    sweep = harness.sweep(pytestconfig, get_study("toy"))
    assert toy_entry(toy_width).is_file(), "bench.prepare made what the case reads before the suite started"
    x = torch.randn(sweep.rows, toy_width, generator=torch.Generator().manual_seed(0))
    out = torch.softmax(x, -1)
    torch.testing.assert_close(out.sum(-1), torch.ones(sweep.rows))  # correct before timed
    benchmark.pedantic(lambda: torch.softmax(x, -1), rounds=5, warmup_rounds=1)
    record("toy", f"rows-{sweep.rows}", backends.reference("cpu"), params={"width": toy_width}, metrics={})
