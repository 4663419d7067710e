"""The tying study's report half: exact parameter counts tied vs untied, and quality at equal budget."""

from __future__ import annotations

import pandas as pd

from reports.page import Section, Table, fmt, study_rows


def section(df: pd.DataFrame) -> Section | None:
    """Weight tying: exact parameter table and quality at equal budget."""
    params, quality = study_rows(df, "tying", "params"), study_rows(df, "tying", "quality")
    if params.empty and quality.empty:
        return None
    out = Section("tying", "Weight tying", "Tied: the output head reuses the token embedding matrix (same storage). "
                  "Counts are exact, from models built on the meta device.")
    if not params.empty:
        out.tables.append(Table(
            "Parameters tied vs untied", ["variant", "natively", "tied", "untied", "saved", "share of the tied model",
                                          "share of the untied model"],
            [[r.variant, "tied" if r.p_native_tied else "untied", fmt(int(r.m_tied_params)),
              fmt(int(r.m_untied_params)), fmt(int(r.m_saved_params)), f"{100 * r.m_saved_share_of_tied:.2f}%",
              f"{100 * r.m_saved_share_of_untied:.2f}%"]
             for r in params.drop_duplicates("variant").itertuples()]))
    if not quality.empty:
        out.tables.append(Table(
            "Quality at equal budget", ["machine", "variant", "tied", "parameters", "steps", "held-out bits/byte",
                                        "unigram"],
            [[r.machine, r.variant, "tied" if r.p_tied else "untied", fmt(int(r.m_params)), fmt(int(r.p_steps)),
              f"{r.m_val_bpb:.4f}", f"{r.m_unigram_bpb:.3f}"] for r in quality.itertuples()]))
    return out


def summary(df: pd.DataFrame) -> list[str]:
    """The tying study leaves its findings to the scoreboard and its section."""
    return []
