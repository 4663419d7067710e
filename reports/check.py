"""Regression check: every study's gates of a run against a baseline, plus the generic ones.

The baseline is one run or several runs of the same code (a directory of results files). Each study
declares its gates (`gates(ctx)` in its `judge.py`, over `reports.gates.GateContext`): figures that do
not depend on the machine. The generic gates are added here:
- `missing`: a study the baseline measured and the run did not;
- `time` (only when the machine info matches the baseline's): no benchmark of at least 10 ms has a
  fastest round slower than 3x the baseline's median (shared machines do slow down by 2x for
  seconds). Benchmarks whose time is not the measurement (training that a disk cache may skip,
  accuracy evaluations, counts, fresh-process memory probes; each study lists them) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .gates import Gate, GateContext, combine, format_table, machines_match
from .load import TIME, Results, to_frame

TIME_FACTOR_MAX = 3.0
TIME_MIN_SECONDS = 0.01  # shorter benchmarks are dominated by scheduler jitter: not time-gated

__all__ = ["check", "combine", "format_table"]


def _timed(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose fastest round is a measurement worth gating (each study says which are not)."""
    from bench import studies

    if df.empty:
        return df
    owner = {record: study for study in studies.STUDIES.values() for record in study.records}
    phase = df["p_phase"] if "p_phase" in df else pd.Series([None] * len(df), index=df.index)
    keep = [owner[s].timed(s, ph) if s in owner else True for s, ph in zip(df["study"], phase, strict=True)]
    return df[keep]


def _missing(ctx: GateContext) -> list[Gate]:
    """A record study the baseline measured and the run did not."""
    has = lambda df, study: not df.empty and (df["study"] == study).any()  # noqa: E731
    base = [s for s in dict.fromkeys(s for df in ctx.base_frames if not df.empty for s in df["study"])]
    return [Gate("missing", f"{s} study", "not measured", "measured as in the baseline", False)
            for s in base if not has(ctx.cur_df, s)]


def _time_gates(ctx: GateContext) -> list[Gate]:
    same = [df for df, match in zip(ctx.base_frames, ctx.same_machine, strict=True) if match]
    if not same:
        return [Gate("time", "absolute times", "skipped: machine info differs from the baseline's", "same machine",
                     True)]
    gates = []
    base_times = pd.concat([_timed(df)[["name", TIME]] for df in same]).groupby("name")[TIME].median()
    cur_times = _timed(ctx.cur_df).set_index("name")[TIME]
    for name in sorted(set(base_times.index) & set(cur_times.index)):
        if base_times[name] < TIME_MIN_SECONDS:
            continue
        ratio = float(cur_times[name] / base_times[name])
        gates.append(Gate("time", name, f"{ratio:.2f}x baseline", f"<= {TIME_FACTOR_MAX}x", ratio <= TIME_FACTOR_MAX))
    return gates


def check(baseline: Results | Sequence[Results], current: Results) -> list[Gate]:
    """Every gate of `current` against `baseline`: one run, or several runs of the same code."""
    from bench import studies

    baselines = [baseline] if isinstance(baseline, Results) else list(baseline)
    if not baselines:
        raise ValueError("check needs at least one baseline run")
    preset = current.archbench_info.get("preset")
    same_preset = [b for b in baselines if b.archbench_info.get("preset") in (None, preset) or preset is None]
    if not same_preset:  # a smaller preset measures other sizes: every figure would differ for that reason alone
        theirs = ", ".join(sorted({str(b.archbench_info.get("preset")) for b in baselines}))
        return [Gate("preset", "baseline vs this run", f"preset differs: this run {preset!r}",
                     f"a baseline of the same preset (it has {theirs}); no other gate is checked", False)]
    baselines = same_preset
    ctx = GateContext(baselines=baselines, base_frames=[to_frame([b]) for b in baselines],
                      same_machine=[machines_match(b, current) for b in baselines], current=current,
                      cur_df=to_frame([current]))
    gates: list[Gate] = []
    for study in studies.STUDIES.values():
        gates += study.judge_half().gates(ctx)
    return gates + _missing(ctx) + _time_gates(ctx)


def baseline_figures(frames: list[pd.DataFrame]) -> list[str]:
    """The reference figures a baseline of these runs sets, from every study that states them."""
    from bench import studies

    lines = []
    for study in studies.STUDIES.values():
        describe = getattr(study.judge_half(), "baseline_figures", None)
        if describe is not None:
            lines += describe(frames)
    return lines
