"""The claims scoreboard: every verdict function on hand-made records (holds, does not hold, not measured),
and the scoreboard in the report, per machine."""

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from bench import studies
from reports.build import build_report
from reports.verdicts import FAILS, HOLDS, MIXED, UNMEASURED, Verdict, scoreboard

M = "Test Machine"


def _row(study: str, variant: str = "v", backend: str = "torch-cpu", time: float = 1.0, **fields) -> dict:
    return {"machine": M, "study": study, "variant": variant, "backend": backend, "time_min": time,
            "time_data": [time], **fields}


def _decode(cached_exp: float, uncached_exp: float) -> list[dict]:
    rows = []
    for cache, exp in (("raw", cached_exp), ("none", uncached_exp)):
        for t in (64, 128, 256, 512):
            rows.append(_row("decode", time=1e-3 * t**exp, p_phase="decode", p_cache=cache, p_decode_tokens=t,
                             p_batch=1, p_dtype="fp32", m_bytes_read=1e6 * t, m_ceiling_Bps=1e10))
    return rows


def _kv(tq3_ppl: float) -> list[dict]:
    rows = [_row("kv_memory", "gpt2-small", "analytic", p_phase="capacity", m_params=124_439_808,
                 m_weight_bytes_fp16=248_879_616,
                 m_bytes_per_token={"raw-fp16": 36_864, "tq3": 7_488},
                 m_outgrows_weights_at_tokens={"raw-fp16": 6_751, "tq3": 33_237},
                 m_max_context_tokens={"raw-fp16": {"8": 1}, "tq3": {"8": 1}})]
    for kind, bits, ppl in (("raw-fp32", 32, 0.0), ("tq3", 3, tq3_ppl), ("uniform3", 3, 1.8)):
        rows.append(_row("kv_accuracy", "gpt2-tiny", p_cache=kind, p_bits=bits, m_ppl_delta_pct=ppl,
                         m_bytes_per_token=100, m_kl_mean_nats=ppl / 100, m_bpb_delta=ppl / 100))
    return rows


def _int8(quantize_extra_bpb: float, speed: float) -> list[dict]:
    rows = [_row("int8", time=1.0, p_scheme="fp32", p_norms="keep", p_decode_tokens=64, p_batch=1,
                 m_model_bytes=4e6, m_kl_mean_nats=0.0, m_bpb_delta=0.0, m_top1_agreement=1.0,
                 m_quantized_weights_bytes=0, m_quantized_weights_fp32_bytes=0)]
    for norms, extra in (("keep", 0.0), ("quantize", quantize_extra_bpb)):
        rows.append(_row("int8", time=1.0 / speed, p_scheme="w8a8", p_norms=norms, p_decode_tokens=64, p_batch=1,
                         m_model_bytes=1e6, m_kl_mean_nats=1e-3 + extra, m_bpb_delta=1e-3 + extra,
                         m_top1_agreement=0.99, m_quantized_weights_bytes=1.0e6, m_quantized_weights_fp32_bytes=3.9e6))
    return rows


def _lora(lora_slope: float, rs_top: float) -> list[dict]:
    rows = [_row("lora", p_phase="variance", p_scaling=s, m_loglog_slope=v, p_ranks=[1, 2], m_variance=[1.0, 1.0])
            for s, v in (("lora", lora_slope), ("rslora", 0.0))]
    for scaling, low, top in (("lora", 2.6, 2.55), ("rslora", 2.6, rs_top)):
        rows += [_row("lora", p_phase="finetune", p_scaling=scaling, p_rank=r, m_final_train_bpb=v)
                 for r, v in ((2, low), (512, top))]
    return rows


def _positions(rope_at_4x: float, rope_params: int = 0) -> list[dict]:
    own = {"learned": 786_432, "sinusoidal": 0, "rope": rope_params}
    rows = [_row("positions", "gpt2-small", "analytic", p_phase="params", p_pos=p, m_params=124e6,
                 m_position_params=n) for p, n in own.items()]
    curves = {"rope": {"64": {"bits_per_byte": 3.1}, "256": {"bits_per_byte": rope_at_4x}},
              "sinusoidal": {"64": {"bits_per_byte": 3.2}, "256": {"bits_per_byte": 3.4}},
              "learned": {"64": {"bits_per_byte": 3.0}, "256": {"error": "no positions past the table"}}}
    rows += [_row("positions", p_phase="extrapolation", p_pos=p, p_train_len=64, m_by_length=c)
             for p, c in curves.items()]
    return rows


def _tying(share: float, share_70b: float = 0.0038) -> list[dict]:
    return [_row("tying", "gpt2-small", "analytic", p_phase="params", m_saved_params=38_597_376,
                 m_saved_share_of_tied=share, m_saved_share_of_untied=0.24),
            _row("tying", "llama-2-70b", "analytic", p_phase="params", m_saved_params=262_144_000,
                 m_saved_share_of_tied=share_70b, m_saved_share_of_untied=share_70b)]


def _norms(post_failed: bool, rms_time: float, pre_failed: bool = False) -> list[dict]:
    rows = []
    for norm, failed, final in (("post_ln", post_failed, 4.5), ("pre_ln", pre_failed, 4.1)):
        rows.append(_row("norms", p_phase="stability", p_norm=norm, p_seed=0, p_lr=1e-2, p_steps=100,
                         m_failed=failed, m_final_train_bpb=final, m_unigram_bpb=4.47))
    for impl, t in (("layernorm", 1.0), ("rmsnorm", rms_time), ("torch_rmsnorm", rms_time * 1.1)):
        rows += [_row("norms", time=t, p_phase="speed", p_impl=impl, p_width=w) for w in (256, 1024)]
    return rows


CASES = {  # claim id -> (records for "holds", records for "does not hold")
    "kv-linear": (_decode(1.0, 2.0), _decode(1.9, 2.0)),
    "kv-3bit": (_kv(1.0), None),  # the memory half is exact bytes; its failing case is "mixed", below
    "int8-norms": (_int8(0.05, 1.0), _int8(-0.001, 1.0)),
    "int8-size-speed": (_int8(0.0, 1.5), None),
    "lora-variance": (_lora(-1.0, 2.4), _lora(-0.5, 2.4)),
    "rslora-rank": (_lora(-1.0, 2.4), _lora(-1.0, 2.7)),
    "rope": (_positions(3.15), _positions(3.6, rope_params=4096)),
    "tying": (_tying(0.31), _tying(0.10, share_70b=0.05)),
    "pre-ln": (_norms(True, 0.8), _norms(False, 0.8, pre_failed=True)),
    "rmsnorm": (_norms(True, 0.8), _norms(True, 1.5)),
    "kv-grows": (_kv(1.0), None),
    "learned-positions": (_positions(3.15), None),
}


def _judge(claim_id: str, rows: list[dict]) -> Verdict:
    claim = next(c for c in studies.all_claims() if c.id == claim_id)
    return claim.judge(pd.DataFrame(rows))


@pytest.mark.parametrize("claim_id", list(CASES))
def test_verdicts_on_hand_made_records(claim_id: str) -> None:
    holds, fails = CASES[claim_id]
    verdict = _judge(claim_id, holds)
    assert verdict.status == HOLDS, verdict
    assert verdict.figures
    if fails is not None:
        assert _judge(claim_id, fails).status == FAILS
    other_study = [_row("nothing", p_phase="x")]
    assert _judge(claim_id, other_study).status == UNMEASURED


def test_partly_holding_claims_are_mixed() -> None:
    assert _judge("kv-3bit", _kv(10.8)).status == MIXED  # 4.9x smaller, but +10.8% perplexity
    assert _judge("int8-size-speed", _int8(0.0, 0.6)).status == MIXED  # smaller, not faster
    assert _judge("int8-norms", _int8(0.001, 1.0)).status == MIXED  # worse, but slightly
    assert _judge("kv-linear", _decode(1.0, 1.2)).status == MIXED  # linear cache, flat recompute
    assert _judge("rope", _positions(3.6)).status == MIXED  # no parameters, but extrapolates worse
    assert _judge("pre-ln", _norms(False, 0.8)).status == MIXED  # no failures; Pre-LN ends lower


def test_every_claim_is_registered_once_and_covers_the_seed() -> None:
    ids = [c.id for c in studies.all_claims()]
    assert len(ids) == len(set(ids)) == 12
    assert set(CASES) == set(ids)
    board = scoreboard(pd.DataFrame(), studies.all_claims())
    assert {r["status"] for r in board} == {UNMEASURED}


def test_report_opens_with_the_scoreboard_per_machine(tmp_path) -> None:
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
    assert board.count("A KV cache turns decode") == 2  # one row per machine
    assert "Second &lt;b&gt;Machine&lt;/b&gt;" in board and "<b>Machine" not in board  # escaped
    assert 'href="#decode"' in board
