"""The decode study's judge half: its claim and its regression gates.

Gates, each on the statistic that is steadiest on a noisy machine:
- `cached slope`: the log-log slope of cached decode time vs T, fitted over every length, is <= 1.3
  and not above the baseline's by more than 0.15.
- `uncached slope`: without a cache, the local slope at the longest length of a*T + b*T^2 fitted to
  every length is >= 1.6 (groups of at least 3 lengths reaching 256 or more; below that, fixed
  per-forward costs hide the T^2 growth).
- `cache speed-up`: the cache's speed-up at the longest uncached length is >= 0.8x the baseline's:
  the median ratio of paired rounds (each uncached round timed right after a cached run of the same
  length) where both runs have them, else from those fitted curves (or the measured times where
  fewer than 3 lengths). With a baseline of several runs the limit is the lower of that and 0.95x
  the lowest baseline run: the tiny models' speed-up at 512 tokens spreads 7.3-11.7x between runs of
  the same code on a shared 2-core VM, so 0.8x the median failed a quarter of the baseline's own
  runs; a run as low as the baseline code itself measured is not a regression.
- `identical tokens`: cached and uncached decode agree; ours and transformers agree.
- `missing`: a group the baseline measured and the run did not.
With a baseline of several runs each reference figure is the median over them. Slopes and fitted
speed-ups use each round's time divided by a calibration workload timed just before it (`time_norm`):
a shared machine's slow phases scale both alike. Runs without calibrations fall back to the fastest
round.
"""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext
from reports.load import TIME
from reports.verdicts import Claim, Verdict, judge_values, not_testable, unmeasured

from .report import cache_payoff, decode_rows, peers, slopes, token_agreement

CACHED_SLOPE_MAX = 1.3
CACHED_SLOPE_DRIFT = 0.15
UNCACHED_SLOPE_MIN = 1.6
UNCACHED_MIN_LENGTH = 256
SPEEDUP_KEEP = 0.8
SPEEDUP_KEEP_LOWEST = 0.95  # of the lowest baseline run, where the baseline has several
KEY = ["variant", "backend", "p_batch", "p_dtype"]


def _models(g: pd.DataFrame) -> str:
    """The models and engines a verdict was judged on, and the lengths."""
    pairs = sorted({f"{r.variant} on {r.backend}" for r in g.itertuples()})
    return f"{', '.join(pairs)} (random weights: speed only), T up to {int(g['longest'].max())}"


def cached_linear(df: pd.DataFrame) -> Verdict:
    """With a cache, the log-log slope of decode time vs T (every length) is below 1.3 (linear is 1)."""
    fits = slopes(df)
    if fits.empty or not (fits["p_cache"] == "raw").any():
        return unmeasured("decode sweeps with a cache")
    cached = fits[(fits["p_cache"] == "raw") & fits["slope_all"].notna()]
    return judge_values(cached["slope_all"].tolist(), CACHED_SLOPE_MAX, claimed_above=False,
                        figures=f"median log-log slope {cached['slope_all'].median():.2f} with the cache (1 is "
                                f"linear; linear counts up to {CACHED_SLOPE_MAX})", model=_models(cached),
                        unit="slope")


def uncached_quadratic(df: pd.DataFrame) -> Verdict:
    """Without a cache, the local slope at the longest length of a*T + b*T^2 fitted to 3+ lengths reaching
    256 tokens is above 1.6 (quadratic is 2). Shorter sweeps cannot show it: fixed per-step costs dominate."""
    fits = slopes(df)
    if fits.empty or not (fits["p_cache"] == "none").any():
        return unmeasured("decode sweeps without a cache")
    none = fits[fits["p_cache"] == "none"]
    long = none[(none["points"] >= 3) & (none["longest"] >= UNCACHED_MIN_LENGTH)]
    if long.empty:
        return not_testable(f"recomputation measured at {int(none['points'].max())} length(s) at most, up to "
                            f"T = {int(none['longest'].max())}",
                            f"its T² term shows past a few hundred tokens: sweep the uncached mode over 3+ lengths "
                            f"reaching {UNCACHED_MIN_LENGTH} (the quick preset's tiny models do)", _models(none))
    return judge_values(long["model_end_slope"].tolist(), UNCACHED_SLOPE_MIN,
                        figures=f"median local slope {long['model_end_slope'].median():.2f} at the longest length "
                                f"without the cache (2 is quadratic; quadratic counts from {UNCACHED_SLOPE_MIN})",
                        model=_models(long), unit="slope")


CLAIMS = (
    Claim("kv-linear-cached", "With a KV cache, decode time grows linearly in the tokens generated (O(T)).",
          "decode", cached_linear),
    Claim("kv-linear-uncached", "Without one, it grows quadratically (O(T²)).", "decode", uncached_quadratic),
)


def gate_time(*frames: pd.DataFrame) -> str:
    """`time_norm` (round time over the calibration measured just before it) when every run that has
    decode rows has it for all of them, else the fastest round in seconds."""
    decode = [d for d in (decode_rows(df) for df in frames) if not d.empty]
    if not decode or any(d["time_norm"].isna().any() for d in decode):
        return TIME
    return "time_norm"


def _median_over_runs(tables: list[pd.DataFrame], key: list[str], columns: list[str]) -> pd.DataFrame:
    """Per `key`: the median of each of `columns` over the runs' tables (NaN left out), with its min, max
    and number of runs (`<column>_min`, `_max`, `_runs`)."""
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame()
    stacked = pd.concat(tables, ignore_index=True)
    parts = []
    for column in columns:
        agg = stacked.groupby(key, sort=False)[column].agg(["median", "min", "max", "count"])
        parts.append(agg.rename(columns={"median": column, "min": f"{column}_min", "max": f"{column}_max",
                                         "count": f"{column}_runs"}))
    return pd.concat(parts, axis=1).reset_index()


def reference_figures(base_frames: list[pd.DataFrame], time_col: str = TIME) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The decode gates' references from one or more baseline runs: per group and cache mode the median
    cached slope, and per group the median cache speed-up (paired rounds, and from the fitted curves),
    each with its range and number of runs.

    One run's figure is one draw from a shared machine's spread, and a gate relative to a draw near the
    top of that spread fails runs that are merely ordinary. The median of several runs is the figure a
    regression has to move.
    """
    fits = _median_over_runs([slopes(df, time_col) for df in base_frames], [*KEY, "p_cache"], ["slope_all"])
    pays = _median_over_runs([cache_payoff(df, time_col) for df in base_frames], KEY,
                             ["speedup_paired", "speedup_fit"])
    return fits, pays


def _spread(row: pd.Series, column: str, fmt: str, unit: str = "") -> str:
    """A reference figure as text: the value, and with several runs their median and range."""
    value = format(row[column], fmt) + unit
    runs = int(row[f"{column}_runs"])
    if runs < 2:
        return value
    low, high = format(row[f"{column}_min"], fmt), format(row[f"{column}_max"], fmt)
    return f"{value}, median of {runs} runs {low}-{high}{unit}"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and value == value


def _key_text(row: pd.Series | dict, cols: list[str]) -> str:
    return " ".join(f"{row[c]}" if not c.startswith("p_") else f"{c[2:]}={row[c]}" for c in cols)


def gates(ctx: GateContext) -> list[Gate]:
    """The decode gates of the current run against the baseline runs (see the module docstring)."""
    out: list[Gate] = []
    cur_df = ctx.cur_df
    time_col = gate_time(*ctx.base_frames, cur_df)
    base_fits, base_pay = reference_figures(ctx.base_frames, time_col)
    cur_fits = slopes(cur_df, time_col)
    if not base_fits.empty:
        cur_index = {tuple(r[c] for c in [*KEY, "p_cache"]): r for _, r in cur_fits.iterrows()} \
            if not cur_fits.empty else {}
        for _, b in base_fits.iterrows():
            key = tuple(b[c] for c in [*KEY, "p_cache"])
            subject = _key_text(b, [*KEY, "p_cache"])
            c = cur_index.get(key)
            if c is None:
                out.append(Gate("missing", subject, "not measured", "measured as in the baseline", False))
                continue
            if b["p_cache"] == "raw":
                out.append(Gate("cached slope", subject, f"{c['slope_all']:.3f}", f"<= {CACHED_SLOPE_MAX}",
                                bool(c["slope_all"] <= CACHED_SLOPE_MAX)))
                limit = b["slope_all"] + CACHED_SLOPE_DRIFT
                out.append(Gate("cached slope vs baseline", subject, f"{c['slope_all']:.3f}",
                                f"<= {limit:.3f} (baseline {_spread(b, 'slope_all', '.3f')} + {CACHED_SLOPE_DRIFT})",
                                bool(c["slope_all"] <= limit)))
            elif c["longest"] >= UNCACHED_MIN_LENGTH and c["points"] >= 3:
                out.append(Gate("uncached slope", f"{subject} (at T={c['longest']})", f"{c['model_end_slope']:.3f}",
                                f">= {UNCACHED_SLOPE_MIN}", bool(c["model_end_slope"] >= UNCACHED_SLOPE_MIN)))
    cur_pay = cache_payoff(cur_df, time_col)
    if not base_pay.empty:
        cur_index = {tuple(r[c] for c in KEY): r for _, r in cur_pay.iterrows()} if not cur_pay.empty else {}
        for _, b in base_pay.iterrows():
            subject = _key_text(b, KEY)
            c = cur_index.get(tuple(b[k] for k in KEY))
            if c is None:
                out.append(Gate("missing", subject + " (cache speed-up)", "not measured", "measured", False))
                continue
            # paired rounds where both runs have them, else the fitted curves (the same kind on both sides)
            column = "speedup_paired" if _finite(b["speedup_paired"]) and _finite(c["speedup_paired"]) \
                else "speedup_fit"
            how = "paired" if column == "speedup_paired" else "fitted"
            limit, why = SPEEDUP_KEEP * b[column], f"{SPEEDUP_KEEP} x baseline"
            lowest = b.get(f"{column}_min")
            if int(b.get(f"{column}_runs", 1)) >= 2 and _finite(lowest) and SPEEDUP_KEEP_LOWEST * lowest < limit:
                limit, why = SPEEDUP_KEEP_LOWEST * lowest, f"{SPEEDUP_KEEP_LOWEST} x the lowest baseline run"
            out.append(Gate("cache speed-up", f"{subject} T={c['longest']}", f"{c[column]:.2f}x ({how})",
                            f">= {limit:.2f}x ({why}; baseline {_spread(b, column, '.2f', 'x')})",
                            bool(c[column] >= limit)))
    agree = token_agreement(cur_df)
    for _, r in agree.iterrows() if not agree.empty else []:
        if not r["identical"]:
            out.append(Gate("identical tokens", _key_text(r, [*KEY, "p_decode_tokens"]) + " cached vs uncached",
                            "different", "identical", False))
    if not agree.empty and agree["identical"].all():
        out.append(Gate("identical tokens", f"{len(agree)} cached/uncached pairs", "identical", "identical", True))
    peer = peers(cur_df)
    for _, r in peer.iterrows() if not peer.empty else []:
        out.append(Gate("identical tokens",
                        f"{r['variant']} {r['backend']} {r['p_cache']} T={r['p_decode_tokens']} vs transformers",
                        "identical" if r["tokens_identical"] else "different", "identical",
                        bool(r["tokens_identical"])))
    return out


def baseline_figures(frames: list[pd.DataFrame]) -> list[str]:
    """The reference figures a new baseline of these runs sets: cached slopes and cache speed-ups, each
    with its median and range over the runs."""
    fits, pays = reference_figures(frames, gate_time(*frames))
    rows = [f"{r.variant} {r.backend} batch={r.p_batch} {r.p_dtype}: cached slope {r.slope_all:.3f} "
            f"({r.slope_all_min:.3f}-{r.slope_all_max:.3f})" for r in fits.itertuples() if r.p_cache == "raw"] \
        if not fits.empty else []
    for r in pays.itertuples() if not pays.empty else []:
        for column, how in (("speedup_paired", "paired rounds"), ("speedup_fit", "fitted curves")):
            if getattr(r, f"{column}_runs"):
                rows.append(f"{r.variant} {r.backend} batch={r.p_batch} {r.p_dtype}: cache speed-up ({how}) "
                            f"{getattr(r, column):.2f}x ({getattr(r, column + '_min'):.2f}-"
                            f"{getattr(r, column + '_max'):.2f}x)")
    return rows
