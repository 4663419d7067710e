"""Positional embeddings: learned (GPT-2), sinusoidal (2017), RoPE.

- `test_position_params`: parameters each scheme adds, at GPT-2 small's shape (exact, meta device).
- `test_position_speed`: prefill and cached decode time of one model per scheme (only `pos` differs), on
  every engine that decodes.
- `test_position_extrapolation`: one small model per scheme trained at context L on the same budget,
  evaluated at L, 2L and 4L; learned positions have no embedding past their table, which the record
  shows with the model's own error rather than a crash.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench import backends, harness, prepare
from bench.prepare import needs
from bench.studies.positions import STUDY, PositionSweep
from bench.studies.positions.records import (
    ExtrapolationMetrics,
    ExtrapolationParams,
    ParamsMetrics,
    ParamsParams,
    SpeedMetrics,
    SpeedParams,
)
from models import PositionLimitError, build, corpus, count_params, variants
from models.config import POS_KINDS, ArchConfig
from models.corpus import NATS_TO_BITS
from models.generate import decode
from models.reference import TrainConfig, reference_model


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sweeps = harness.sweep(metafunc.config, STUDY) or ()
    if "position_params_case" in metafunc.fixturenames:
        metafunc.parametrize("position_params_case", [(s, p) for s in sweeps for p in POS_KINDS],
                             ids=[p for _ in sweeps for p in POS_KINDS])
    if "position_speed_case" in metafunc.fixturenames:
        usable = harness.selected_backends(metafunc.config, backends.DECODE)
        cases = [(s, b.name, p, phase) for s in sweeps for b in usable if s.speed_per_shape_compilers
                 or not b.compiles_per_shape for p in POS_KINDS for phase in ("prefill", "decode")]
        metafunc.parametrize("position_speed_case", cases, ids=[f"{b}-{p}-{ph}" for _, b, p, ph in cases])
    if "position_extrapolation_case" in metafunc.fixturenames:
        cases = [(s, p, seed) for s in sweeps for p in POS_KINDS for seed in s.seeds]
        params = [pytest.param(c, marks=needs(prepare.trained(*_training(*c), label=f"positions {c[1]} seed {c[2]}")))
                  for c in cases]
        metafunc.parametrize("position_extrapolation_case", params, ids=[f"{p}-seed{seed}" for _, p, seed in cases])


def test_position_params(benchmark, record, position_params_case) -> None:
    sweep, pos = position_params_case
    counts: dict = {}
    base = variants.get(sweep.params_variant)

    def run() -> None:
        cfg = base.replace(pos=pos)
        model = build(cfg, device="meta")
        counts["total"] = count_params(model)
        counts["position"] = sum(p.numel() for n, p in model.named_parameters() if n.startswith("pos_emb"))

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    # docs/references.md: GPT-2 small's learned table is 1024 x 768 = 786,432 parameters
    assert counts["position"] == (base.max_seq_len * base.d_model if pos == "learned" else 0)
    record("positions", sweep.params_variant, harness.ANALYTIC, params=ParamsParams(pos=pos),
           metrics=ParamsMetrics(params=counts["total"], position_params=counts["position"]))


def test_position_speed(benchmark, record, position_speed_case) -> None:
    sweep, backend_name, pos, phase = position_speed_case
    backend = harness.available_or_skip(backends.get(backend_name))
    cfg = variants.get(sweep.speed_variant).replace(pos=pos)
    model = harness.prepare_or_skip(backend, build(cfg, seed=0).eval())
    device = backend.input_device
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        if phase == "prefill":
            idx = torch.randint(0, cfg.vocab_size, (1, sweep.speed_prefill), generator=gen).to(device)
            cache = model.make_cache(1, sweep.speed_prefill)

            def setup():
                cache.reset()
                return (), {}

            benchmark.pedantic(harness.synced(lambda: model(idx, cache), device), setup=setup, rounds=5,
                               warmup_rounds=1)
            tokens = sweep.speed_prefill
        else:
            prompt = torch.randint(0, cfg.vocab_size, (1, 16), generator=gen).to(device)
            total = 16 + sweep.speed_decode
            seq = torch.zeros(1, total, dtype=torch.long, device=device)
            seq[:, :16] = prompt
            cache = model.make_cache(1, total)

            def setup():
                cache.reset()
                return (harness.synced(model, device)(prompt, cache)[:, -1],), {}

            benchmark.pedantic(harness.synced(lambda lg: decode(model, seq, 16, lg, sweep.speed_decode, cache), device),
                               setup=setup, rounds=5, warmup_rounds=1)
            tokens = sweep.speed_decode
    record("positions", sweep.speed_variant, backend, params=SpeedParams(phase=phase, pos=pos, tokens=tokens),
           metrics=SpeedMetrics())


def _arm(sweep: PositionSweep, pos: str) -> ArchConfig:
    """The arm's config: the base model with only its positions (and the sinusoidal scale) changed."""
    return variants.get(sweep.base).replace(pos=pos, max_seq_len=sweep.train_len,
                                            embed_scale=sweep.sinusoidal_embed_scale and pos == "sinusoidal")


def _training(sweep: PositionSweep, pos: str, seed: int) -> tuple[ArchConfig, TrainConfig]:
    """The arm's model and its training settings (the model is trained once and cached: `models.reference`)."""
    tc = TrainConfig(steps=sweep.steps, batch_size=sweep.batch_size, seq_len=sweep.train_len,
                     warmup_steps=min(30, sweep.steps // 5), eval_windows=sweep.eval_windows, seed=seed)
    return _arm(sweep, pos), tc


def test_position_extrapolation(benchmark, record, position_extrapolation_case) -> None:
    sweep, pos, seed = position_extrapolation_case
    result: dict = {}
    benchmark.pedantic(lambda: result.update(trained=reference_model(*_training(sweep, pos, seed), progress=False)),
                       rounds=1, warmup_rounds=0)
    model = result["trained"].model.eval()
    val = corpus.load().tokens("val")
    by_length: dict[str, dict] = {}
    for factor in sweep.eval_factors:
        length = sweep.train_len * factor
        windows = corpus.eval_windows(val, length, sweep.eval_windows)  # (n, length + 1)
        try:
            with torch.inference_mode():
                logits = model(windows[:, :-1])  # (n, length, vocab)
        except PositionLimitError as exc:
            assert pos == "learned" and factor > 1  # the only scheme with a limit, and only past its table
            by_length[str(length)] = {"error": str(exc)}
            continue
        nats = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="none").view(
            windows.shape[0], length)  # (n, length)
        beyond = nats[:, sweep.train_len:]
        by_length[str(length)] = {
            "bits_per_byte": nats.mean().item() * NATS_TO_BITS,
            "bits_per_byte_within_train_len": nats[:, : sweep.train_len].mean().item() * NATS_TO_BITS,
            "bits_per_byte_beyond_train_len": beyond.mean().item() * NATS_TO_BITS if beyond.numel() else None,
        }
    record("positions", f"{sweep.base}-L{sweep.train_len}", backends.reference("cpu"),
           params=ExtrapolationParams(pos=pos, train_len=sweep.train_len, steps=sweep.steps, batch=sweep.batch_size,
                                      factors=list(sweep.eval_factors), seed=seed,
                                      embed_scale=_arm(sweep, pos).embed_scale),
           metrics=ExtrapolationMetrics(by_length=by_length, train_seconds=result["trained"].seconds,
                                        val_bpb_at_train_len=result["trained"].val_bits_per_byte,
                                        unigram_bpb=result["trained"].unigram_bits_per_byte,
                                        from_cache=result["trained"].from_cache))
