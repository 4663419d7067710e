"""The claims scoreboard: the verdict statistics, and every claim's judge on hand-made records in each
outcome it can reach (holds, does not hold, inconclusive, not testable here, not measured); the
scoreboard in the report, per machine."""

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench import studies
from reports.build import build_report
from reports.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTABLE,
    UNMEASURED,
    Verdict,
    judge_interval,
    log_ratio_interval,
    mean_interval,
    scoreboard,
    t95,
    t_quantile,
)

M = "Test Machine"


def _row(study: str, variant: str = "v", backend: str = "torch-cpu", time: float = 1.0, **fields) -> dict:
    return {"machine": M, "study": study, "variant": variant, "backend": backend, "backend_family": "torch",
            "device_type": "cpu", "time_min": time, "time_data": [time], **fields}


def _judge(claim_id: str, rows: list[dict]) -> list[Verdict]:
    claim = next(c for c in studies.all_claims() if c.id == claim_id)
    out = claim.judge(pd.DataFrame(rows))
    return out if isinstance(out, list) else [out]


def _status(claim_id: str, rows: list[dict]) -> str:
    verdicts = _judge(claim_id, rows)
    assert len({v.status for v in verdicts}) == 1, verdicts
    assert all(v.figures for v in verdicts)
    return verdicts[0].status


# ---- the statistics ---------------------------------------------------------------------------------------

def test_t_quantiles_and_intervals() -> None:
    assert t95(2) == 4.303 and t95(10) == 2.228 and t95(1000) == 1.96
    assert t95(35) == t95(30)  # between rows: the more conservative (smaller df) one
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_interval([5.0])[1:] == (-math.inf, math.inf)  # one value: no interval
    for df, table in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042), (120, 1.980)):
        assert t_quantile(df, 0.95) == pytest.approx(table, abs=6e-4)  # the closed form against the table
    for df, table in ((1, 63.657), (2, 9.925), (5, 4.032), (20, 2.845)):  # two-sided 99% (standard tables)
        assert t_quantile(df, 0.99) == pytest.approx(table, abs=6e-4)
    assert t_quantile(4 - 1e-9, 0.99) == t_quantile(4, 0.99) and t95(4 - 1e-9) == t95(4)  # rounding, not df 3
    ratio, low, high = log_ratio_interval([2.0, 2.1, 1.9], [1.0, 1.05, 0.95])
    assert ratio == pytest.approx(2.0, rel=0.01) and low < ratio < high and low > 1.5
    assert judge_interval(1.2, 1.5, 1.0) == HOLDS and judge_interval(0.5, 0.9, 1.0) == FAILS
    assert judge_interval(0.9, 1.1, 1.0) == INCONCLUSIVE and judge_interval(0.5, 0.9, 1.0, claimed_above=False) == HOLDS
    with pytest.raises(ValueError, match="allowed values: holds, does not hold, inconclusive"):
        Verdict("mixed", "x")
    assert Verdict(HOLDS, "x", n=3, interval=(1.0, 2.0), unit="x").evidence == "n = 3, 95% interval [1, 2] x"
    assert Verdict(HOLDS, "x").evidence == "exact"


# ---- decode -------------------------------------------------------------------------------------------------

def _decode(cached: list[float], uncached: list[float], lengths=(64, 128, 256, 512)) -> list[dict]:
    rows = []
    for i, (ce, ue) in enumerate(zip(cached, uncached, strict=True)):
        for cache, exp in (("raw", ce), ("none", ue)):
            for t in lengths:
                rows.append(_row("decode", f"v{i}", time=1e-3 * t**exp, p_phase="decode", p_cache=cache,
                                 p_decode_tokens=t, p_batch=1, p_dtype="fp32", m_bytes_read=1e6 * t,
                                 m_ceiling_Bps=1e10))
    return rows


def test_decode_claims() -> None:
    assert _status("kv-linear-cached", _decode([1.0, 1.05, 0.95], [2.0, 2.0, 2.0])) == HOLDS
    assert _status("kv-linear-cached", _decode([1.9, 1.95, 2.0], [2.0, 2.0, 2.0])) == FAILS
    assert _status("kv-linear-cached", _decode([1.0, 1.6, 1.3], [2.0, 2.0, 2.0])) == INCONCLUSIVE
    assert _status("kv-linear-uncached", _decode([1.0, 1.0, 1.0], [2.0, 1.95, 2.05])) == HOLDS
    assert _status("kv-linear-uncached", _decode([1.0, 1.0, 1.0], [1.1, 1.15, 1.2])) == FAILS
    short = _decode([1.0, 1.0], [2.0, 2.0], lengths=(8, 16, 32))
    verdict = _judge("kv-linear-uncached", short)[0]
    assert verdict.status == NOT_TESTABLE and "reaching 256" in verdict.reason and "T up to 32" in verdict.model
    assert _status("kv-linear-cached", [_row("nothing")]) == UNMEASURED


# ---- KV caches ----------------------------------------------------------------------------------------------

def _capacity(tq3_bytes: int = 7_488) -> list[dict]:
    kinds = {"raw-fp16": 36_864, "tq3": tq3_bytes}
    return [_row("kv_memory", "gpt2-small", "analytic", p_phase="capacity", m_params=124_439_808,
                 m_weight_bytes_fp16=248_879_616, m_bytes_per_token=kinds,
                 m_outgrows_weights_at_tokens={k: 248_879_616 // b for k, b in kinds.items()},
                 m_max_context_tokens={k: {"8": 1} for k in kinds})]


def _peak(saving: float) -> list[dict]:
    return [_row("kv_memory", "gpt2-medium", p_phase="rss", p_cache=kind, p_tokens=8192, p_batch=1, p_pos="rope",
                 m_peak_delta_bytes=peak, m_kv_bytes=peak) for kind, peak in (("raw-fp16", 1e9), ("tq3", 1e9 / saving))]


def _kv_accuracy(deltas: list[float], raw_bpb: float = 2.5) -> list[dict]:
    mean = sum(deltas) / len(deltas)
    base = dict(p_windows=len(deltas), p_seq_len=128, p_model_description="gpt2-tiny (trained)", m_unigram_bpb=4.47)
    return [_row("kv_accuracy", "gpt2-tiny", p_cache="raw-fp32", p_bits=32, m_bits_per_byte=raw_bpb,
                 m_ppl_delta_pct=0.0, m_window_nats_delta=[0.0] * len(deltas), **base),
            _row("kv_accuracy", "gpt2-tiny", p_cache="tq3", p_bits=3, m_bits_per_byte=raw_bpb + mean,
                 m_ppl_delta_pct=(math.exp(mean) - 1) * 100, m_window_nats_delta=deltas, **base)]


def test_kv_claims() -> None:
    assert _status("kv-grows", _capacity()) == HOLDS
    assert _status("kv-3bit-bytes", _capacity(7_000)) == HOLDS
    assert _status("kv-3bit-bytes", _capacity()) == FAILS  # 4.92x: codes plus an fp16 norm at head_dim 64
    assert _status("kv-3bit-peak", _peak(5.5)) == HOLDS
    assert _status("kv-3bit-peak", _peak(3.0)) == FAILS
    assert _status("kv-3bit-accuracy", _kv_accuracy([0.004, 0.005, 0.006, 0.005])) == HOLDS
    assert _status("kv-3bit-accuracy", _kv_accuracy([0.05, 0.06, 0.055, 0.05])) == FAILS
    assert _status("kv-3bit-accuracy", _kv_accuracy([0.0, 0.04, 0.001, 0.035])) == INCONCLUSIVE
    untrained = _judge("kv-3bit-accuracy", _kv_accuracy([0.005] * 4, raw_bpb=4.3))[0]
    assert untrained.status == NOT_TESTABLE and "unigram" in untrained.reason
    assert _status("kv-3bit-peak", _capacity()) == UNMEASURED


def _matched(tq_gain: list[float], key_group: int = 32, raw_bpb: float = 2.5, kinds=("tq3", "tq3.5")) -> list[dict]:
    """uniform3 at 3.75 bits; tq3 at 3.25 and tq3.5 at 3.75: TurboQuant's loss is uniform's minus `tq_gain`
    window by window (nats per token)."""
    uniform = [0.02, 0.03, 0.025, 0.035]
    base = dict(p_windows=4, p_seq_len=128, p_model_description="gpt2-tiny-hd64 (trained)", m_unigram_bpb=4.47,
                m_bits_per_byte=raw_bpb, m_ppl_delta_pct=0.0)
    rows = [_row("kv_accuracy", "gpt2-tiny-hd64", p_cache="raw-fp32", p_bits=32, m_marginal_bits=32.0,
                 m_window_nats_delta=[0.0] * 4, **base),
            _row("kv_accuracy", "gpt2-tiny-hd64", p_cache="uniform3", p_bits=3, m_marginal_bits=3.75,
                 p_exact_key_group=32, m_window_nats_delta=uniform, **base)]
    for kind, bits, extra in (("tq3", 3.25, 0.02), ("tq3.5", 3.75, 0.0)):
        if kind in kinds:
            rows.append(_row("kv_accuracy", "gpt2-tiny-hd64", p_cache=kind, p_bits=bits - 0.25,
                             m_marginal_bits=bits, p_exact_key_group=key_group,
                             m_window_nats_delta=[u - g + extra for u, g in zip(uniform, tq_gain, strict=True)],
                             **base))
    return rows


def test_matched_bits_claim() -> None:
    assert _status("kv-matched-bits", _matched([0.01, 0.012, 0.011, 0.009])) == HOLDS
    assert _status("kv-matched-bits", _matched([-0.01, -0.012, -0.011, -0.009])) == FAILS
    assert _status("kv-matched-bits", _matched([0.01, -0.01, 0.012, -0.013])) == INCONCLUSIVE
    holds = _judge("kv-matched-bits", _matched([0.01, 0.012, 0.011, 0.009]))[0]
    assert "3.75 bits" in holds.figures and holds.model == "gpt2-tiny-hd64 (trained)" and holds.n == 4
    unbracketed = _judge("kv-matched-bits", _matched([0.01] * 4, kinds=("tq3",)))[0]  # only below uniform3's bits
    assert unbracketed.status == NOT_TESTABLE and "both sides" in unbracketed.reason
    assert _status("kv-matched-bits", _matched([0.01] * 4, key_group=0)) == INCONCLUSIVE  # unequal exact keys
    untrained = _judge("kv-matched-bits", _matched([0.01] * 4, raw_bpb=4.3))[0]
    assert untrained.status == NOT_TESTABLE and "unigram" in untrained.reason
    assert _status("kv-matched-bits", _kv_accuracy([0.005] * 4)) == UNMEASURED


# ---- INT8 ---------------------------------------------------------------------------------------------------

def _int8(columns: int = 0, quantize_delta: float = 0.2, spread: float = 0.01, speed: float = 1.0,
          layers: float = 3.9e6) -> list[dict]:
    windows = 6
    common = dict(p_decode_tokens=64, p_batch=1, p_model_description="ref", m_unigram_bpb=4.47,
                  m_max_abs_linear_input=12.0 if columns else 3.0, m_outlier_columns=columns,
                  m_quantized_weights_fp32_bytes=layers * 4 / 3.9e6 * 3.9e6 / 4 * 4)
    rows = [_row("int8", time=1.0, p_scheme="fp32", p_norms="keep", m_model_bytes=4e6, m_kl_mean_nats=0.0,
                 m_bpb_delta=0.0, m_top1_agreement=1.0, m_bits_per_byte=2.5, m_quantized_weights_bytes=0,
                 time_data=[1.0, 1.01, 0.99], m_window_nats=[1.7] * windows, **common)]
    for norms, extra in (("keep", 0.0), ("quantize", quantize_delta)):
        nats = [1.71 + extra + spread * (i % 2 * 2 - 1) * (norms == "quantize") for i in range(windows)]
        rows.append(_row("int8", time=1.0 / speed, p_scheme="w8a8", p_norms=norms, m_model_bytes=1e6,
                         m_kl_mean_nats=1e-3, m_bpb_delta=1e-3, m_top1_agreement=0.99, m_bits_per_byte=2.51,
                         m_quantized_weights_bytes=1.0e6, time_data=[t / speed for t in (1.0, 1.01, 0.99)],
                         m_window_nats=nats, **{**common, "m_quantized_weights_fp32_bytes": layers}))
    return rows


def test_int8_claims() -> None:
    no_outliers = _judge("int8-norms", _int8(columns=0))[0]
    assert no_outliers.status == NOT_TESTABLE and "6.7B" in no_outliers.reason and "--weights" in no_outliers.reason
    assert _status("int8-norms", _int8(columns=40, quantize_delta=0.2)) == HOLDS  # +22% perplexity
    assert _status("int8-norms", _int8(columns=40, quantize_delta=0.01)) == FAILS  # +1%
    assert _status("int8-norms", _int8(columns=40, quantize_delta=0.095, spread=0.2)) == INCONCLUSIVE
    assert _status("int8-memory", _int8()) == HOLDS
    assert _status("int8-memory", _int8(layers=2e6)) == FAILS
    assert _status("int8-speed", _int8(speed=1.5)) == HOLDS
    assert _status("int8-speed", _int8(speed=0.5)) == FAILS
    assert _status("int8-speed", _int8(speed=1.0)) == INCONCLUSIVE


def test_the_fastest_of_many_int8_configurations_is_judged_with_their_number_in_mind() -> None:
    """Picking the fastest of k configurations: each interval at 1 - 0.05/k (Bonferroni), so a configuration
    whose three rounds happened to run 12% fast holds alone but is inconclusive among seven."""
    rows = _int8()
    rows[0]["time_data"] = [1.0, 1.04, 0.96]  # fp32
    lucky = {**rows[1], "time_data": [t / 1.12 for t in (1.0, 1.04, 0.96)]}  # w8a8, norms kept
    alone = _judge("int8-speed", [rows[0], lucky])[0]
    assert alone.status == HOLDS and alone.interval[0] > 1.0
    slow = [{**lucky, "p_scheme": f"scheme{i}", "time_data": [2.0, 2.08, 1.92]} for i in range(6)]
    among_seven = _judge("int8-speed", [rows[0], lucky, *slow])[0]
    assert among_seven.status == INCONCLUSIVE and among_seven.interval[0] < 1.0 < among_seven.interval[1]
    assert "fastest of 7 configurations" in among_seven.figures and "w8a8" in among_seven.figures


def test_int8_speed_from_paired_rounds_where_the_records_have_them() -> None:
    """A machine that slows down during the int8 rounds: unpaired against the fp32 record the ratio is lost
    in the drift; paired with the fp32 rounds timed just before each, it is 1.2x every time."""
    rows = _int8()
    drifting = [1.0, 2.0, 1.5]
    rows[1] = {**rows[1], "time_data": drifting}
    unpaired = _judge("int8-speed", rows)[0]
    assert unpaired.status != HOLDS and "unpaired rounds" in unpaired.figures
    rows[1] = {**rows[1], "m_fp32_paired_seconds": [1.2 * t for t in drifting]}
    paired = _judge("int8-speed", rows)[0]
    assert paired.status == HOLDS and "paired rounds" in paired.figures
    assert paired.interval[0] == pytest.approx(1.2) and paired.interval[1] == pytest.approx(1.2)


# ---- LoRA ---------------------------------------------------------------------------------------------------

def _lora(lora_gain: float, rs_gain: float, noise: float = 0.002, after: float = 2.7) -> list[dict]:
    rows = [_row("lora", p_phase="variance", p_scaling=s, m_loglog_slope=v, p_ranks=[1, 2], m_variance=[1.0, 1.0],
                 p_dim=256) for s, v in (("lora", -1.0), ("rslora", 0.0))]
    for scaling, gain in (("lora", lora_gain), ("rslora", rs_gain)):
        for seed in range(3):
            for lr, penalty in ((1e-3, 0.0), (4e-3, 0.05)):  # the smaller rate is best for every arm
                for rank, value in ((2, after), (128, after - gain)):
                    rows.append(_row("lora", "gpt2-tiny", p_phase="finetune", p_scaling=scaling, p_rank=rank, p_lr=lr,
                                     p_seed=seed, p_alpha=16.0, p_steps=30, m_eval_bpb_before=2.83,
                                     m_eval_bpb_after=value + penalty + (noise * (seed - 1) if rank == 128 else 0),
                                     m_final_train_bpb=value, m_mean_grad_norm=0.5 / rank**0.5, m_unigram_bpb=4.5,
                                     m_scaling_factor=1.0, m_adapter_params=100))
    return rows


def test_lora_claims() -> None:
    identity = _judge("lora-variance", _lora(0.0, 0.05))[0]
    assert identity.status == HOLDS and "identity" in identity.figures
    assert _status("lora-stalls", _lora(0.0, 0.05)) == HOLDS
    assert _status("lora-stalls", _lora(0.05, 0.05)) == FAILS  # LoRA keeps improving with rank too
    assert _status("lora-stalls", _lora(0.01, 0.05, noise=0.02)) == INCONCLUSIVE
    assert _status("rslora-rank", _lora(0.0, 0.05)) == HOLDS
    assert _status("rslora-rank", _lora(0.0, -0.02)) == FAILS
    assert _status("lora-stalls", _lora(0.0, 0.05, after=4.3)) == NOT_TESTABLE  # learned too little
    assert _status("rslora-rank", [_row("nothing")]) == UNMEASURED


# ---- positions ----------------------------------------------------------------------------------------------

def _positions(rope_at_4x: float, rope_params: int = 0, noise: float = 0.01, val: float = 3.2) -> list[dict]:
    own = {"learned": 786_432, "sinusoidal": 0, "rope": rope_params}
    rows = [_row("positions", "gpt2-small", "analytic", p_phase="params", p_pos=p, m_params=124e6,
                 m_position_params=n) for p, n in own.items()]
    for seed in range(3):
        curves = {"rope": {"64": {"bits_per_byte": 3.1}, "256": {"bits_per_byte": rope_at_4x + noise * (seed - 1),
                                                                  "bits_per_byte_beyond_train_len": rope_at_4x}},
                  "sinusoidal": {"64": {"bits_per_byte": 3.2}, "256": {"bits_per_byte": 3.4,
                                                                       "bits_per_byte_beyond_train_len": 3.45}},
                  "learned": {"64": {"bits_per_byte": 3.0}, "256": {"error": "no positions past the table"}}}
        rows += [_row("positions", "gpt2-tiny-L64", p_phase="extrapolation", p_pos=p, p_train_len=64, p_steps=150,
                      p_seed=seed, p_embed_scale=p == "sinusoidal", m_by_length=c, m_val_bpb_at_train_len=val,
                      m_unigram_bpb=4.47) for p, c in curves.items()]
    return rows


def test_position_claims() -> None:
    assert _status("rope-params", _positions(3.15)) == HOLDS
    assert _status("rope-params", _positions(3.15, rope_params=4096)) == FAILS
    assert _status("rope-extrapolates", _positions(3.15)) == HOLDS
    assert _status("rope-extrapolates", _positions(3.6)) == FAILS
    assert _status("rope-extrapolates", _positions(3.39, noise=0.05)) == INCONCLUSIVE
    assert _status("rope-extrapolates", _positions(3.15, val=4.2)) == NOT_TESTABLE
    assert _status("learned-positions", _positions(3.15)) == HOLDS
    assert _status("learned-table", _positions(3.15)) == HOLDS
    evaluated = _positions(3.15)
    for r in evaluated:
        if r.get("p_pos") == "learned" and r["p_phase"] == "extrapolation":
            r["m_by_length"] = {"64": {"bits_per_byte": 3.0}, "256": {"bits_per_byte": 3.5}}
    assert _status("learned-table", evaluated) == FAILS


# ---- norms --------------------------------------------------------------------------------------------------

def _norms(post_val: float, pre_val: float = 3.7, warm_val: float = 3.8, noise: float = 0.01,
           rms_time: float = 0.8, fused: bool = True) -> list[dict]:
    rows = []
    for seed in range(3):
        for norm, warmup, val in (("post_ln", 0, post_val), ("pre_ln", 0, pre_val), ("post_ln", 50, warm_val)):
            v = val + (noise * (seed - 1) if (norm, warmup) == ("post_ln", 0) else 0.0)
            rows.append(_row("norms", "gpt2-tiny-L6", p_phase="stability", p_norm=norm, p_warmup=warmup, p_lr=1e-2,
                             p_seed=seed, p_steps=200, m_val_bpb=v, m_final_train_bpb=v, m_unigram_bpb=4.47,
                             m_failed=v > 4.37, m_train_bpb_curve=[v]))
    for backend, is_fused in (("torch-cpu", False), ("fused-engine", True)):
        if is_fused and not fused:
            continue
        for impl, t in (("layernorm", 1.0), ("rmsnorm", rms_time), ("torch_rmsnorm", rms_time * 1.1)):
            rows += [_row("norms", backend=backend, time=t * (1 + 0.01 * i), p_phase="speed", p_impl=impl, p_width=w,
                          p_rows=2048, p_fused=is_fused) for i, w in enumerate((256, 1024, 4096))]
    return rows


def test_norm_claims() -> None:
    assert _status("pre-ln", _norms(post_val=4.45)) == HOLDS
    assert _status("pre-ln", _norms(post_val=3.6)) == FAILS
    assert _status("pre-ln", _norms(post_val=3.8, noise=0.2)) == INCONCLUSIVE
    assert _status("pre-ln", _norms(post_val=4.45, pre_val=4.2)) == NOT_TESTABLE  # Pre-LN itself learned too little
    assert _status("post-ln-warmup", _norms(post_val=4.45)) == HOLDS
    assert _status("post-ln-warmup", _norms(post_val=3.8, warm_val=3.8)) == FAILS  # trains as well without it
    too_short = _judge("post-ln-warmup", _norms(post_val=4.45, warm_val=4.46))[0]  # fails with the warm-up too
    assert too_short.status == NOT_TESTABLE and "longer warm-up" in too_short.reason
    assert "post_ln (warm-up 50) seed 0" in too_short.reason
    assert _status("rmsnorm", _norms(4.45, rms_time=0.5)) == HOLDS
    assert _status("rmsnorm", _norms(4.45, rms_time=1.5)) == FAILS
    assert _status("rmsnorm", _norms(4.45, rms_time=1.0)) == INCONCLUSIVE
    eager_only = _judge("rmsnorm", _norms(4.45, rms_time=0.5, fused=False))[0]
    assert eager_only.status == NOT_TESTABLE and "fuses" in eager_only.reason


# ---- tying --------------------------------------------------------------------------------------------------

def _tying(saved_124m: int = 38_597_376) -> list[dict]:
    shapes = {"gpt2-small": (124_439_808, saved_124m), "llama-2-70b": (68_976_648_192, 262_144_000),
              "llama-3-70b": (70_553_706_496, 1_050_673_152)}
    return [_row("tying", name, "analytic", p_phase="params", m_saved_params=saved, m_tied_params=untied - saved,
                 m_untied_params=untied, m_saved_share_of_tied=saved / (untied - saved),
                 m_saved_share_of_untied=saved / untied) for name, (untied, saved) in shapes.items()]


def test_tying_claims() -> None:
    assert _status("tying-124m", _tying()) == HOLDS
    assert _status("tying-124m", _tying(38_000_000)) == FAILS
    arithmetic = _judge("tying-70b-arithmetic", _tying())[0]
    assert arithmetic.status == FAILS and "0.056%" in arithmetic.figures  # the article's own arithmetic: > 0.05%
    own = _judge("tying-70b-own", _tying())[0]
    assert own.status == FAILS and "0.38%" in own.figures and "1.49%" in own.figures
    assert _status("tying-70b-own", [_row("nothing")]) == UNMEASURED


def test_every_claim_is_registered_once_and_has_a_case() -> None:
    ids = [c.id for c in studies.all_claims()]
    assert len(ids) == len(set(ids))
    tested = {"kv-linear-cached", "kv-linear-uncached", "kv-grows", "kv-3bit-bytes", "kv-3bit-peak",
              "kv-3bit-accuracy", "kv-matched-bits", "int8-norms", "int8-memory", "int8-speed", "lora-variance",
              "lora-stalls", "rslora-rank", "rope-params", "rope-extrapolates", "learned-positions", "learned-table",
              "pre-ln", "post-ln-warmup", "rmsnorm", "tying-124m", "tying-70b-arithmetic", "tying-70b-own"}
    assert set(ids) == tested
    board = scoreboard(pd.DataFrame(), studies.all_claims())
    assert {r["status"] for r in board} == {UNMEASURED}


def test_report_opens_with_the_scoreboard_per_machine(tmp_path, unrasterised_figures) -> None:
    smoke = Path(__file__).parent / "data" / "smoke_results.json"
    data = json.loads(smoke.read_text())
    other = copy.deepcopy(data)
    other["machine_info"]["archbench"]["label"] = "Second <b>Machine</b>"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(data))
    b.write_text(json.dumps(other))
    html = build_report([a, b], tmp_path / "r.html").read_text()
    assert html.index('id="claims"') < html.index('id="summary"') < html.index('id="decode"')
    board = html[html.index('id="claims"'):html.index('id="summary"')]
    assert board.count("With a KV cache, decode time grows linearly") == 2  # one row per machine
    assert "Second &lt;b&gt;Machine&lt;/b&gt;" in board and "<b>Machine" not in board  # escaped
    assert 'href="#decode"' in board and "judged on" in board
