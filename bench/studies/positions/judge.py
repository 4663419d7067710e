"""The positions study's judge half: the claims in their parts, and the regression gates (parameter counts
equal to the baseline's; learned positions refuse positions past their table).

- RoPE "adds no parameters" and learned positions "cost parameters": exact counts.
- Learned positions "stop at their table": the trained model refuses positions past it.
- RoPE "extrapolates past the trained context better than sinusoidal": every arm trained at the same
  context and budget, once per seed; the held-out loss at the longest evaluated context, sinusoidal minus
  RoPE, paired by seed, past 0.02 bits/byte. Judged only where every arm learned (beats the unigram
  model by 0.5 bits/byte at the trained context).
"""

from __future__ import annotations

import pandas as pd

from reports.gates import Gate, GateContext, exact_gate
from reports.page import study_rows
from reports.verdicts import (
    FAILS,
    HOLDS,
    Claim,
    Verdict,
    judge_values,
    learned_something,
    not_testable,
    unmeasured,
)

from .report import extrapolation_long

BETTER_BITS = 0.02  # "extrapolates better": a lower held-out loss past the trained context by this much


def _params(df: pd.DataFrame, pos: str) -> pd.Series | None:
    params = study_rows(df, "positions", "params")
    rows = params[params["p_pos"] == pos] if not params.empty else params
    return None if rows.empty else rows.iloc[0]


def rope_no_params(df: pd.DataFrame) -> Verdict:
    """Exact: RoPE adds no parameters."""
    row = _params(df, "rope")
    if row is None:
        return unmeasured("positional parameter counts")
    n = int(row["m_position_params"])
    return Verdict(HOLDS if n == 0 else FAILS, f"RoPE adds {n:,} parameters",
                   model=f"{row['variant']}'s shape, counted exactly")


def learned_positions_cost(df: pd.DataFrame) -> Verdict:
    """Exact: learned positions add parameters (a table of max_seq_len x d_model)."""
    row = _params(df, "learned")
    if row is None:
        return unmeasured("positional parameter counts")
    share = row["m_position_params"] / row["m_params"]
    return Verdict(HOLDS if row["m_position_params"] > 0 else FAILS,
                   f"{int(row['m_position_params']):,} parameters ({100 * share:.2f}% of the model)",
                   model=f"{row['variant']}'s shape, counted exactly")


def learned_stop(df: pd.DataFrame) -> Verdict:
    """Exact: the learned-position model refuses every evaluated length past its table."""
    extra = study_rows(df, "positions", "extrapolation")
    rows = extra[extra["p_pos"] == "learned"] if not extra.empty else extra
    if rows.empty:
        return unmeasured("extrapolation records of learned positions")
    r = rows.iloc[0]
    past = [k for k in r["m_by_length"] if int(k) > r["p_train_len"]]
    if not past:
        return unmeasured("an evaluation past the learned table")
    refused = all("error" in r["m_by_length"][k] for k in past)
    return Verdict(HOLDS if refused else FAILS,
                   f"past {int(r['p_train_len'])} positions ({', '.join(past)} tokens): "
                   + ("the model refuses with its position-table error" if refused else "the model evaluated them"),
                   model=f"{r['variant']} trained at {int(r['p_train_len'])} tokens")


def rope_extrapolates(df: pd.DataFrame) -> Verdict:
    """Held-out loss at the longest evaluated context: sinusoidal minus RoPE per seed, past 0.02 bits/byte."""
    extra = study_rows(df, "positions", "extrapolation")
    if extra.empty or not {"rope", "sinusoidal"} <= set(extra["p_pos"]):
        return unmeasured("extrapolation records of RoPE and sinusoidal positions")
    r0 = extra.iloc[0]
    seeds = sorted({int(s) for s in extra["p_seed"]}) if "p_seed" in extra else [0]
    sinusoidal = extra[extra["p_pos"] == "sinusoidal"].iloc[0]
    scaled = " with the sqrt(d_model) embedding scale" if str(sinusoidal.get("p_embed_scale")) == "True" else ""
    model = (f"{r0['variant']} per scheme (sinusoidal{scaled}), trained {int(r0['p_steps'])} steps at "
             f"{int(r0['p_train_len'])} tokens, seeds {', '.join(map(str, seeds))}")
    if "m_unigram_bpb" in extra:
        reason = learned_something({f"{r.p_pos} seed {int(getattr(r, 'p_seed', 0))}": (r.m_val_bpb_at_train_len,
                                                                                       r.m_unigram_bpb)
                                    for r in extra.itertuples()})
        if reason:
            return not_testable("an arm did not learn enough to compare extrapolation", reason, model)
    long = extrapolation_long(df)
    longest = int(long[long["scheme"] == "rope"]["length"].max())
    at = long[long["length"] == longest].set_index(["scheme", "seed"])["bpb"]
    diffs = [at[("sinusoidal", s)] - at[("rope", s)] for s in seeds if ("sinusoidal", s) in at and ("rope", s) in at]
    second = sorted({int(v) for v in long["length"]})
    mid = second[-2] if len(second) > 1 else longest
    at_mid = long[long["length"] == mid].groupby("scheme")["bpb"].mean()
    return judge_values(diffs, BETTER_BITS, model=model, unit="bits/byte",
                        figures=f"at {longest} tokens RoPE is {sum(diffs) / len(diffs):+.3f} bits/byte below "
                                f"sinusoidal (mean over seeds; at {mid}: RoPE {at_mid.get('rope', float('nan')):.3f}, "
                                f"sinusoidal {at_mid.get('sinusoidal', float('nan')):.3f}); learned: not defined there")


CLAIMS = (
    Claim("rope-params", "RoPE adds no parameters.", "positions", rope_no_params),
    Claim("rope-extrapolates", "RoPE extrapolates past the trained context better than sinusoidal positions.",
          "positions", rope_extrapolates),
    Claim("learned-positions", "Learned position embeddings cost parameters.", "positions", learned_positions_cost),
    Claim("learned-table", "Learned position embeddings stop at their table.", "positions", learned_stop),
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
