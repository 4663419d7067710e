"""Weight tying: the output head sharing the token embedding's matrix.

- `test_tying_params`: exact parameter counts tied vs untied from GPT-2 small to the 70B-class shape
  (built on the meta device): parameters saved and their share of the untied model.
- `test_tying_quality`: tied vs untied small models trained on the same budget; held-out bits per byte.
"""

from __future__ import annotations

import pytest

from bench import backends, harness, prepare
from bench.prepare import needs
from bench.studies.tying import STUDY, TyingSweep
from bench.studies.tying.records import CountMetrics, CountParams, QualityMetrics, QualityParams
from models import build, count_params, variants
from models.config import ArchConfig
from models.reference import TrainConfig, reference_model


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sweeps = harness.sweep(metafunc.config, STUDY) or ()
    if "tying_params_case" in metafunc.fixturenames:
        cases = [(s, v) for s in sweeps for v in s.variants]
        metafunc.parametrize("tying_params_case", cases, ids=[v for _, v in cases])
    if "tying_quality_case" in metafunc.fixturenames:
        cases = [(s, tied) for s in sweeps for tied in (True, False)]
        ids = ["tied" if t else "untied" for _, t in cases]
        params = [pytest.param(c, marks=needs(prepare.trained(*_training(*c), label=f"tying {i}")))
                  for c, i in zip(cases, ids, strict=True)]
        metafunc.parametrize("tying_quality_case", params, ids=ids)


def test_tying_params(benchmark, record, tying_params_case) -> None:
    _, variant = tying_params_case
    counts: dict = {}
    cfg = variants.get(variant)

    def run() -> None:
        tied_model = build(cfg.replace(tie_weights=True), device="meta")
        counts["tied"] = count_params(tied_model)
        counts["untied"] = count_params(build(cfg.replace(tie_weights=False), device="meta"))
        assert tied_model.lm_head.weight is tied_model.tok_emb.weight  # one matrix, two uses

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    saved = counts["untied"] - counts["tied"]
    assert saved == cfg.vocab_size * cfg.d_model
    record("tying", variant, harness.ANALYTIC, params=CountParams(native_tied=cfg.tie_weights),
           metrics=CountMetrics(tied_params=counts["tied"], untied_params=counts["untied"], saved_params=saved,
                                saved_share_of_untied=saved / counts["untied"],
                                saved_share_of_tied=saved / counts["tied"]))


def _training(sweep: TyingSweep, tied: bool) -> tuple[ArchConfig, TrainConfig]:
    """The arm's model and its training settings (the model is trained once and cached: `models.reference`)."""
    tc = TrainConfig(steps=sweep.train_steps, batch_size=sweep.batch_size, seq_len=sweep.seq_len,
                     warmup_steps=min(30, sweep.train_steps // 5))
    return variants.get(sweep.base).replace(tie_weights=tied), tc


def test_tying_quality(benchmark, record, tying_quality_case) -> None:
    sweep, tied = tying_quality_case
    result: dict = {}
    benchmark.pedantic(lambda: result.update(run=reference_model(*_training(sweep, tied), progress=False)),
                       rounds=1, warmup_rounds=0)
    run = result["run"]
    record("tying", sweep.base, backends.reference("cpu"),
           params=QualityParams(tied=tied, steps=sweep.train_steps, batch=sweep.batch_size, seq_len=sweep.seq_len),
           metrics=QualityMetrics(params=count_params(run.model), val_bpb=run.val_bits_per_byte,
                                  unigram_bpb=run.unigram_bits_per_byte, train_seconds=run.seconds,
                                  from_cache=run.from_cache))
