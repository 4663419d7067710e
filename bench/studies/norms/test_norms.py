"""Norm placement: Post-LN, Pre-LN, Pre-RMSNorm.

- `test_norm_gradients`: per-layer gradient norms of the MLP weights at initialisation, at depths 6,
  12 and 24, under Xavier initialisation (Xiong et al. 2020's setting) and GPT-2's N(0, 0.02).
- `test_norm_stability`: training without clipping, Post-LN and Pre-LN without warm-up and Post-LN with
  it, at each learning rate and seed: the final and held-out loss, and whether the run failed: a
  NaN/inf loss, or a held-out loss within 0.1 bits/byte of the byte-frequency (unigram) model, i.e. it
  learned next to nothing. Outcomes are deterministic and cached (`models.memo`).
- `test_norm_speed`: LayerNorm vs RMSNorm forward time at several widths: ours and torch.nn.RMSNorm, on
  every engine that runs a standalone module (`prepare_module`): eager torch as shipped, and the engines
  that fuse them (torch.compile; onnxruntime's LayerNormalization and RMSNormalization).
- `test_norm_share`: the norms' share of a profiled cached decode step, with LayerNorm and RMSNorm.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench import backends, harness
from bench.prepare import needs
from bench.studies.norms import STUDY, training
from bench.studies.norms.records import (
    GradientsMetrics,
    GradientsParams,
    ShareMetrics,
    ShareParams,
    SpeedMetrics,
    SpeedParams,
    StabilityMetrics,
    StabilityParams,
)
from models import build, corpus, variants
from models.config import NORM_KINDS
from models.corpus import random_windows
from models.init import mlp_gradient_norms, xavier_init_
from models.layers import LayerNorm, RMSNorm

NORM_IMPLS = ("layernorm", "rmsnorm", "torch_rmsnorm")
FAILED_WITHIN_BITS = 0.1  # a run whose held-out loss ends this close to the unigram model's learned nothing


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sweeps = harness.sweep(metafunc.config, STUDY) or ()
    if "norm_gradient_case" in metafunc.fixturenames:
        cases = [(s, init, n, d) for s in sweeps for init in s.inits for n in NORM_KINDS for d in s.depths]
        metafunc.parametrize("norm_gradient_case", cases, ids=[f"{i}-{n}-L{d}" for _, i, n, d in cases])
    if "norm_stability_case" in metafunc.fixturenames:
        cases = [(s, n, w, lr, seed) for s in sweeps for n, w in s.stability_arms for lr in s.stability_lrs
                 for seed in s.stability_seeds]
        metafunc.parametrize("norm_stability_case",
                             [pytest.param(c, marks=needs(training.stability(*c).prerequisite())) for c in cases],
                             ids=[f"{n}-warmup{w}-lr{lr:g}-seed{seed}" for _, n, w, lr, seed in cases])
    if "norm_speed_case" in metafunc.fixturenames:
        usable = [b.name for b in harness.selected_backends(metafunc.config, backends.MODULES)]
        cases = [(s, b, impl, w) for s in sweeps for b in usable for impl in NORM_IMPLS for w in s.widths]
        metafunc.parametrize("norm_speed_case", cases, ids=[f"{b}-{i}-d{w}" for _, b, i, w in cases])
    if "norm_share_case" in metafunc.fixturenames:
        cases = [(s, v, n) for s in sweeps for v in s.share_variants for n in ("pre_ln", "pre_rms")]
        metafunc.parametrize("norm_share_case", cases, ids=[f"{v}-{n}" for _, v, n in cases])


def test_norm_gradients(benchmark, record, norm_gradient_case) -> None:
    _, init, norm, depth = norm_gradient_case
    cfg = variants.get("gpt2-tiny").replace(norm=norm, n_layer=depth, tie_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build(cfg, seed=0)
        if init == "xavier":
            xavier_init_(model)
    x, y = random_windows(corpus.load().tokens("train"), 8, 128, torch.Generator().manual_seed(0))
    grads: list[float] = []

    def run() -> None:
        grads[:] = mlp_gradient_norms(model, x, y)

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    assert all(g > 0 and math.isfinite(g) for g in grads)
    record("norms", "gpt2-tiny", backends.reference("cpu"),
           params=GradientsParams(norm=norm, depth=depth, init=init),
           metrics=GradientsMetrics(mlp_grad_norm_by_layer=grads, last_over_first=grads[-1] / grads[0]))


def test_norm_stability(benchmark, record, norm_stability_case) -> None:
    sweep, norm, warmup, lr, seed = norm_stability_case
    run = training.stability(sweep, norm, warmup, lr, seed)
    result: dict = {}
    benchmark.pedantic(lambda: result.update(zip(("run", "cached"), run.result(), strict=True)), rounds=1,
                       warmup_rounds=0)
    outcome = result["run"]
    bits = [v / math.log(2) if v is not None else math.nan for v in outcome["losses"]]
    tail = bits[-max(1, len(bits) // 10):]
    final = sum(tail) / len(tail)
    val = outcome["val_bpb"] if outcome["val_bpb"] is not None else math.nan
    failed = not all(math.isfinite(v) for v in bits) or not math.isfinite(val) \
        or val > outcome["unigram_bpb"] - FAILED_WITHIN_BITS
    record("norms", f"gpt2-tiny-L{sweep.stability_depth}", backends.reference("cpu"),
           params=StabilityParams(norm=norm, seed=seed, lr=lr, steps=sweep.stability_steps, warmup=warmup),
           metrics=StabilityMetrics(train_bpb_curve=[v if math.isfinite(v) else None for v in bits],
                                    final_train_bpb=final if math.isfinite(final) else None,
                                    val_bpb=val if math.isfinite(val) else None,
                                    unigram_bpb=outcome["unigram_bpb"], failed=failed, from_cache=result["cached"]))


class _TorchRMSNorm(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=1e-5)  # pass eps: torch's default is finfo.eps, not 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def _norm(impl: str, width: int) -> nn.Module:
    if impl == "layernorm":
        return LayerNorm(width, eps=1e-5)
    if impl == "rmsnorm":
        return RMSNorm(width, eps=1e-5)
    return _TorchRMSNorm(width)


def test_norm_speed(benchmark, record, norm_speed_case) -> None:
    sweep, backend_name, impl, width = norm_speed_case
    backend = harness.available_or_skip(backends.get(backend_name))
    module = _norm(impl, width).eval()
    x = torch.randn(1, sweep.rows, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = module(x)
    try:
        prepared = backend.prepare_module(module, x)
    except backends.CannotPrepareError as exc:
        pytest.skip(f"{backend.name} cannot run {impl}: {exc}")
    with torch.inference_mode():
        torch.testing.assert_close(prepared.run().cpu(), ref, atol=1e-4, rtol=1e-4)  # correct before timed
        benchmark.pedantic(harness.synced(prepared.run, torch.device(backend.device_type)), rounds=20,
                           warmup_rounds=2)
    record("norms", f"width-{width}", backend,
           params=SpeedParams(impl=impl, width=width, rows=sweep.rows, fused=backend.fuses_ops),
           metrics=SpeedMetrics(graph_ops=list(prepared.ops)))


def test_norm_share(benchmark, record, norm_share_case) -> None:
    """A cached decode of the model with LayerNorm (pre_ln) and with RMSNorm (pre_rms), profiled on eager
    torch: what share of a step the norms take, so a norm's speed-up can be weighed."""
    from profiles.trace import trace_decode

    sweep, variant, norm = norm_share_case
    backend = harness.available_or_skip(backends.reference("cpu"))
    model = backend.prepare(build(variants.get(variant).replace(norm=norm), seed=0))
    result: dict = {}
    benchmark.pedantic(lambda: result.update(trace_decode(model, decode_tokens=sweep.share_tokens)), rounds=1,
                       warmup_rounds=0)
    total = sum(result.values())
    assert total > 0 and result["norm"] > 0
    record("norms", variant, backend, params=ShareParams(norm=norm, tokens=sweep.share_tokens),
           metrics=ShareMetrics(seconds_by_class=dict(result), norm_share=result["norm"] / total))
