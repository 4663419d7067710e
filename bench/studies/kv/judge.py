"""The KV-cache study's judge half: the article's claims in their parts, and the regression gates.

The article: a 3-bit KV cache (TurboQuant) "cuts cache memory 5-6x with little loss of accuracy".
Memory is judged at its lower end, 5x, on exact bytes and on the measured peak of the longest context
probed; accuracy on the trained reference model (and the user's checkpoint with --weights), from the
perplexity change of every held-out window, within +2%. No accuracy is judged on random weights.
TurboQuant against the KIVI-style uniform baseline is judged at equal bits per coordinate (metadata
included): TurboQuant's loss interpolated, window by window, between its two kinds around the uniform
kind's bits; both families read the same exact recent keys.

Gates, all machine-independent: exact bytes per token of every kind equal the baseline's; TurboQuant's
3-bit kind at least 4.9x smaller than raw fp16; the accuracy figures (KL against the raw cache) at most
25% (+1e-4) above the baseline's.
"""

from __future__ import annotations

import math

import pandas as pd

from reports.gates import Gate, GateContext, exact_gate, kl_gate
from reports.page import text_or
from reports.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Claim,
    Verdict,
    judge_interval,
    learned_something,
    mean_interval,
    not_testable,
    unmeasured,
)

from .report import RAW_FP16, RAW_FP32, kind_with, kv_accuracy, kv_capacity, kv_peak

TQ3_COMPRESSION_MIN = 4.9  # the regression gate (exact bytes at head_dim 64 are 4.92x)
ARTICLE_RATIO = 5.0  # "5-6x": judged at its lower end
LITTLE_LOSS_PPL_PCT = 2.0  # "little loss": perplexity within +2%


def grows(df: pd.DataFrame) -> Verdict:
    """Bytes per token are 2 x layers x KV heads x head_dim x element size, and the cache overtakes the weights."""
    cap = kv_capacity(df)
    if cap.empty:
        return unmeasured("KV capacity records")
    fp16 = cap[cap["kind"] == RAW_FP16].drop_duplicates("variant").set_index("variant")
    if fp16.empty:
        return unmeasured("raw fp16 capacity records")
    name = "gpt2-small" if "gpt2-small" in fp16.index else fp16.index[0]
    row = fp16.loc[name]
    largest = fp16["bytes_per_token"].idxmax()
    return Verdict(HOLDS, f"{name}: {int(row['bytes_per_token']):,} B per token in fp16, more than its fp16 weights "
                          f"beyond {int(row['outgrows_weights_at']):,} tokens; {largest}: "
                          f"{int(fp16.loc[largest, 'bytes_per_token']):,} B per token",
                   model=f"{len(fp16)} shapes from {fp16.index[0]} to {fp16.index[-1]}, exact bytes")


def three_bit_bytes(df: pd.DataFrame) -> Verdict:
    """TurboQuant at 3 bits against raw fp16, every byte counted, at least 5x (at GPT-2's head_dim)?"""
    tq3, cap = kind_with("turboquant", 3), kv_capacity(df)
    if cap.empty or not {tq3, RAW_FP16} <= set(cap["kind"]):
        return unmeasured(f"capacity records of {tq3} and {RAW_FP16}")
    per_shape = cap.drop_duplicates(["variant", "kind"]).pivot(index="variant", columns="kind",
                                                               values="bytes_per_token")
    ratios = (per_shape[RAW_FP16] / per_shape[tq3]).dropna()
    name = "gpt2-small" if "gpt2-small" in ratios.index else ratios.index[0]
    others = sorted({round(float(r), 2) for v, r in ratios.items() if v != name})
    beside = "; other shapes: " + ", ".join(f"{r:.2f}x" for r in others) if others else ""
    return Verdict(HOLDS if ratios[name] >= ARTICLE_RATIO else FAILS,
                   f"{tq3} holds {ratios[name]:.2f}x fewer bytes than {RAW_FP16} (codes plus an fp16 norm per "
                   f"vector){beside}; the article: 5-6x",
                   model=f"{name}'s shape, exact bytes per token")


def three_bit_peak(df: pd.DataFrame) -> Verdict:
    """The measured peak memory of the longest context probed, TurboQuant 3-bit against raw fp16: >= 5x?"""
    tq3, peak = kind_with("turboquant", 3), kv_peak(df)
    if peak.empty or not (peak["p_cache"] == tq3).any():
        return unmeasured(f"peak-memory probes of {tq3}")
    rows = peak[(peak["p_cache"] == tq3) & peak["saving_vs_fp16"].notna()]
    if rows.empty:
        return unmeasured(f"peak-memory probes of {tq3} beside {RAW_FP16}")
    best = rows.sort_values("p_tokens").iloc[-1]
    measure = "resident set growth" if best["p_phase"] == "rss" else "CUDA allocator peak"
    return Verdict(HOLDS if best["saving_vs_fp16"] >= ARTICLE_RATIO else FAILS,
                   f"{best['saving_vs_fp16']:.2f}x less peak memory than {RAW_FP16} at {int(best['p_tokens']):,} "
                   f"tokens (exact bytes held: {best['exact_saving_vs_fp16']:.2f}x); the article: 5-6x",
                   model=f"{best['variant']} ({best['p_pos']} positions, random weights: memory only), batch "
                         f"{int(best['p_batch'])}, {measure} on {best['backend']}")


def accuracy_verdicts(df: pd.DataFrame, kind: str, threshold_pct: float, claim: str) -> list[Verdict]:
    """The perplexity change of `kind` against the raw fp32 cache on each evaluated model: the mean over
    held-out windows of each window's change, with its 95% interval, below `threshold_pct`?"""
    acc = kv_accuracy(df)
    if acc.empty or not (acc["p_cache"] == kind).any():
        return [unmeasured(f"accuracy records of {kind}")]
    out = []
    for variant, by in _models_with(acc, kind):
        row = by.loc[kind]
        model, reason = _model_or_reason(by, kind, variant)
        if reason:
            out.append(not_testable(f"{kind}: perplexity {row['m_ppl_delta_pct']:+.1f}%", reason, model))
            continue
        deltas = row.get("m_window_nats_delta")
        if not isinstance(deltas, list) or len(deltas) < 2:
            out.append(Verdict(INCONCLUSIVE, f"{kind}: perplexity {row['m_ppl_delta_pct']:+.2f}% (one figure: the "
                               "records predate per-window figures)", model=model))
            continue
        mean, low, high = mean_interval(deltas)
        status = judge_interval(to_pct(low), to_pct(high), threshold_pct, claimed_above=False)
        exact = f" (the latest {_exact_keys(row)}-token key group exact)" if _exact_keys(row) else ""
        out.append(Verdict(status, f"{kind}{exact}: perplexity {to_pct(mean):+.2f}% against the raw fp32 cache; "
                                   f"{claim}",
                           model=model, n=len(deltas), interval=(to_pct(low), to_pct(high)), unit="% perplexity"))
    return out or [unmeasured(f"accuracy records of {kind} beside {RAW_FP32}")]


def _models_with(acc: pd.DataFrame, kind: str) -> list[tuple[str, pd.DataFrame]]:
    """Per evaluated model that measured `kind` beside the raw fp32 cache: its rows indexed by cache kind."""
    out = []
    for variant, part in acc.groupby("variant", sort=False):
        by = part.drop_duplicates("p_cache").set_index("p_cache")
        if kind in by.index and RAW_FP32 in by.index:
            out.append((str(variant), by))
    return out


def to_pct(nats: float) -> float:
    """A mean change of nats per token as a perplexity change in percent."""
    return (math.exp(nats) - 1) * 100


def _model_or_reason(by: pd.DataFrame, kind: str, variant: str) -> tuple[str, str | None]:
    """The judged model's description and, when the raw cache's loss does not beat unigram by the margin,
    why the effect cannot show itself."""
    row = by.loc[kind]
    model = text_or(row.get("p_model_description"), str(variant))
    unigram = row.get("m_unigram_bpb")
    if isinstance(unigram, float) and unigram == unigram:
        return model, learned_something({str(variant): (float(by.loc[RAW_FP32, "m_bits_per_byte"]), unigram)})
    return model, None


def _exact_keys(row: pd.Series) -> int:
    value = row.get("p_exact_key_group", 0)
    return int(value) if isinstance(value, int | float) and value == value else 0


def matched_bits(df: pd.DataFrame) -> list[Verdict]:
    """At the bits per coordinate of the uniform 3-bit kind, does TurboQuant lose less? TurboQuant's
    per-window loss is interpolated linearly in bits between its two kinds around that point (exact where
    one sits on it), paired by window with the uniform kind's; holds when the whole 95% interval of the
    difference is below zero."""
    uniform, acc = kind_with("uniform", 3), kv_accuracy(df)
    if acc.empty or not (acc["p_cache"] == uniform).any():
        return [unmeasured(f"accuracy records of {uniform}")]
    out = []
    for variant, by in _models_with(acc, uniform):
        model, reason = _model_or_reason(by, uniform, variant)
        u = by.loc[uniform]
        target = float(u["bits_axis"])
        tq = by[(by["family"] == "turboquant") & by["m_window_nats_delta"].map(lambda w: isinstance(w, list))]
        tq = tq.sort_values("bits_axis")
        below, above = tq[tq["bits_axis"] <= target], tq[tq["bits_axis"] >= target]
        if reason:
            out.append(not_testable(f"{uniform} at {target:.2f} bits per coordinate", reason, model))
            continue
        if below.empty or above.empty or not isinstance(u["m_window_nats_delta"], list):
            span = f"{tq['bits_axis'].min():.2f}..{tq['bits_axis'].max():.2f}" if not tq.empty else "none"
            out.append(not_testable(f"{uniform} at {target:.2f} bits per coordinate; TurboQuant kinds measured: "
                                    f"{span} bits", "no TurboQuant kinds on both sides of the uniform kind's bits "
                                    "(measure every kind: the default accuracy sweep does)", model))
            continue
        lo_row, hi_row = below.iloc[-1], above.iloc[0]
        if {_exact_keys(lo_row), _exact_keys(hi_row)} != {_exact_keys(u)}:
            out.append(Verdict(INCONCLUSIVE, "the two families did not read the same exact recent keys",
                               model=model))
            continue
        span = hi_row["bits_axis"] - lo_row["bits_axis"]
        weight = (target - lo_row["bits_axis"]) / span if span else 0.0
        tq_windows = [(1 - weight) * a + weight * b for a, b in zip(lo_row["m_window_nats_delta"],
                                                                   hi_row["m_window_nats_delta"], strict=True)]
        diffs = [t - w for t, w in zip(tq_windows, u["m_window_nats_delta"], strict=True)]  # nats per token
        mean, low, high = mean_interval(diffs)
        at = (lo_row.name if lo_row.name == hi_row.name
              else f"{lo_row.name} and {hi_row.name} interpolated")
        exact = f"; both read the latest {_exact_keys(u)}-token key group exact" if _exact_keys(u) else ""
        out.append(Verdict(judge_interval(to_pct(low), to_pct(high), 0.0, claimed_above=False),
                           f"at {target:.2f} bits per coordinate (metadata included) TurboQuant ({at}) changes "
                           f"perplexity {to_pct(mean):+.2f}% relative to {uniform}{exact}", model=model,
                           n=len(diffs), interval=(to_pct(low), to_pct(high)), unit="% perplexity vs uniform"))
    return out or [unmeasured(f"accuracy records of {uniform} beside {RAW_FP32}")]


def three_bit_accuracy(df: pd.DataFrame) -> list[Verdict]:
    return accuracy_verdicts(df, kind_with("turboquant", 3), LITTLE_LOSS_PPL_PCT,
                             f"little loss: within +{LITTLE_LOSS_PPL_PCT:g}%")


CLAIMS = (
    Claim("kv-grows", "The KV cache grows with layers, length and width, and can outgrow the weights.", "kv", grows),
    Claim("kv-3bit-bytes", "A 3-bit KV cache (TurboQuant) holds 5-6x fewer bytes than fp16.", "kv", three_bit_bytes),
    Claim("kv-3bit-peak", "A 3-bit KV cache cuts the measured memory of a long context 5-6x.", "kv", three_bit_peak),
    Claim("kv-3bit-accuracy", "A 3-bit KV cache loses little accuracy.", "kv", three_bit_accuracy),
    Claim("kv-matched-bits", "At equal bits per coordinate, TurboQuant loses less accuracy than a KIVI-style uniform "
          "cache.", "kv", matched_bits),
)


def gates(ctx: GateContext) -> list[Gate]:
    """Exact bytes, the 3-bit compression and the accuracy of every kind against the baseline."""
    out: list[Gate] = []
    base_df, cur_df = ctx.fullest_base, ctx.cur_df
    base_cap, cur_cap = kv_capacity(base_df), kv_capacity(cur_df)
    if not base_cap.empty and not cur_cap.empty:
        cur = cur_cap.drop_duplicates(["variant", "kind"]).set_index(["variant", "kind"])["bytes_per_token"]
        for r in base_cap.drop_duplicates(["variant", "kind"]).itertuples():
            out.append(exact_gate("kv exact bytes", f"{r.variant} {r.kind}", cur.get((r.variant, r.kind)),
                                  r.bytes_per_token))
        small = cur_cap[cur_cap["variant"] == cur_cap["variant"].iloc[0]].set_index("kind")["bytes_per_token"]
        tq3 = kind_with("turboquant", 3)
        if {tq3, RAW_FP16} <= set(small.index):
            ratio = small[RAW_FP16] / small[tq3]
            out.append(Gate("kv compression", f"{cur_cap['variant'].iloc[0]} {tq3} vs {RAW_FP16}", f"{ratio:.2f}x",
                            f">= {TQ3_COMPRESSION_MIN}x", bool(ratio >= TQ3_COMPRESSION_MIN)))
    base_acc, cur_acc = kv_accuracy(base_df), kv_accuracy(cur_df)
    if not base_acc.empty and not cur_acc.empty:
        cur = cur_acc.set_index(["variant", "p_cache"])["m_kl_mean_nats"]
        for r in base_acc[base_acc["p_cache"] != RAW_FP32].itertuples():
            if (r.variant, r.p_cache) in cur.index:
                out.append(kl_gate("kv accuracy", f"{r.variant} {r.p_cache} KL", r.m_kl_mean_nats,
                                   cur[(r.variant, r.p_cache)]))
    return out
