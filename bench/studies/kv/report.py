"""The KV-cache study's report half: frames (bytes, peak memory, speed, accuracy, capacity), figures, its
section and summary lines. Kinds are looked up in the registry (`models.kv_cache`), never parsed."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd
import seaborn as sns
import torch

from models import kv_cache
from reports.load import TIME
from reports.page import (
    Section,
    Table,
    engine_caption,
    facet_grid,
    fmt,
    fmt_bytes,
    length_axis,
    study_rows,
    to_png_base64,
)

RAW_FP32, RAW_FP16 = kv_cache.raw_kind(torch.float32), kv_cache.raw_kind(torch.float16)
TARGET_TQ3_TIME_VS_FP16 = 1.5  # on a compiled engine: a 3-bit cache's decode at most 1.5x raw fp16's time


def family_of(kind: str, recorded: object = None) -> str:
    """A kind's family: as recorded, else the registry's, else "unregistered"."""
    if isinstance(recorded, str):
        return recorded
    return kv_cache.CACHE_SPECS[kind].family if kind in kv_cache.CACHE_SPECS else "unregistered"


def kind_with(family: str, code_bits: int) -> str | None:
    """The registered kind of `family` with `code_bits`, if any."""
    return next((k for k in kv_cache.kinds(family) if kv_cache.spec(k).code_bits == code_bits), None)


def _with_family(d: pd.DataFrame, column: str = "p_cache") -> pd.DataFrame:
    recorded = d["p_cache_family"] if "p_cache_family" in d else pd.Series([None] * len(d), index=d.index)
    d["family"] = [family_of(k, f) for k, f in zip(d[column], recorded, strict=True)]
    return d


# ---- frames -------------------------------------------------------------------------------------------

def kv_peak(df: pd.DataFrame) -> pd.DataFrame:
    """Measured peak memory of filled caches (CPU resident set: phase `rss`; CUDA allocator: `vram`),
    with the ratio to the exact bytes held and the saving against raw fp16 at the same tokens and batch."""
    parts = [study_rows(df, "kv_memory", phase) for phase in ("rss", "vram")]
    d = pd.concat([p for p in parts if not p.empty]) if any(not p.empty for p in parts) else pd.DataFrame()
    if d.empty:
        return d
    if "m_peak_delta_bytes" not in d:
        d["m_peak_delta_bytes"] = float("nan")
    if "m_peak_rss_delta_bytes" in d:  # results written before the probe measured CUDA too
        d["m_peak_delta_bytes"] = d["m_peak_delta_bytes"].fillna(d["m_peak_rss_delta_bytes"])
    if "p_batch" not in d:
        d["p_batch"] = 1
    d["p_batch"] = d["p_batch"].fillna(1).astype(int)
    d["peak_over_held"] = d["m_peak_delta_bytes"] / d["m_kv_bytes"]
    keys = ["machine", "backend", "variant", "p_phase", "p_tokens", "p_batch"]
    fp16 = d[d["p_cache"] == RAW_FP16].set_index(keys)
    d["saving_vs_fp16"] = [fp16["m_peak_delta_bytes"].get(tuple(getattr(r, k) for k in keys), float("nan"))
                           / r.m_peak_delta_bytes for r in d.itertuples()]
    d["exact_saving_vs_fp16"] = [fp16["m_kv_bytes"].get(tuple(getattr(r, k) for k in keys), float("nan"))
                                 / r.m_kv_bytes for r in d.itertuples()]
    return d.sort_values(["machine", "backend", "p_phase", "p_batch", "p_tokens", "p_cache"]).reset_index(drop=True)


def kv_memory(df: pd.DataFrame) -> pd.DataFrame:
    """Per cache kind: bytes per token, compression vs raw fp16/fp32, decode tokens/s and its ratio to
    the raw fp32 cache of the same run (the overhead of quantizing and reading codes)."""
    d = study_rows(df, "kv_memory", "decode")
    if d.empty:
        return d
    d["tokens_per_s"] = d["p_decode_tokens"] * d["p_batch"] / d[TIME]
    d["vs_fp16"] = d["m_raw_fp16_bytes_per_token"] / d["m_bytes_per_token"]
    d["vs_fp32"] = d["m_raw_fp32_bytes_per_token"] / d["m_bytes_per_token"]
    keys = ["machine", "variant", "backend", "p_decode_tokens", "p_batch"]
    speeds = {kind: d[d["p_cache"] == kind].set_index(keys)["tokens_per_s"] for kind in (RAW_FP32, RAW_FP16)}
    ratios, refs = [], []
    for r in d.itertuples():  # against raw fp32 where the run has it, else raw fp16
        key = tuple(getattr(r, k) for k in keys)
        ref = next((kind for kind in speeds if key in speeds[kind].index), None)
        ratios.append(r.tokens_per_s / speeds[ref][key] if ref else float("nan"))
        refs.append(ref or "–")
    d["speed_vs_raw"], d["speed_ref"] = ratios, refs
    return _with_family(d)


def _compiles(backend: str) -> bool:
    """Whether `backend` is a registered engine that compiles its code (a results file may name others)."""
    from bench import backends

    return backend in backends.BACKENDS and backends.get(backend).compiles_per_shape


def targets(df: pd.DataFrame) -> pd.DataFrame:
    """The 3-bit cache's decode time against raw fp16's, on each compiled engine at its longest length (a
    3-bit cache is judged where its quantized attention runs compiled, not by eager overhead)."""
    mem = kv_memory(df)
    tq3 = kind_with("turboquant", 3)
    if mem.empty or tq3 is None:
        return pd.DataFrame()
    rows = []
    keys = ["machine", "variant", "backend", "p_batch"]
    for key, g in mem[[_compiles(b) for b in mem["backend"]]].groupby(keys):
        longest = g[g["p_decode_tokens"] == g["p_decode_tokens"].max()].set_index("p_cache")
        if {tq3, RAW_FP16} <= set(longest.index):
            ratio = float(longest.loc[tq3, TIME] / longest.loc[RAW_FP16, TIME])
            length = int(longest["p_decode_tokens"].iloc[0])
            rows.append({**dict(zip(keys, key, strict=True)),
                         "target": f"{tq3} decode time <= {TARGET_TQ3_TIME_VS_FP16}x {RAW_FP16}'s (T={length})",
                         "measured": f"{ratio:.2f}x", "met": ratio <= TARGET_TQ3_TIME_VS_FP16})
    return pd.DataFrame(rows)


def kv_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows of the cache kinds (not the sensitivity sweep), with each kind's family and the bits
    per coordinate to compare them at (what one more token costs; older records: the code bits)."""
    d = study_rows(df, "kv_accuracy")
    if d.empty:
        return d
    if "p_phase" in d:
        d = d[d["p_phase"].isna()].reset_index(drop=True)
    if d.empty:
        return d
    d = _with_family(d)
    marginal = d["m_marginal_bits"] if "m_marginal_bits" in d else pd.Series([math.nan] * len(d), index=d.index)
    d["bits_axis"] = marginal.fillna(pd.to_numeric(d["p_bits"], errors="coerce"))
    return d


def sensitivity(df: pd.DataFrame) -> pd.DataFrame:
    """One layer's keys or values alone quantized: the perplexity change each part costs."""
    return study_rows(df, "kv_accuracy", "sensitivity")


def kv_capacity(df: pd.DataFrame) -> pd.DataFrame:
    """Capacity rows: one per (variant, kind) with bytes per token, the length where the cache outgrows
    fp16 weights and the longest context per memory budget."""
    d = study_rows(df, "kv_memory", "capacity")
    rows = []
    for r in d.itertuples():
        for kind, per_token in r.m_bytes_per_token.items():
            limit = getattr(r, "m_position_limit_tokens", None)
            row = {"machine": r.machine, "variant": r.variant, "params": r.m_params, "kind": kind,
                   "bytes_per_token": per_token, "outgrows_weights_at": r.m_outgrows_weights_at_tokens[kind],
                   "position_limit": int(limit) if isinstance(limit, int | float) and limit == limit else None}
            row.update({f"max_context_{gib}GiB": v for gib, v in r.m_max_context_tokens[kind].items()})
            rows.append(row)
    return pd.DataFrame(rows)


def context_cell(tokens: float, limit: int | None) -> str:
    """A capacity table cell: the tokens a budget holds, capped at the model's position limit and saying so,
    or that the weights alone do not fit."""
    tokens = int(tokens)
    if tokens <= 0:
        return "weights do not fit"
    if limit is not None and tokens > limit:
        return f"{limit:,} (its position limit; memory holds {tokens:,})"
    return f"{tokens:,}"


def quantize_rows(df: pd.DataFrame) -> pd.DataFrame:
    """TurboQuant's quantize benchmarks: distortion against the paper's and the bounds, throughput."""
    d = study_rows(df, "kv_memory", "quantize")
    return d if d.empty else d.sort_values("p_bits").reset_index(drop=True)


# ---- figures ------------------------------------------------------------------------------------------

def _capacity_variant(cap: pd.DataFrame) -> str:
    return "gpt2-small" if "gpt2-small" in set(cap["variant"]) else cap["variant"].iloc[0]


def fig_bytes(df: pd.DataFrame) -> str | None:
    """Bytes per token of each cache kind, with the compression against raw fp16 on each bar."""
    cap = kv_capacity(df)
    if cap.empty:
        return None
    variant = _capacity_variant(cap)
    d = cap[cap["variant"] == variant].drop_duplicates("kind")
    fp16 = float(d[d["kind"] == RAW_FP16]["bytes_per_token"].iloc[0]) if (d["kind"] == RAW_FP16).any() else None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.barplot(data=d, x="kind", y="bytes_per_token", ax=ax, color="#4C72B0")
    for i, r in enumerate(d.itertuples()):
        if fp16:
            ax.text(i, r.bytes_per_token, f"{fp16 / r.bytes_per_token:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="cache kind", ylabel="KV cache per token (bytes, batch 1)",
           title=f"{variant}: bytes per token (labels: compression vs raw fp16)")
    return to_png_base64(fig)


def fig_accuracy_vs_bits(df: pd.DataFrame) -> str | None:
    """KL divergence and perplexity change against bits per coordinate (metadata included), one curve per
    family and model: kinds at equal x hold equal memory per token."""
    d = kv_accuracy(df)
    if d.empty:
        return None
    d = d[d["family"] != "raw"]
    if d.empty:
        return None
    several = d["variant"].nunique() > 1  # the reference models and a checkpoint: one line style each
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for ax, metric, label, log in ((axes[0], "m_kl_mean_nats", "mean KL vs raw fp32 cache (nats/token, log)", True),
                                   (axes[1], "m_ppl_delta_pct", "perplexity change vs raw fp32 cache (%)", False)):
        sns.lineplot(data=d.sort_values("bits_axis"), x="bits_axis", y=metric, hue="family",
                     style="variant" if several else None, marker="o", ax=ax, sort=True, estimator=None)
        for r in d.itertuples():
            ax.annotate(r.p_cache, (r.bits_axis, getattr(r, metric)), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set(xlabel="bits per key or value coordinate, metadata included (bits)", ylabel=label,
               yscale="log" if log else "linear")
    fig.suptitle(f"Accuracy against memory per token ({', '.join(d['variant'].unique())}){engine_caption(d)}")
    fig.tight_layout()
    return to_png_base64(fig)


def fig_sensitivity(df: pd.DataFrame) -> str | None:
    """Perplexity change with one layer's keys or values alone quantized, per layer: where the loss lives."""
    d = sensitivity(df)
    if d.empty:
        return None
    variants = list(dict.fromkeys(d["variant"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        part = d[d["variant"] == variant].assign(p_layer=lambda x: x["p_layer"].astype(int))
        grid = part.pivot_table(index="p_layer", columns="p_part", values="m_ppl_delta_pct")
        grid = grid.rename(columns={"k": "keys", "v": "values"})
        sns.heatmap(grid, annot=True, fmt="+.2f", cmap="rocket_r", ax=ax,
                    cbar_kws={"label": "perplexity change (%)"})
        ax.set(xlabel="part quantized alone", ylabel="layer (index)",
               title=f"{variant}: {part['p_cache'].iloc[0]} on one part{engine_caption(part)}")
    fig.tight_layout()
    return to_png_base64(fig)


def fig_layer_error(df: pd.DataFrame) -> str | None:
    """Relative error of each layer's attention output against the raw cache."""
    d = kv_accuracy(df)
    if d.empty:
        return None
    rows = [{"kind": r.p_cache, "variant": r.variant, "layer": i, "error": e} for r in d.itertuples()
            if r.p_cache != RAW_FP32 for i, e in enumerate(r.m_layer_rel_error)]
    if not rows:
        return None
    rows = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    style = "variant" if rows["variant"].nunique() > 1 else None
    sns.lineplot(data=rows, x="layer", y="error", hue="kind", style=style, marker="o", ax=ax)
    ax.set(xlabel="layer (index)", ylabel="relative error of attention output (|a - a_raw| / |a_raw|)",
           yscale="log", title=f"Per-layer attention error against the raw fp32 cache{engine_caption(d)}")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    return to_png_base64(fig)


def fig_distortion(df: pd.DataFrame) -> str | None:
    """Measured MSE of unit vectors by bits against the paper's figures and its bounds."""
    d = quantize_rows(df)
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(d["p_bits"], d["m_relative_mse"], "o-", label="measured (d = 64)")
    ax.plot(d["p_bits"], d["m_paper_mse"], "s--", label="paper")
    ax.fill_between(d["p_bits"], d["m_lower_bound"], d["m_upper_bound"], alpha=0.15,
                    label="bounds 4^-b .. 2.72 x 4^-b")
    ax.set(yscale="log", xlabel="bits per coordinate (bits)", ylabel="E|x - x̂|² for unit x (log scale)",
           title="TurboQuant distortion")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return to_png_base64(fig)


def fig_bytes_vs_length(df: pd.DataFrame) -> str | None:
    """Cache size against context length (exact bytes per token times length), raw vs quantized."""
    cap = kv_capacity(df)
    if cap.empty:
        return None
    variant = _capacity_variant(cap)
    d = cap[cap["variant"] == variant].drop_duplicates("kind")
    lengths = [2**i for i in range(8, 17)]
    rows = [{"kind": r.kind, "tokens": t, "MiB": r.bytes_per_token * t / 2**20}
            for r in d.itertuples() for t in lengths]
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=pd.DataFrame(rows), x="tokens", y="MiB", hue="kind", marker="o", ax=ax)
    capacity = study_rows(df, "kv_memory", "capacity")
    weights = float(capacity[capacity["variant"] == variant]["m_weight_bytes_fp16"].iloc[0]) / 2**20
    ax.axhline(weights, color="grey", linestyle=":", label="weights (fp16)")
    ax.set(xscale="log", yscale="log", xlabel="context length (tokens, log scale)",
           ylabel="KV cache size, batch 1 (MiB, log scale)", title=f"{variant}: cache size vs length")
    ax.legend(fontsize=8)
    length_axis(ax, lengths)
    return to_png_base64(fig)


def fig_peak_memory(df: pd.DataFrame) -> str | None:
    """Measured peak memory of a filled cache against the exact bytes it holds, per kind and length."""
    d = kv_peak(df)
    if d.empty or d.groupby(["machine", "variant", "backend", "p_batch"])["p_tokens"].nunique().max() < 2:
        return None  # one length per panel: the table's rows say it better than one point on log axes
    d["panel"] = d["variant"] + " · " + d["backend"] + " · B" + d["p_batch"].astype(str) + " · " + d["machine"]
    panels = sorted(d["panel"].unique())
    fig, axes = facet_grid(len(panels), 3.9)
    for ax, panel in zip(axes, panels, strict=True):
        p = d[d["panel"] == panel]
        measure = "peak RSS growth" if (p["p_phase"] == "rss").all() else "CUDA allocator peak"
        for kind, g in p.groupby("p_cache"):
            g = g.sort_values("p_tokens")
            line = ax.plot(g["p_tokens"], g["m_peak_delta_bytes"] / 2**30, marker="o", label=f"{kind}: {measure}")
            ax.plot(g["p_tokens"], g["m_kv_bytes"] / 2**30, ls=":", color=line[0].get_color(),
                    label=f"{kind}: exact bytes held")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        length_axis(ax, list(p["p_tokens"]))
        ax.set(xlabel="tokens in the cache", ylabel="memory (GiB)", title=panel)
        ax.legend(fontsize=7)
    return to_png_base64(fig)


# ---- section and summary ------------------------------------------------------------------------------

def _bits_cell(r: object) -> str:
    """Code bits, and the bits per coordinate one more token costs, metadata included, where the record has
    them (older records: every byte held, fixed parts included)."""
    per_coord = getattr(r, "m_marginal_bits", math.nan)
    if not (isinstance(per_coord, float) and per_coord == per_coord):
        per_coord = getattr(r, "m_bits_per_coordinate", math.nan)
    code = fmt(r.p_bits) if isinstance(r.p_bits, int | float) and r.p_bits == r.p_bits else "–"
    return f"{code} ({per_coord:.2f})" if isinstance(per_coord, float) and per_coord == per_coord else code


def section(df: pd.DataFrame) -> Section | None:
    """The KV-cache study: bytes, capacity, speed, accuracy of quantized caches."""
    mem, acc, cap, peak = kv_memory(df), kv_accuracy(df), kv_capacity(df), kv_peak(df)
    if mem.empty and acc.empty and cap.empty and peak.empty:
        return None
    out = Section("kv", "Quantized KV caches: TurboQuant vs raw and a uniform baseline",
                  "TurboQuant (random rotation + Lloyd-Max codebook for the rotated coordinates, packed codes "
                  "plus an fp16 norm per vector) against raw fp32/fp16/bf16 caches and a KIVI-style min-max "
                  "uniform quantizer (keys per channel over 32-token groups, values per token). Bytes are exact "
                  "counts of what each cache holds; bits are the codes' bits and, in brackets, the bits per "
                  "coordinate with every byte of metadata (norms, scales, offsets, the rotation) counted. "
                  "Accuracy is measured on the trained reference models over held-out standard-library files: "
                  "every query attends to the stored (quantized) keys and values, as in decoding; every quantized "
                  "kind reads the keys of the latest incomplete 32-token group exact (the uniform baseline must, "
                  "and TurboQuant is offered the same).")
    out.add_figures(df, (
        ("Measured peak memory of a filled cache", fig_peak_memory,
         "Solid: the measured peak growth (fresh process each); dotted: the exact bytes the cache holds. The gap "
         "is transient: raw fp16 is read back in fp32 one layer at a time, quantized caches dequantize in chunks."),
        ("Bytes per token", fig_bytes, "Exact bytes each kind adds per token, every layer, batch 1."),
        ("Cache size vs length", fig_bytes_vs_length,
         "Exact bytes per token times length; the dotted line is the fp16 weights."),
        ("Measured distortion vs the paper", fig_distortion,
         "Mean squared error of unit vectors after quantize/dequantize, 65,536 Gaussian directions, head_dim 64."),
        ("Accuracy against bits per coordinate", fig_accuracy_vs_bits,
         "Lower is better; equal x means equal memory per token. tq2.5/tq3.5 split the channels (a quarter one bit "
         "higher); tqN-prod adds a 1-bit QJL sketch to (N-1)-bit keys."),
        ("Where the loss lives", fig_sensitivity,
         "One layer's keys, or values, quantized alone (the rest raw fp32): the perplexity change each part costs."),
        ("Error by layer", fig_layer_error,
         "Errors compound: a layer's input already carries the earlier layers' errors."),
    ))
    for variant, part in (acc.groupby("variant", sort=False) if not acc.empty else ()):
        what = "the trained reference model" if not str(variant).startswith("checkpoint:") else "the checkpoint"
        out.tables.append(Table(
            f"Accuracy on {what} ({variant}, {int(part['p_windows'].iloc[0])} windows of "
            f"{int(part['p_seq_len'].iloc[0])} tokens)",
            ["cache", "family", "bits (per coordinate)", "bytes/token", "bits per byte", "Δ bits per byte",
             "perplexity Δ", "KL (nats)", "top-1 agreement", "max |Δ logit|"],
            [[r.p_cache, r.family, _bits_cell(r), fmt(r.m_bytes_per_token), f"{r.m_bits_per_byte:.4f}",
              f"{r.m_bpb_delta:+.4f}", f"{r.m_ppl_delta_pct:+.2f}%", fmt(r.m_kl_mean_nats),
              f"{100 * r.m_top1_agreement:.1f}%", fmt(r.m_max_abs_logit_delta)] for r in part.itertuples()]))
        quantized = part[part["family"] != "raw"].drop_duplicates("p_cache")
        cells = [f"{r.p_cache}: {r.m_ppl_delta_pct:+.1f}%" for r in quantized.itertuples()]
        if cells:
            out.notes.append(
                "Against the paper's claims: TurboQuant reports no LongBench loss at 3.5 bits on Llama-3.1-8B and "
                "-0.6 points at 2.5 bits; a public GPT-2 reimplementation reports +7.6% perplexity at 3 bits. "
                f"Measured here on {variant} (perplexity change vs the raw fp32 cache): " + "; ".join(cells) + ".")
    sens = sensitivity(df)
    for variant, part in (sens.groupby("variant", sort=False) if not sens.empty else ()):
        worst = part.sort_values("m_ppl_delta_pct").iloc[-1]
        rest = part.drop(index=worst.name)["m_ppl_delta_pct"].sum()
        part_name = "keys" if worst["p_part"] == "k" else "values"
        out.notes.append(f"Where {worst['p_cache']}'s loss lives on {variant}: layer {int(worst['p_layer'])}'s "
                         f"{part_name} alone cost {worst['m_ppl_delta_pct']:+.2f}% perplexity; every other part "
                         f"alone, summed: {rest:+.2f}%.")
    if not mem.empty:
        out.tables.append(Table(
            "Memory and decode speed by cache kind",
            ["machine", "variant", "backend", "cache", "T", "batch", "bytes/token", "vs fp16", "vs fp32",
             "cache bytes held", "tokens/s", "speed vs raw (kind)"],
            [[r.machine, r.variant, r.backend, r.p_cache, fmt(int(r.p_decode_tokens)), fmt(int(r.p_batch)),
              fmt(r.m_bytes_per_token), f"{r.vs_fp16:.2f}x", f"{r.vs_fp32:.2f}x", fmt_bytes(r.m_kv_bytes),
              fmt(r.tokens_per_s), f"{r.speed_vs_raw:.2f}x ({r.speed_ref})"] for r in mem.itertuples()],
            note="Random weights: memory and speed only; accuracy is not measured here (the accuracy table is on "
                 "the trained reference model)."))
        met = targets(df)
        if not met.empty:
            out.tables.append(Table(
                "Target: a 3-bit cache's decode on a compiled engine",
                ["machine", "variant", "backend", "batch", "target", "measured", "met"],
                [[r.machine, r.variant, r.backend, fmt(int(r.p_batch)), r.target, r.measured,
                  "yes" if r.met else "no"] for r in met.itertuples()]))
    quant = quantize_rows(df)
    if not quant.empty:
        out.tables.append(Table(
            "TurboQuant quantize: distortion and throughput (head_dim 64, 65,536 vectors)",
            ["machine", "bits", "measured E|x - x̂|²", "codebook's expectation", "paper", "bounds", "vectors/s"],
            [[r.machine, fmt(int(r.p_bits)), fmt(r.m_relative_mse), fmt(r.m_expected_mse), fmt(r.m_paper_mse),
              f"{r.m_lower_bound:.4f} .. {r.m_upper_bound:.4f}", fmt(r.p_vectors / r.time_min)]
             for r in quant.itertuples()]))
    if not peak.empty:
        out.tables.append(Table(
            "Peak memory of a filled cache and 4 decode steps over it (a fresh process per row; CPU: resident "
            "set growth, CUDA: the allocator's peak above the model)",
            ["machine", "variant", "backend", "cache", "tokens", "batch", "cache bytes held", "measured peak",
             "peak / held", "saving vs raw fp16 (measured)", "saving vs raw fp16 (exact bytes)"],
            [[r.machine, r.variant, r.backend, r.p_cache, fmt(int(r.p_tokens)), fmt(int(r.p_batch)),
              fmt_bytes(r.m_kv_bytes), fmt_bytes(r.m_peak_delta_bytes), f"{r.peak_over_held:.2f}",
              f"{r.saving_vs_fp16:.2f}x", f"{r.exact_saving_vs_fp16:.2f}x"] for r in peak.itertuples()]))
    if not cap.empty:
        budgets = [c for c in cap.columns if c.startswith("max_context_")]
        out.tables.append(Table(
            "Capacity (analytic from exact byte counts; weights in fp16)",
            ["variant", "parameters", "cache", "bytes/token", "cache outgrows the weights at (tokens)",
             *[f"longest context in {c.split('_')[-1]}" for c in budgets]],
            [[r["variant"], fmt(int(r["params"])), r["kind"], fmt(int(r["bytes_per_token"])),
              fmt(int(r["outgrows_weights_at"])), *[context_cell(r[c], r["position_limit"]) for c in budgets]]
             for _, r in cap.drop_duplicates(["variant", "kind"]).iterrows()],
            note="A longest context is what the budget holds after the fp16 weights, capped at the model's "
                 "position limit where it has one (a learned position table); \"weights do not fit\" where the "
                 "weights alone exceed the budget."))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The 3-bit kinds' accuracy on the reference model, a sentence each."""
    lines = []
    acc = kv_accuracy(df)
    if acc.empty:
        return lines
    for r in acc.drop_duplicates(["variant", "p_cache"]).itertuples():
        if r.family != "raw" and r.p_bits == 3:
            lines.append(f"{r.p_cache} KV cache on {r.variant}: {r.m_bytes_per_token:.0f} bytes/token, perplexity "
                         f"{r.m_ppl_delta_pct:+.2f}%, KL {r.m_kl_mean_nats:.4f} nats, top-1 agreement "
                         f"{100 * r.m_top1_agreement:.1f}% against the raw fp32 cache.")
    return lines


def figures(df: pd.DataFrame) -> list:
    """Key figures for CI summaries and history: each cache kind's bytes per token and KL against the raw
    cache on the reference model."""
    from reports.summary import KeyFigure

    found = []
    acc = kv_accuracy(df)
    for r in acc.drop_duplicates(["machine", "variant", "p_cache"]).itertuples() if not acc.empty else []:
        if r.family == "raw":
            continue
        found.append(KeyFigure(f"kv {r.p_cache} bytes/token ({r.variant})", float(r.m_bytes_per_token),
                               "bytes/token", False, r.machine))
        found.append(KeyFigure(f"kv {r.p_cache} KL vs raw cache ({r.variant})", float(r.m_kl_mean_nats), "nats",
                               False, r.machine))
    return found
