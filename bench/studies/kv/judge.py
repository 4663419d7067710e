"""The KV-cache study's judge half: its claims and its regression gates.

Gates, all machine-independent: exact bytes per token of every kind equal the baseline's; TurboQuant's
3-bit kind at least 4.9x smaller than raw fp16; the accuracy figures (KL against the raw cache) at most
25% (+1e-4) above the baseline's.
"""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext, exact_gate, kl_gate
from reports.verdicts import FAILS, HOLDS, MIXED, UNMEASURED, Claim, Verdict, unmeasured

from .report import RAW_FP16, RAW_FP32, kind_with, kv_accuracy, kv_capacity, kv_peak

TQ3_COMPRESSION_MIN = 4.9
THREE_BIT_RATIO_MIN = 4.5  # the claim says 5-6x; 4.5x and more counts as holding
THREE_BIT_PPL_MAX = 2.0  # perplexity within +2% counts as "little loss"


def kv_cache_grows(df: pd.DataFrame) -> Verdict:
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
                          f"{int(fp16.loc[largest, 'bytes_per_token']):,} B per token")


def kv_3bit(df: pd.DataFrame) -> Verdict:
    """TurboQuant at 3 bits >= 4.5x smaller than fp16 (the claim says 5-6x) with perplexity within +2%."""
    tq3, uniform3 = kind_with("turboquant", 3), kind_with("uniform", 3)
    cap, acc = kv_capacity(df), kv_accuracy(df)
    if cap.empty and acc.empty:
        return unmeasured("KV-cache memory or accuracy records")
    parts, ok_memory, ok_accuracy = [], None, None
    if not cap.empty and {tq3, RAW_FP16} <= set(cap["kind"]):
        row = cap[cap["variant"] == cap["variant"].iloc[0]].set_index("kind")
        ratio = row.loc[RAW_FP16, "bytes_per_token"] / row.loc[tq3, "bytes_per_token"]
        ok_memory = ratio >= THREE_BIT_RATIO_MIN
        parts.append(f"{tq3} is {ratio:.2f}x smaller than fp16 ({cap['variant'].iloc[0]}, exact bytes)")
    peak = kv_peak(df)
    if not peak.empty and (peak["p_cache"] == tq3).any():
        best = peak[peak["p_cache"] == tq3].sort_values("p_tokens").iloc[-1]
        if best["saving_vs_fp16"] == best["saving_vs_fp16"]:
            parts.append(f"{best['saving_vs_fp16']:.2f}x in measured peak memory at {int(best['p_tokens']):,} tokens")
    if not acc.empty and (acc["p_cache"] == tq3).any():
        ref = acc[acc["variant"] == acc["variant"].iloc[0]].set_index("p_cache")
        delta = ref.loc[tq3, "m_ppl_delta_pct"]
        ok_accuracy = delta <= THREE_BIT_PPL_MAX
        uniform = f", {uniform3} {ref.loc[uniform3, 'm_ppl_delta_pct']:+.1f}%" if uniform3 in ref.index else ""
        parts.append(f"perplexity {delta:+.1f}% on {acc['variant'].iloc[0]}{uniform}")
    text = "; ".join(parts)
    if ok_memory is None or ok_accuracy is None:
        return Verdict(MIXED if (ok_memory or ok_accuracy) else UNMEASURED, text + " (only part measured)")
    if ok_memory and ok_accuracy:
        return Verdict(HOLDS, text)
    return Verdict(MIXED if (ok_memory or ok_accuracy) else FAILS, text)


CLAIMS = (
    Claim("kv-grows", "The KV cache grows with layers, length and width, and can outgrow the weights.", "kv",
          kv_cache_grows),
    Claim("kv-3bit", "A 3-bit KV cache (TurboQuant) cuts cache memory 5-6x with little loss of accuracy.", "kv",
          kv_3bit),
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
