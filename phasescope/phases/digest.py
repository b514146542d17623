"""A per-checkpoint digest of a results table: the order parameters a transition shows in.

One row per checkpoint, one column per quantity the measures declare for it (a registry quantity's
``digest``): e.g. the loss, the strongest induction and previous-token heads, and the last layer's
mean entropy, median β* and mean stable rank, which is what a person scans first.
"""

from __future__ import annotations

import pandas as pd

from phasescope.measures.registry import Quantity, measures

__all__ = ["checkpoint_digest", "digest_column"]


def digest_column(quantity: Quantity) -> str:
    """The digest's column name of a quantity, e.g. ``induction_score_max``, ``beta_star_last_layer``."""
    assert quantity.digest is not None, quantity.name
    how, last_layer = quantity.digest
    return quantity.name + ("_max" if how == "max" else "") + ("_last_layer" if last_layer else "")


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
    digest = {}
    for entry in measures():
        for quantity in entry.quantities:
            if quantity.digest is None:
                continue
            how, last_layer = quantity.digest
            series = _per_checkpoint(table, entry.name, quantity.name, how, last_layer)
            if len(series):
                digest[digest_column(quantity)] = series
    frame = pd.DataFrame(digest)
    frame.index.name = "checkpoint"
    return frame.sort_index()
