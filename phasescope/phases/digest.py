"""A per-checkpoint digest of a results table: the order parameters a transition shows in.

One row per checkpoint with the loss, the strongest induction and previous-token heads, and the last
layer's mean entropy, median β* and mean stable rank, which is what a person scans first.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["checkpoint_digest"]


def _per_checkpoint(
    table: pd.DataFrame, measure: str, quantity: str, how: str, last_layer: bool
) -> pd.Series:
    rows = table[(table["measure"] == measure) & (table["quantity"] == quantity)]
    if last_layer and len(rows) and rows["layer"].notna().any():
        rows = rows[rows["layer"] == rows["layer"].max()]
    rows = rows.dropna(subset=["value"])
    return rows.groupby("checkpoint")["value"].agg(how)


def checkpoint_digest(table: pd.DataFrame) -> pd.DataFrame:
    """Summarise a tidy results table per checkpoint (columns present only when measured)."""
    columns = {
        "loss": ("loss", "loss", "mean", False),
        "accuracy": ("loss", "accuracy", "mean", False),
        "induction_max": ("heads", "induction_score", "max", False),
        "prev_token_max": ("heads", "prev_token_score", "max", False),
        "entropy_last_layer": ("entropy", "entropy_mean", "mean", True),
        "beta_star_last_layer": ("thermo", "beta_star", "median", True),
        "stable_rank_last_layer": ("spectra", "stable_rank", "mean", True),
    }
    digest = {}
    for name, (measure, quantity, how, last) in columns.items():
        series = _per_checkpoint(table, measure, quantity, how, last)
        if len(series):
            digest[name] = series
    frame = pd.DataFrame(digest)
    frame.index.name = "checkpoint"
    return frame.sort_index()
