"""The positions study's judge half: its claims and its regression gates (parameter counts equal to the
baseline's; learned positions refuse positions past their table)."""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext, exact_gate
from reports.page import study_rows
from reports.verdicts import FAILS, HOLDS, MIXED, UNMEASURED, Claim, Verdict, unmeasured


def rope_extrapolates(df: pd.DataFrame) -> Verdict:
    """RoPE: zero position parameters, and at the longest evaluated context a lower loss than sinusoidal
    (learned positions cannot be evaluated there at all)."""
    params, extra = study_rows(df, "positions", "params"), study_rows(df, "positions", "extrapolation")
    if params.empty and extra.empty:
        return unmeasured("positional-embedding records")
    parts, no_params, better = [], None, None
    if not params.empty and (params["p_pos"] == "rope").any():
        n = int(params[params["p_pos"] == "rope"]["m_position_params"].iloc[0])
        no_params = n == 0
        parts.append(f"RoPE adds {n:,} parameters")
    if not extra.empty and {"rope", "sinusoidal"} <= set(extra["p_pos"]):
        by = extra.drop_duplicates("p_pos").set_index("p_pos")["m_by_length"]
        longest = str(max(int(k) for k in by["rope"]))
        rope, sin = by["rope"][longest], by["sinusoidal"][longest]
        train_len = str(int(extra["p_train_len"].iloc[0]))
        if "error" not in rope and "error" not in sin and train_len in by["rope"] and train_len in by["sinusoidal"]:
            lower = rope["bits_per_byte"] < sin["bits_per_byte"]
            rope_change = rope["bits_per_byte"] - by["rope"][train_len]["bits_per_byte"]
            sin_change = sin["bits_per_byte"] - by["sinusoidal"][train_len]["bits_per_byte"]
            degrades_less = rope_change <= sin_change + 0.02
            better = lower and degrades_less
            parts.append(f"at {longest} tokens (trained at {train_len}): RoPE {rope['bits_per_byte']:.3f} vs "
                         f"sinusoidal {sin['bits_per_byte']:.3f} bits/byte; change from {train_len} tokens: RoPE "
                         f"{rope_change:+.3f}, sinusoidal {sin_change:+.3f}")
            if lower != degrades_less:
                better = None if not lower else False
                parts.append("lower loss but a larger change than sinusoidal" if lower else
                             "a smaller change but a higher loss than sinusoidal")
        if "learned" in by.index and "error" in by["learned"].get(longest, {}):
            parts.append("learned: not defined there")
    if better is None and len(parts) > 1 and "change from" in parts[1]:  # measured, but the two signs disagree
        return Verdict(MIXED, "; ".join(parts))
    if no_params is None or better is None:
        return Verdict(MIXED if (no_params or better) else UNMEASURED, "; ".join(parts) + " (only part measured)")
    return Verdict(HOLDS if no_params and better else (MIXED if no_params or better else FAILS), "; ".join(parts))


def learned_positions_cost(df: pd.DataFrame) -> Verdict:
    """Learned positions add parameters (a table of max_seq_len x d_model)."""
    params = study_rows(df, "positions", "params")
    if params.empty or not (params["p_pos"] == "learned").any():
        return unmeasured("positional parameter counts")
    row = params[params["p_pos"] == "learned"].iloc[0]
    share = row["m_position_params"] / row["m_params"]
    return Verdict(HOLDS if row["m_position_params"] > 0 else FAILS,
                   f"{int(row['m_position_params']):,} parameters at {row['variant']}'s shape ({100 * share:.2f}%)")


CLAIMS = (
    Claim("rope", "RoPE adds no parameters and extrapolates past the trained context better.", "positions",
          rope_extrapolates),
    Claim("learned-positions", "Learned position embeddings cost parameters (and stop at their table).",
          "positions", learned_positions_cost),
)


def gates(ctx: GateContext) -> list[Gate]:
    """Exact parameter counts per scheme, and learned positions refusing past their table."""
    out: list[Gate] = []
    base, cur = study_rows(ctx.fullest_base, "positions", "params"), study_rows(ctx.cur_df, "positions", "params")
    if not base.empty and not cur.empty:
        index = cur.drop_duplicates("p_pos").set_index("p_pos")["m_position_params"]
        for r in base.drop_duplicates("p_pos").itertuples():
            out.append(exact_gate("positions position_params", str(r.p_pos), index.get(r.p_pos), r.m_position_params))
    extra = study_rows(ctx.cur_df, "positions", "extrapolation")
    for r in extra[extra["p_pos"] == "learned"].itertuples() if not extra.empty else []:
        past = [k for k in r.m_by_length if int(k) > r.p_train_len]
        refused = all("error" in r.m_by_length[k] for k in past)
        out.append(Gate("learned positions refuse past the table", f"trained at {int(r.p_train_len)}",
                        "refused" if refused else "evaluated", "refused", refused))
    return out
