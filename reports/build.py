"""Build the self-contained HTML report from one or many results files."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

from . import analysis, claims, figures
from .analysis import TIME as TIME_COL
from .load import Results, load, to_frame


@dataclass
class Figure:
    title: str
    png_base64: str
    caption: str


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""  # how to read it, shown under the table


@dataclass
class Section:
    """One study's part of the report; later studies add their own section builders."""

    anchor: str
    title: str
    intro: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_figures(self, df: pd.DataFrame, specs: tuple) -> None:
        """Render each (title, figure function, caption); a function with nothing to draw adds nothing."""
        for title, make, caption in specs:
            png = make(df)
            if png:
                self.figures.append(Figure(title, png, caption))


def fmt(value: object, digits: int = 3) -> str:
    """Human-readable cell text (numbers with `digits` significant digits)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _bytes(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return str(value)


def decode_section(df: pd.DataFrame) -> Section | None:
    """The decode study: complexity, cache pay-off, roofline, latency by position, transformers."""
    d = analysis.decode_rows(df)
    p = analysis.peers(df)
    if d.empty and p.empty:
        return None
    section = Section("decode", "Decode scaling: KV cache vs recomputation",
                      "Greedy decode of T tokens after an untimed prompt prefill, with a preallocated KV cache "
                      "(each step attends over the cache: O(T) work per token, O(T^2) in all for attention but "
                      "linear while weights dominate) and without one (each step recomputes the whole prefix). "
                      "Slopes are least-squares fits of log time on log T over the upper half of the lengths; "
                      "the bound assumes every weight and the cache up to the position is read once per step "
                      "at the bandwidth measured on this machine.")
    section.add_figures(df, (
        ("Total decode time vs length", figures.decode_scaling,
         "Log-log: a slope of 1 is linear growth, 2 quadratic. Legends give the fitted slope."),
        ("Per-token latency vs position", figures.latency_vs_position,
         "One decode step timed (device synchronised) at positions through the longest run."),
        ("Throughput vs the bandwidth bound", figures.roofline,
         "Cached decode tokens/s (solid) and the roofline bound from the measured memory bandwidth (dashed)."),
        ("Backends side by side", figures.backends,
         "The same weights decoded by every backend that ran (torch eager, onnxruntime on the exported graph)."),
        ("archbench vs transformers", figures.peers,
         "Same weights, greedy, same lengths; transformers' GPT2LMHeadModel.generate vs ours, prefill included."),
    ))
    fits = analysis.slopes(df)
    if not fits.empty:
        section.tables.append(Table(
            "Fitted complexity (log-log slope of decode time vs T)",
            ["machine", "variant", "backend", "batch", "cache", "slope (upper half)", "± stderr", "lengths fitted",
             "slope (all lengths)", "slope (two longest)"],
            [[r.machine, r.variant, r.backend, fmt(r.p_batch), r.p_cache, fmt(r.slope), fmt(r.slope_stderr),
              ", ".join(map(str, r.slope_lengths)), fmt(r.slope_all), fmt(r.end_slope)] for r in fits.itertuples()]))
    pay = analysis.cache_payoff(df)
    if not pay.empty:
        section.tables.append(Table(
            "Where the cache pays",
            ["machine", "variant", "backend", "batch", "speed-up at longest T (fastest rounds)",
             "same, paired rounds (median)", "longest T", "first T where cached is faster"],
            [[r.machine, r.variant, r.backend, fmt(r.p_batch), f"{r.speedup_longest:.2f}x",
              f"{r.speedup_paired:.2f}x" if r.speedup_paired == r.speedup_paired else "not paired", fmt(r.longest),
              ("≤ " if r.pays_from_first else "") + fmt(r.break_even) if r.break_even else "never (in range)"]
             for r in pay.itertuples()],
            note="Paired rounds: each uncached round at the longest length is timed right after a cached run of "
                 "the same length, and the speed-up is the median of the per-round ratios (both sides see the "
                 "machine in the same state; the regression gate uses it)."))
    if not d.empty:
        cached = d[d["p_cache"] == "raw"].sort_values(["machine", "variant", "backend", "p_batch", "p_decode_tokens"])
        section.tables.append(Table(
            "Cached decode against the measured ceiling",
            ["machine", "variant", "backend", "batch", "T", "tokens/s", "bound tokens/s", "achieved bandwidth",
             "of session ceiling", "ceiling probed beside rounds", "of probed ceiling", "KV cache", "weight layout"],
            [[r.machine, r.variant, r.backend, fmt(r.p_batch), fmt(r.p_decode_tokens), fmt(r.tokens_per_s),
              fmt(r.bound_tokens_per_s), f"{r.achieved_Bps / 1e9:.1f} GB/s", f"{100 * r.bandwidth_fraction:.0f}%",
              *((f"{r.probed_ceiling_Bps / 1e9:.1f} GB/s", f"{100 * r.probed_fraction:.0f}%")
                if r.probed_fraction == r.probed_fraction else ("not probed", "")),
              _bytes(r.m_kv_bytes), r.p_weight_layout] for r in cached.itertuples()],
            note="The session ceiling is the fastest read measured once, when the session first used the device "
                 "(fastest round against it). A shared machine's bandwidth moves by tens of percent within "
                 "seconds, so each cached round is also set against the read bandwidth probed right before and "
                 "right after it (the mean of the two; the median over rounds is shown)."))
    targets = analysis.decode_targets(df)
    if not targets.empty:
        section.tables.append(Table(
            f"Targets: {analysis.TARGET_VARIANT}, fp32, batch 1, on the CPU",
            ["machine", "backend", "target", "measured", "met"],
            [[r.machine, r.backend, r.target, r.measured, "yes" if r.met else "no"] for r in targets.itertuples()]))
    layouts = analysis.layout_choices(df)
    if not layouts.empty:
        candidates = [c for c in layouts.columns if c.endswith(" s/step")]
        headers = [c.replace(" s/step", " ms/step") for c in candidates]
        section.tables.append(Table(
            "Weight layout per model (tuned: cached decode steps timed in each layout, the fastest used)",
            ["machine", "variant", "backend", "batch", "chosen", *headers],
            [[r["machine"], r["variant"], r["backend"], fmt(r["batch"]), r["chosen"],
              *[f"{1e3 * r[c]:.2f}" if pd.notna(r[c]) else "" for c in candidates]] for _, r in layouts.iterrows()]))
    if not p.empty:
        section.tables.append(Table(
            "archbench vs transformers (same weights, greedy)",
            ["machine", "variant", "backend", "cache", "T", "archbench tokens/s", "archbench weight layout",
             "transformers tokens/s", "ratio", "identical tokens"],
            [[r.machine, r.variant, r.backend, r.p_cache, fmt(r.p_decode_tokens), fmt(r.ours_tokens_per_s),
              r.ours_layout, fmt(r.transformers_tokens_per_s), f"{r.ratio:.2f}x", fmt(r.tokens_identical)]
             for r in p.itertuples()]))
    side = analysis.backends_side_by_side(df)
    if not side.empty:
        keys = ["machine", "variant", "p_cache", "p_decode_tokens", "p_batch"]
        value_cols = [c for c in side.columns if c not in keys]
        section.tables.append(Table(
            "Backends side by side (tokens/s; ratios to torch-cpu)",
            ["machine", "variant", "cache", "T", "batch", *value_cols],
            [[r["machine"], r["variant"], r["p_cache"], fmt(int(r["p_decode_tokens"])), fmt(int(r["p_batch"])),
              *[(f"{r[c]:.2f}x" if "/" in c else fmt(r[c])) for c in value_cols]] for _, r in side.iterrows()]))
    agree = analysis.token_agreement(df)
    if not agree.empty and not agree["identical"].all():
        bad = agree[~agree["identical"]]
        section.notes.append(f"Cached and uncached decode produced different tokens in {len(bad)} case(s).")
    return section


def kv_section(df: pd.DataFrame) -> Section | None:
    """The KV-cache studies: bytes, capacity, speed, accuracy of quantized caches."""
    mem, acc, cap = analysis.kv_memory(df), analysis.kv_accuracy(df), analysis.kv_capacity(df)
    peak = analysis.kv_peak(df)
    if mem.empty and acc.empty and cap.empty and peak.empty:
        return None
    section = Section("kv", "Quantized KV caches: TurboQuant vs raw and a uniform baseline",
                      "TurboQuant (random rotation + Lloyd-Max codebook for the rotated coordinates, packed codes "
                      "plus an fp16 norm per vector) against raw fp32/fp16/bf16 caches and a KIVI-style min-max "
                      "uniform quantizer (keys per channel over 32-token groups, values per token) at equal bits. "
                      "Bytes are exact counts of what each cache holds. Accuracy is measured on the trained "
                      "reference model over held-out standard-library files: every query attends to the stored "
                      "(quantized) keys and values, as in decoding.")
    section.add_figures(df, (
        ("Measured peak memory of a filled cache", figures.kv_peak_memory,
         "Solid: the measured peak growth (fresh process each); dotted: the exact bytes the cache holds. The gap "
         "is transient: raw fp16 is read back in fp32 one layer at a time, quantized caches dequantize in chunks."),
        ("Bytes per token", figures.kv_bytes, "Exact bytes each kind adds per token, every layer, batch 1."),
        ("Cache size vs length", figures.kv_bytes_vs_length,
         "Exact bytes per token times length; the dotted line is the fp16 weights."),
        ("Measured distortion vs the paper", figures.kv_distortion,
         "Mean squared error of unit vectors after quantize/dequantize, 65,536 Gaussian directions, head_dim 64."),
        ("Accuracy against bytes", figures.kv_accuracy_vs_bytes,
         "Lower is better on both axes; equal x means equal memory."),
        ("Error by layer", figures.kv_layer_error,
         "Errors compound: a layer's input already carries the earlier layers' errors."),
    ))
    for variant, part in (acc.groupby("variant", sort=False) if not acc.empty else ()):
        what = "the trained reference model" if not str(variant).startswith("checkpoint:") else "the checkpoint"
        section.tables.append(Table(
            f"Accuracy on {what} ({variant}, {int(part['p_windows'].iloc[0])} windows of "
            f"{int(part['p_seq_len'].iloc[0])} tokens)",
            ["cache", "bits", "bytes/token", "bits per byte", "Δ bits per byte", "perplexity Δ", "KL (nats)",
             "top-1 agreement", "max |Δ logit|"],
            [[r.p_cache, fmt(r.p_bits), fmt(r.m_bytes_per_token), f"{r.m_bits_per_byte:.4f}",
              f"{r.m_bpb_delta:+.4f}", f"{r.m_ppl_delta_pct:+.2f}%", fmt(r.m_kl_mean_nats),
              f"{100 * r.m_top1_agreement:.1f}%", fmt(r.m_max_abs_logit_delta)] for r in part.itertuples()]))
        by_kind = part.drop_duplicates("p_cache").set_index("p_cache")
        kinds = ("tq2", "tq3", "tq4", "uniform2", "uniform3", "uniform4")
        cells = [f"{k}: {by_kind.loc[k, 'm_ppl_delta_pct']:+.1f}%" for k in kinds if k in by_kind.index]
        section.notes.append(
            "Against the paper's claims: TurboQuant reports no LongBench loss at 3.5 bits on Llama-3.1-8B and "
            "-0.6 points at 2.5 bits; a public GPT-2 reimplementation reports +7.6% perplexity at 3 bits. Measured "
            f"here on {variant} (perplexity change vs the raw fp32 cache): " + "; ".join(cells) + ".")
    if not mem.empty:
        section.tables.append(Table(
            "Memory and decode speed by cache kind",
            ["machine", "variant", "backend", "cache", "T", "batch", "bytes/token", "vs fp16", "vs fp32",
             "cache bytes held", "tokens/s", "speed vs raw (kind)", "greedy tokens equal to raw fp32"],
            [[r.machine, r.variant, r.backend, r.p_cache, fmt(int(r.p_decode_tokens)), fmt(int(r.p_batch)),
              fmt(r.m_bytes_per_token), f"{r.vs_fp16:.2f}x", f"{r.vs_fp32:.2f}x", _bytes(r.m_kv_bytes),
              fmt(r.tokens_per_s), f"{r.speed_vs_raw:.2f}x ({r.speed_ref})", f"{100 * r.m_greedy_agreement:.0f}%"]
             for r in mem.itertuples()]))
    quant = analysis._study(df, "kv_memory", "quantize")
    if not quant.empty:
        section.tables.append(Table(
            "TurboQuant quantize: distortion and throughput (head_dim 64, 65,536 vectors)",
            ["machine", "bits", "measured E|x - x̂|²", "codebook's expectation", "paper", "bounds", "vectors/s"],
            [[r.machine, fmt(int(r.p_bits)), fmt(r.m_relative_mse), fmt(r.m_expected_mse), fmt(r.m_paper_mse),
              f"{r.m_lower_bound:.4f} .. {r.m_upper_bound:.4f}", fmt(r.p_vectors / r.time_min)]
             for r in quant.sort_values("p_bits").itertuples()]))
    if not peak.empty:
        section.tables.append(Table(
            "Peak memory of a filled cache and 4 decode steps over it (a fresh process per row; CPU: resident "
            "set growth, CUDA: the allocator's peak above the model)",
            ["machine", "variant", "backend", "cache", "tokens", "batch", "cache bytes held", "measured peak",
             "peak / held", "saving vs raw fp16 (measured)", "saving vs raw fp16 (exact bytes)"],
            [[r.machine, r.variant, r.backend, r.p_cache, fmt(int(r.p_tokens)), fmt(int(r.p_batch)),
              _bytes(r.m_kv_bytes), _bytes(r.m_peak_delta_bytes), f"{r.peak_over_held:.2f}",
              f"{r.saving_vs_fp16:.2f}x", f"{r.exact_saving_vs_fp16:.2f}x"] for r in peak.itertuples()]))
    if not cap.empty:
        budgets = [c for c in cap.columns if c.startswith("max_context_")]
        section.tables.append(Table(
            "Capacity (analytic from exact byte counts; weights in fp16)",
            ["variant", "parameters", "cache", "bytes/token", "cache outgrows the weights at (tokens)",
             *[f"longest context in {c.split('_')[-1]}" for c in budgets]],
            [[r["variant"], fmt(int(r["params"])), r["kind"], fmt(int(r["bytes_per_token"])),
              fmt(int(r["outgrows_weights_at"])), *[fmt(int(r[c])) for c in budgets]]
             for _, r in cap.drop_duplicates(["variant", "kind"]).iterrows()]))
    return section


def int8_section(df: pd.DataFrame) -> Section | None:
    """INT8: accuracy per scheme, norm policy and backend; size; speed; per-layer sensitivity."""
    d = analysis.int8(df)
    sens = analysis.int8_sensitivity(df)
    if d.empty and sens.empty:
        return None
    section = Section("int8", "INT8: accuracy, size and speed, with norms kept or quantized",
                      "Each scheme on the trained reference model, against the same backend's fp32 model (and "
                      "against torch fp32 on the CPU). Ours (models.int8): weight_only (int8 weights per output "
                      "channel), w8a8 (plus int8 activations per token, int32 accumulation), llm_int8 (input "
                      "columns with |x| >= 6 in float). Peers: torch's quantize_dynamic, onnxruntime's dynamic "
                      "and static (QDQ, calibrated on training windows) quantization. Norm policy quantize: norm "
                      "gain/bias rounded to int8 and the norm's input fake-quantized per token (torch); "
                      "LayerNormalization wrapped in Q/DQ (onnxruntime static).")
    section.add_figures(df, (
        ("Accuracy cost by scheme, backend and norm policy", figures.int8_heatmap,
         "Mean KL divergence of the next-byte distribution against the backend's own fp32 model."),
        ("Size and speed", figures.int8_size_speed,
         "Model bytes held (parameters, buffers, packed weights; embeddings stay fp32) and cached decode speed."),
        ("Per-layer sensitivity", figures.int8_sensitivity,
         "One projection (W8A8) or one norm (fake-quantized) at a time; the rest stays fp32."),
    ))
    if not d.empty:
        section.tables.append(Table(
            "INT8 on the reference model",
            ["machine", "backend", "scheme", "norms", "bits per byte", "Δ bits per byte", "KL (nats)", "top-1",
             "max |Δ logit|", "KL vs torch fp32", "model bytes", "size vs fp32", "quantized layers vs fp32",
             "tokens/s", "speed vs fp32"],
            [[r.machine, r.backend, r.p_scheme, r.p_norms, f"{r.m_bits_per_byte:.4f}", f"{r.m_bpb_delta:+.4f}",
              fmt(r.m_kl_mean_nats), f"{100 * r.m_top1_agreement:.2f}%", fmt(r.m_max_abs_logit_delta),
              fmt(r.m_kl_vs_torch_fp32_nats), _bytes(r.m_model_bytes), f"{r.size_vs_fp32:.2f}x",
              f"{r.layers_size_vs_fp32:.2f}x" if r.layers_size_vs_fp32 == r.layers_size_vs_fp32 else "–",
              fmt(r.tokens_per_s), f"{r.speed_vs_fp32:.2f}x"] for r in d.itertuples()]))
        effect = analysis.int8_norm_effect(df)
        if {"m_kl_mean_nats_keep", "m_kl_mean_nats_quantize"} <= set(effect.columns):
            effect = effect.dropna(subset=["m_kl_mean_nats_keep", "m_kl_mean_nats_quantize"])
            section.tables.append(Table(
                "Norms kept vs quantized, side by side",
                ["machine", "backend", "scheme", "KL keep", "KL quantize", "quantize / keep", "Δ bpb keep",
                 "Δ bpb quantize"],
                [[r.machine, r.backend, r.p_scheme, fmt(r.m_kl_mean_nats_keep), fmt(r.m_kl_mean_nats_quantize),
                  f"{r.m_kl_mean_nats_quantize / r.m_kl_mean_nats_keep:.2f}x" if r.m_kl_mean_nats_keep > 0 else "–",
                  f"{r.m_bpb_delta_keep:+.4f}", f"{r.m_bpb_delta_quantize:+.4f}"] for r in effect.itertuples()]))
        section.notes.append(
            "Why int8 is or is not faster here: batch-1 decode streams every weight once per token, so int8 "
            "weights could cut the bytes read 4x, but only if the matmul reads int8 directly. Eager torch widens "
            "int8 to float (weight_only) or adds per-token quantize and rescale kernels (w8a8, llm_int8) around "
            "an int8 GEMM: on a small model more launched kernels cost more than the bytes saved. Runtimes "
            "with fused int8 kernels (onnxruntime's MatMulInteger / QDQ fusion) are where int8 can win.")
    return section


def lora_section(df: pd.DataFrame) -> Section | None:
    """LoRA vs rsLoRA: the variance argument, fine-tuning vs rank, adapter overhead."""
    var, fine = analysis.arch_rows(df, "lora", "variance"), analysis.arch_rows(df, "lora", "finetune")
    over = analysis.arch_rows(df, "lora", "overhead")
    if var.empty and fine.empty and over.empty:
        return None
    section = Section("lora", "LoRA vs rank-stabilised LoRA",
                      "y = Wx + γ·BA·x with A kaiming-uniform and B zero at the start; γ = α/r (LoRA) or α/√r "
                      "(rsLoRA). Our adapters equal PEFT's output for both scalings (tests/test_lora.py). The "
                      "fine-tune trains only the adapters of the reference model on the email package, which the "
                      "reference model never saw, with the same α, learning rate and steps at every rank.")
    section.add_figures(df, (
        ("The update's variance vs rank", figures.lora_variance,
         "Expected: slope -1 for LoRA (γ² · r), 0 for rsLoRA."),
        ("Fine-tuning vs rank", figures.lora_finetune,
         "Adam normalises gradient size, so γ sets the size of each step's change to the output."),
    ))
    if not var.empty:
        section.tables.append(Table("Fitted log-log slope of Var(γ·BA) vs rank",
                                    ["machine", "scaling", "slope", "expected", "ranks"],
                                    [[r.machine, r.p_scaling, f"{r.m_loglog_slope:.3f}", fmt(r.m_expected_slope),
                                      f"{min(r.p_ranks)}..{max(r.p_ranks)}"] for r in var.itertuples()]))
    if not fine.empty:
        section.tables.append(Table(
            "Fine-tuning on a held-out package",
            ["machine", "scaling", "rank", "γ", "adapter params", "held-out before", "held-out after",
             "final training loss", "mean gradient norm"],
            [[r.machine, r.p_scaling, fmt(int(r.p_rank)), f"{r.m_scaling_factor:.4g}", fmt(int(r.m_adapter_params)),
              f"{r.m_eval_bpb_before:.4f}", f"{r.m_eval_bpb_after:.4f}", f"{r.m_final_train_bpb:.4f}",
              fmt(r.m_mean_grad_norm)] for r in fine.sort_values(["machine", "p_scaling", "p_rank"]).itertuples()]))
        section.notes.append(_lora_reading(fine))
    if not over.empty:
        base = over[over["p_mode"] == "none"].set_index("machine")[TIME_COL]
        section.tables.append(Table(
            "Forward time with an adapter on every projection (batch 4 x 128 tokens)",
            ["machine", "variant", "mode", "rank", "time", "vs no adapter"],
            [[r.machine, r.variant, r.p_mode, fmt(int(r.p_rank)), f"{1e3 * getattr(r, TIME_COL):.2f} ms",
              f"{getattr(r, TIME_COL) / base.get(r.machine, float('nan')):.2f}x"] for r in over.itertuples()]))
    return section


def _lora_reading(fine: pd.DataFrame) -> str:
    """One honest sentence on what the fine-tune shows at the largest and smallest ranks."""
    parts = []
    for scaling, g in fine.groupby("p_scaling"):
        g = g.sort_values("p_rank")
        lo, hi = g.iloc[0], g.iloc[-1]
        parts.append(f"{scaling}: held-out {lo.m_eval_bpb_after:.3f} bits/byte at r={int(lo.p_rank)} and "
                     f"{hi.m_eval_bpb_after:.3f} at r={int(hi.p_rank)}, gradient norm x"
                     f"{hi.m_mean_grad_norm / lo.m_mean_grad_norm:.3g} from the smallest to the largest rank")
    return ("Measured here: " + "; ".join(parts) + ". The paper (Llama-2-7B) finds LoRA's curves coinciding "
            "across ranks with its gradient norm collapsing, and rsLoRA improving with rank; a 1M-parameter byte "
            "model fine-tuned for a few dozen steps is a much smaller test.")


def positions_section(df: pd.DataFrame) -> Section | None:
    """Positional embeddings: parameters, speed, extrapolation."""
    params, extra = analysis.arch_rows(df, "positions", "params"), analysis.arch_rows(df, "positions", "extrapolation")
    speed = pd.concat([analysis.arch_rows(df, "positions", p) for p in ("prefill", "decode")])
    if params.empty and extra.empty and speed.empty:
        return None
    section = Section("positions", "Positional embeddings: learned, sinusoidal, RoPE",
                      "One model per scheme, identical otherwise. Extrapolation: each scheme trained at the same "
                      "context and budget, evaluated on held-out files at 1x, 2x and 4x that context.")
    section.add_figures(df, (("Loss beyond the trained context", figures.position_extrapolation,
                              "Solid: every position of the window; dashed: only positions past the trained "
                              "context."),))
    if not params.empty:
        section.tables.append(Table("Parameters at GPT-2 small's shape", ["scheme", "position parameters", "total"],
                                    [[r.p_pos, fmt(int(r.m_position_params)), fmt(int(r.m_params))]
                                     for r in params.drop_duplicates("p_pos").itertuples()]))
    if not speed.empty:
        section.tables.append(Table(
            "Speed per scheme", ["machine", "backend", "variant", "phase", "scheme", "tokens", "time", "tokens/s"],
            [[r.machine, r.backend, r.variant, r.p_phase, r.p_pos, fmt(int(r.p_tokens)),
              f"{1e3 * getattr(r, TIME_COL):.2f} ms", fmt(r.p_tokens / getattr(r, TIME_COL))]
             for r in speed.sort_values(["machine", "backend", "p_phase", "p_pos"]).itertuples()]))
    if not extra.empty:
        lengths = sorted({int(k) for r in extra.itertuples() for k in r.m_by_length})
        rows = []
        for r in extra.itertuples():
            cells = []
            for length in lengths:
                m = r.m_by_length.get(str(length), {})
                if "error" in m:
                    cells.append("not defined (no position past the table)")
                else:
                    beyond = m.get("bits_per_byte_beyond_train_len")
                    cells.append(f"{m['bits_per_byte']:.3f}" + (f" (beyond: {beyond:.3f})" if beyond else ""))
            rows.append([r.machine, r.p_pos, fmt(int(r.p_train_len)), *cells])
        section.tables.append(Table("Held-out loss (bits/byte) by evaluated context",
                                    ["machine", "scheme", "trained at", *[f"{n} tokens" for n in lengths]], rows))
    return section


def norms_section(df: pd.DataFrame) -> Section | None:
    """Norm placement: gradients at init, stability, speed."""
    grads, stab = analysis.arch_rows(df, "norms", "gradients"), analysis.norm_stability(df)
    speed = analysis.arch_rows(df, "norms", "speed")
    if grads.empty and stab.empty and speed.empty:
        return None
    section = Section("norms", "Norm placement: Post-LN, Pre-LN, Pre-RMSNorm",
                      "Gradient norms of each layer's MLP weights on one batch at initialisation (Xiong et al. "
                      "2020 use Xavier initialisation; GPT-2 uses N(0, 0.02)); training at a high learning rate "
                      "with no warm-up or clipping over several seeds; and the norm layers' own speed.")
    section.add_figures(df, (
        ("Gradient norms at initialisation", figures.norm_gradients,
         "Xiong et al.: Post-LN's gradients grow toward the output, Pre-LN's shrink with depth."),
        ("Stability without warm-up", figures.norm_stability, "A run fails when its loss becomes NaN or its "
         "held-out loss ends within 0.1 bits/byte of the byte-frequency (unigram) model."),
        ("Norm speed", figures.norm_speed, "torch.nn.RMSNorm with eps=1e-5 (its default eps differs)."),
    ))
    if not grads.empty:
        section.tables.append(Table(
            "Last layer's gradient norm over the first layer's", ["machine", "init", "placement", "depth",
                                                                  "last / first", "last layer"],
            [[r.machine, r.p_init, r.p_norm, fmt(int(r.p_depth)), f"{r.m_last_over_first:.2f}",
              fmt(r.m_mlp_grad_norm_by_layer[-1])] for r in grads.itertuples()]))
    if not stab.empty:
        section.tables.append(Table(
            "Stability at a high learning rate", ["machine", "placement", "lr", "steps", "runs", "failed",
                                                  "final loss (mean)", "final loss (worst)", "unigram"],
            [[r.machine, r.p_norm, fmt(r.lr), fmt(int(r.steps)), fmt(int(r.runs)), fmt(int(r.failed)),
              fmt(r.final_bpb_mean), fmt(r.final_bpb_max), fmt(r.unigram_bpb)] for r in stab.itertuples()]))
    return section


def tying_section(df: pd.DataFrame) -> Section | None:
    """Weight tying: exact parameter table and quality at equal budget."""
    params, quality = analysis.arch_rows(df, "tying", "params"), analysis.arch_rows(df, "tying", "quality")
    if params.empty and quality.empty:
        return None
    section = Section("tying", "Weight tying", "Tied: the output head reuses the token embedding matrix "
                      "(same storage). Counts are exact, from models built on the meta device.")
    if not params.empty:
        section.tables.append(Table(
            "Parameters tied vs untied", ["variant", "natively", "tied", "untied", "saved", "share of the tied model",
                                          "share of the untied model"],
            [[r.variant, "tied" if r.p_native_tied else "untied", fmt(int(r.m_tied_params)),
              fmt(int(r.m_untied_params)), fmt(int(r.m_saved_params)), f"{100 * r.m_saved_share_of_tied:.2f}%",
              f"{100 * r.m_saved_share_of_untied:.2f}%"]
             for r in params.drop_duplicates("variant").itertuples()]))
    if not quality.empty:
        section.tables.append(Table(
            "Quality at equal budget", ["machine", "variant", "tied", "parameters", "steps", "held-out bits/byte",
                                        "unigram"],
            [[r.machine, r.variant, "tied" if r.p_tied else "untied", fmt(int(r.m_params)), fmt(int(r.p_steps)),
              f"{r.m_val_bpb:.4f}", f"{r.m_unigram_bpb:.3f}"] for r in quality.itertuples()]))
    return section


SECTION_BUILDERS = [decode_section, kv_section, int8_section, lora_section, positions_section, norms_section,
                    tying_section]


def summary(df: pd.DataFrame) -> list[str]:
    """Key findings in a sentence each."""
    lines = []
    fits = analysis.slopes(df)
    for (machine, backend), g in fits.groupby(["machine", "backend"]) if not fits.empty else []:
        raw, none = g[g["p_cache"] == "raw"], g[g["p_cache"] == "none"]
        if len(raw) and len(none):
            lines.append(f"{machine} / {backend}: decode time grows with log-log slope {raw['slope'].median():.2f} "
                         f"with a KV cache and {none['slope'].median():.2f} without "
                         f"({none['end_slope'].median():.2f} between the two longest lengths; medians over variants).")
    pay = analysis.cache_payoff(df)
    if not pay.empty:  # the paired figure where measured (both sides timed together), else the fastest rounds'
        speedup = pay["speedup_paired"].where(pay["speedup_paired"].notna(), pay["speedup_longest"])
        best = pay.loc[speedup.idxmax()]
        how = "paired rounds" if best.speedup_paired == best.speedup_paired else "fastest rounds"
        lines.append(f"Largest cache speed-up: {speedup[best.name]:.1f}x ({how}) for {best.variant} at "
                     f"T={best.longest} on {best.machine} / {best.backend}.")
    p = analysis.peers(df)
    for r in p.itertuples() if not p.empty else []:
        lines.append(f"{r.variant}, {r.p_cache} cache, T={r.p_decode_tokens}: archbench {r.ratio:.2f}x transformers' "
                     f"tokens/s on {r.machine} / {r.backend} (identical tokens: {fmt(r.tokens_identical)}).")
    side = analysis.backends_side_by_side(df)
    ratio_col = "onnxruntime / torch-cpu"
    if not side.empty and ratio_col in side:
        cached = side[(side["p_cache"] == "raw") & side[ratio_col].notna()]
        for (machine, variant), g in cached.groupby(["machine", "variant"]):
            lines.append(f"{variant} cached decode: onnxruntime at {g[ratio_col].median():.2f}x torch eager's "
                         f"tokens/s on {machine} (median over lengths).")
    d = analysis.decode_rows(df)
    if not d.empty:
        big = d[(d["p_cache"] == "raw") & (d["p_batch"] == 1)]
        if not big.empty:
            top = big.loc[big["m_weight_bytes"].idxmax()]
            top_rows = big[(big["variant"] == top.variant) & (big["machine"] == top.machine)]
            parts = [f"{backend} at {100 * g['bandwidth_fraction'].max():.0f}% of the session's bandwidth ceiling"
                     + (f", {100 * g['probed_fraction'].max():.0f}% of the ceiling probed beside its rounds"
                        if g["probed_fraction"].notna().any() else "")
                     for backend, g in top_rows.groupby("backend")]
            lines.append(f"{top.variant} cached decode on {top.machine} (best length): {'; '.join(parts)}.")
    acc = analysis.kv_accuracy(df)
    if not acc.empty:
        by_kind = acc.set_index("p_cache")
        for kind in ("tq3", "uniform3"):
            if kind in by_kind.index:
                r = by_kind.loc[kind]
                lines.append(f"{kind} KV cache on the reference model: {r.m_bytes_per_token:.0f} bytes/token, "
                             f"perplexity {r.m_ppl_delta_pct:+.2f}%, KL {r.m_kl_mean_nats:.4f} nats, top-1 agreement "
                             f"{100 * r.m_top1_agreement:.1f}% against the raw fp32 cache.")
    return lines


def environment_rows(results: list[Results]) -> tuple[list[str], list[list[str]]]:
    """The hardware profile of each machine, one column per results file."""
    fields = [("machine", lambda r: r.machine), ("CPU", lambda p: p.get("cpu_model")),
              ("logical CPUs", lambda p: p.get("cpu_count_logical")),
              ("torch threads", lambda p: p.get("torch_threads")),
              ("memory", lambda p: _bytes(p.get("memory_total_bytes"))), ("OS", lambda p: p.get("os")),
              ("Python", lambda p: p.get("python")), ("torch", lambda p: p.get("torch")),
              ("CUDA (torch build)", lambda p: p.get("cuda")), ("onnxruntime", lambda p: p.get("onnxruntime")),
              ("onnxruntime providers", lambda p: ", ".join(p.get("onnxruntime_providers") or []) or "–"),
              ("GPUs", lambda p: "; ".join(
                  f"{g['name']} ({_bytes(g['memory_total_bytes'])}, driver {g['driver']}, "
                  f"cc {g.get('compute_capability')})" for g in p.get("gpus") or []) or "none"),
              ("NVML", lambda p: p.get("nvml_error") or "ok")]
    header = ["", *[r.machine for r in results]]
    rows = []
    for name, get in fields:
        if name == "machine":
            continue
        rows.append([name, *[fmt(get(r.archbench_info.get("profile", {}))) for r in results]])
    for device in sorted({d for r in results for d in r.archbench_info.get("ceilings", {})}):
        cells = []
        for r in results:
            c = r.archbench_info.get("ceilings", {}).get(device)
            read = c.get("read_Bps", float("nan")) / 1e9 if c else float("nan")
            cells.append(f"read {read:.1f} GB/s, copy {c['copy_Bps'] / 1e9:.1f} GB/s, "
                         f"matvec {c['matvec_out_in_Bps'] / 1e9:.1f} (out,in) / "
                         f"{c['matvec_in_out_Bps'] / 1e9:.1f} (in,out) GB/s" if c else "–")
        rows.append([f"measured bandwidth ({device})", *cells])
    rows.append(["preset", *[fmt(r.archbench_info.get("preset")) for r in results]])
    rows.append(["complete run", *["no (rebuilt from records after an early end)" if r.partial else "yes"
                                   for r in results]])
    return header, rows


def render(results: list[Results]) -> str:
    """The report page as a string."""
    df = to_frame(results)
    sections = [s for s in (build(df) for build in SECTION_BUILDERS) if s is not None]
    env = jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             undefined=jinja2.StrictUndefined)
    header, rows = environment_rows(results)
    anchors = {s.anchor for s in sections}
    board = [{**row, "link": row["section"] if row["section"] in anchors else None,
              "css": row["status"].replace(" ", "-")} for row in claims.scoreboard(df)]
    return env.get_template("report.html.j2").render(
        title="archbench report", generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        sources=[str(r.path) for r in results], summary=summary(df), env_header=header, env_rows=rows,
        sections=sections, n_benchmarks=len(df), scoreboard=board, several_machines=len(results) > 1)


def build_report(paths: list[str | Path], out: str | Path) -> Path:
    """Load every results file, render the report, write it to `out`."""
    results = [load(p) for p in paths]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results), encoding="utf-8")
    return out
