"""Extending archbench: a toy backend, a toy KV-cache kind and a toy study registered at run time (no
other file changed) run in the smoke preset, land in the records and appear in the report and the check."""

from __future__ import annotations

import os

import pytest

from bench import backends, prepare, studies
from bench.run import run_and_report, validate
from models import kv_cache
from reports.check import check
from reports.load import load, to_frame

from .toys import TOY_KIND, TOY_STUDY, ToyBackend, toy_entry


@pytest.fixture
def registered(monkeypatch):
    """The toys registered through the registries' own `register`, and removed again afterwards."""
    for registry, key in ((backends.BACKENDS, "toy-eager"), (kv_cache.CACHE_SPECS, TOY_KIND.kind),
                          (studies.STUDIES, TOY_STUDY.name)):
        monkeypatch.delitem(registry, key, raising=False)  # undone in reverse: the entry goes again
    backends.register(ToyBackend())
    kv_cache.register(TOY_KIND)
    studies.register(TOY_STUDY)
    yield
    for registry, key in ((backends.BACKENDS, "toy-eager"), (kv_cache.CACHE_SPECS, TOY_KIND.kind),
                          (studies.STUDIES, TOY_STUDY.name)):
        registry.pop(key, None)


def test_registering_twice_is_an_error(registered) -> None:
    with pytest.raises(ValueError, match="already registered"):
        backends.register(ToyBackend())
    with pytest.raises(ValueError, match="already registered"):
        kv_cache.register(TOY_KIND)
    with pytest.raises(ValueError, match="already registered"):
        studies.register(TOY_STUDY)


def test_toy_kind_is_a_cache_kind_like_any_other(registered) -> None:
    from .helpers import tiny_config

    cfg = tiny_config(d_model=64, n_head=4)
    assert TOY_KIND.kind in kv_cache.representative_kinds()  # its family's one kind: the smoke preset runs it
    cache = kv_cache.make("toy-int8", cfg, batch=2, max_len=10)
    assert cache.bytes_per_token == kv_cache.bytes_per_token("toy-int8", cfg, 2) == 2 * 2 * 2 * 4 * (16 + 2)
    assert kv_cache.bits_per_coordinate("toy-int8", cfg, 10) == pytest.approx(8 + 16 / 16)


def test_toys_run_in_the_smoke_preset_and_appear_in_the_report(registered, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHBENCH_CACHE_DIR", str(tmp_path / "cache"))  # the toy's cached computations: made anew
    config = validate(preset="smoke", studies=["decode", "kv", "toy"], backends=["torch-cpu", "toy-eager"],
                      out=tmp_path, pytest_args=["-k", "not llama"])  # the GPT-2 models are enough here
    assert run_and_report(config) == 0
    df = to_frame([load(tmp_path / "results.json")])
    toy_decode = df[(df["study"] == "decode") & (df["backend"] == "toy-eager")]
    assert set(toy_decode["backend_family"]) == {"toy"} and set(toy_decode["device_type"]) == {"cpu"}
    assert {"none", "raw"} <= set(toy_decode["p_cache"])  # decoded with and without a cache, checked against each other
    kinds = df[(df["study"] == "kv_memory") & (df["p_cache"] == "toy-int8")]
    assert set(kinds["backend"]) == {"torch-cpu", "toy-eager"} and set(kinds["p_cache_family"]) == {"absmax"}
    assert (kinds["m_bits_per_coordinate"] == 8.5).all()  # int8 codes and an fp16 scale per 32-dim vector
    assert set(df[df["study"] == "toy"]["p_width"]) == {64, 1024}
    makers = {int(toy_entry(w).read_text()) for w in (64, 1024)}  # made before the suite, in workers where cores allow
    assert (os.getpid() not in makers) == (prepare.default_workers() > 1), makers
    html = (tmp_path / "index.html").read_text()
    assert "Toy study: softmax time against width" in html and "Softmax takes longer on wider rows." in html
    assert "toy-eager" in html[html.index('id="decode"'):html.index('id="kv"')]
    assert "toy-int8" in html[html.index('id="kv"'):]
    assert "could not be built" not in html
    results = load(tmp_path / "results.json")
    gates = check(results, results)
    assert any(g.gate == "toy widths" and g.passed for g in gates)
    assert all(g.passed for g in gates if g.gate in ("kv exact bytes", "identical tokens"))
