"""LoRA vs rank-stabilised LoRA.

- `test_lora_variance`: with A and B drawn standard normal, the variance of gamma * B A against rank:
  ~1/r for LoRA (gamma = alpha / r), flat for rsLoRA (gamma = alpha / sqrt(r)).
- `test_lora_finetune`: the trained reference model fine-tuned on a held-out package of the standard
  library (the corpus' `adapt` split, never trained on) at ranks 2..512, same alpha, learning rate
  and steps for both scalings: loss curve, held-out loss, adapter gradient norms.
- `test_lora_overhead`: forward time of a model with no adapter, an unmerged one and a merged one.
"""

from __future__ import annotations

import pytest
import torch

from bench import backends, harness
from bench.prepare import needs
from bench.studies.lora import STUDY, LoraSweep, training
from bench.studies.lora.records import (
    FinetuneMetrics,
    FinetuneParams,
    OverheadMetrics,
    OverheadParams,
    VarianceMetrics,
    VarianceParams,
)
from bench.studies.lora.training import SCALINGS
from models import build, corpus, variants
from models.corpus import NATS_TO_BITS
from models.lora import apply_lora, lora_parameters, lora_scaling, merge_lora, update_variance


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sweeps = harness.sweep(metafunc.config, STUDY) or ()
    if "lora_variance_case" in metafunc.fixturenames:
        cases = [(s, scaling) for s in sweeps for scaling in SCALINGS]
        metafunc.parametrize("lora_variance_case", cases, ids=[c[1] for c in cases])
    if "lora_finetune_case" in metafunc.fixturenames:
        cases = [(s, scaling, r, lr, seed) for s in sweeps for scaling in SCALINGS for r in s.ranks for lr in s.lrs
                 for seed in s.seeds]
        metafunc.parametrize("lora_finetune_case",
                             [pytest.param(c, marks=needs(training.finetune(*c).prerequisite())) for c in cases],
                             ids=[f"{c[1]}-r{c[2]}-lr{c[3]:g}-seed{c[4]}" for c in cases])
    if "lora_overhead_case" in metafunc.fixturenames:
        engines = harness.selected_backends(metafunc.config, backends.MODULE_TRANSFORMS)
        cases = [(s, backend.name, mode) for s in sweeps for backend in engines
                 if s.overhead_per_shape_compilers or not backend.compiles_per_shape
                 for mode in ("none", "unmerged", "merged")]
        metafunc.parametrize("lora_overhead_case", cases,
                             ids=[f"{c[0].overhead_variant}-{c[1]}-{c[2]}" for c in cases])


def test_lora_variance(benchmark, record, lora_variance_case) -> None:
    sweep, scaling = lora_variance_case
    sweep: LoraSweep
    variances: list[float] = []

    def run() -> None:
        variances[:] = [update_variance(r, sweep.alpha, SCALINGS[scaling], sweep.variance_dim)
                        for r in sweep.variance_ranks]

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    logs = torch.log(torch.tensor(sweep.variance_ranks, dtype=torch.float64))
    slope = float(torch.linalg.lstsq(torch.stack([logs, torch.ones_like(logs)], 1),
                                     torch.log(torch.tensor(variances, dtype=torch.float64))[:, None]).solution[0, 0])
    record("lora", "random-AB", backends.reference("cpu"),
           params=VarianceParams(scaling=scaling, alpha=sweep.alpha, dim=sweep.variance_dim,
                                 ranks=list(sweep.variance_ranks)),
           metrics=VarianceMetrics(variance=variances, loglog_slope=slope,
                                   expected_slope=0.0 if SCALINGS[scaling] else -1.0))


def test_lora_finetune(benchmark, record, lora_finetune_case) -> None:
    sweep, scaling, rank, lr, seed = lora_finetune_case
    run = training.finetune(sweep, scaling, rank, lr, seed)
    result: dict = {}
    benchmark.pedantic(lambda: result.update(zip(("run", "cached"), run.result(), strict=True)), rounds=1,
                       warmup_rounds=0)
    outcome = result["run"]
    losses = [v * NATS_TO_BITS for v in outcome["losses"]]  # bits per byte
    tail = max(1, len(losses) // 5)
    assert all(v == v for v in losses), "the fine-tune diverged to NaN"
    unigram = corpus.unigram_bits_per_byte(*training.adapt_split())
    record("lora", sweep.reference, backends.reference("cpu"),
           params=FinetuneParams(scaling=scaling, rank=rank, alpha=sweep.alpha, lr=lr, steps=sweep.steps,
                                 batch=sweep.batch_size, seq_len=sweep.seq_len, seed=seed),
           metrics=FinetuneMetrics(scaling_factor=lora_scaling(rank, sweep.alpha, SCALINGS[scaling]),
                                   adapter_params=outcome["adapter_params"], train_bpb_curve=losses,
                                   final_train_bpb=sum(losses[-tail:]) / tail, eval_bpb_before=outcome["before"],
                                   eval_bpb_after=outcome["after"], grad_norm_curve=outcome["grad_norms"],
                                   mean_grad_norm=sum(outcome["grad_norms"]) / len(outcome["grad_norms"]),
                                   unigram_bpb=unigram, from_cache=result["cached"]))


def test_lora_overhead(benchmark, record, lora_overhead_case) -> None:
    """Forward of (4, 128) tokens on an engine: no adapter, an unmerged adapter on every projection, the same
    merged (the adapters are archbench's module transform; the engine runs the transformed model as it is)."""
    sweep, backend_name, mode = lora_overhead_case
    backend = harness.available_or_skip(backends.get(backend_name))
    model = build(variants.get(sweep.overhead_variant), seed=0).eval()
    if mode != "none":
        model = apply_lora(model, sweep.overhead_rank, sweep.alpha)
        with torch.no_grad():
            for p in lora_parameters(model):
                p.normal_(0, 0.02)
        if mode == "merged":
            merge_lora(model)
    idx = torch.randint(0, model.config.vocab_size, (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(idx)  # the transformed model in eager torch: what the engine must compute
        engine = harness.prepare_or_skip(backend, model)
        idx = idx.to(backend.input_device)
        torch.testing.assert_close(engine(idx).cpu(), expected, atol=1e-4, rtol=1e-4)  # correct, and compiled, first
        benchmark.pedantic(harness.synced(lambda: engine(idx), backend.input_device), rounds=5, warmup_rounds=1)
    record("lora", sweep.overhead_variant, backend,
           params=OverheadParams(mode=mode, rank=sweep.overhead_rank, batch=4, tokens=128),
           metrics=OverheadMetrics(adapter_params=sum(p.numel() for p in lora_parameters(model))))
