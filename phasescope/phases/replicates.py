"""Per-prompt values of an order parameter as ``[checkpoint, prompt]`` arrays: what the bootstraps resample.

The measures store an order parameter ``q``'s value on each prompt as the quantity ``f"{q}_prompt"``
(the dims of ``q`` plus ``index`` = the prompt's number in the batch; docs/measures.md,
"Uncertainties"). A split quantity (``loss_test_prompt``) has rows for its own prompts only, so the
prompt numbers of a series are whatever its rows hold, not ``0..N−1``. Pure pandas, no torch.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd

from phasescope.measures.registry import OrderParameter

__all__ = [
    "PROMPT_SUFFIX",
    "SeriesKey",
    "aligned",
    "paired_resamples",
    "prompt_matrices",
    "prompt_rows",
    "resampled_moments",
    "series_key",
]

PROMPT_SUFFIX = "_prompt"

SeriesKey = tuple[str, int | None, int | None]
"""``(quantity, layer, head)``, None where the quantity is not per layer or per head."""


def series_key(quantity: Hashable, layer: Any, head: Any) -> SeriesKey:
    """The key of one series, from a table's ``quantity``, ``layer`` and ``head`` values."""
    return (str(quantity), None if pd.isna(layer) else int(layer), None if pd.isna(head) else int(head))


def prompt_rows(table: pd.DataFrame, op: OrderParameter) -> pd.DataFrame:
    """The per-prompt rows of an order parameter (empty when the table has none).

    The order parameter's row filter applies, except on ``index``: on per-prompt rows ``index`` is the
    prompt, so a quantity that already has an ``index`` (the Hessian's eigenvalue number) has no
    per-prompt rows this can tell apart, and gets none.
    """
    rows = table[(table["measure"] == op.measure) & (table["quantity"] == op.quantity + PROMPT_SUFFIX)]
    if not len(rows) or "index" not in rows or any(column == "index" for column, _ in op.where):
        return rows.iloc[:0]
    for column, value in op.where:
        if column in rows:
            rows = rows[rows[column] == value]
    return rows


def prompt_matrices(rows: pd.DataFrame) -> dict[SeriesKey, pd.DataFrame]:
    """Per series, its per-prompt values as a frame ``[checkpoint, prompt]`` (steps ≤ 0 left out).

    Args:
        rows: per-prompt rows of one quantity (``prompt_rows``); ``quantity`` is ``q_prompt``.

    Returns:
        ``{(q, layer, head): frame}`` keyed by the order parameter's own name ``q``, each frame indexed
        by checkpoint (increasing) with one column per prompt number.
    """
    rows = rows[(rows["checkpoint"] > 0) & rows["value"].notna()]
    out: dict[SeriesKey, pd.DataFrame] = {}
    for (q, layer, head), group in rows.groupby(["quantity", "layer", "head"], dropna=False, sort=True):
        name = str(q).removesuffix(PROMPT_SUFFIX)
        wide = group.pivot_table(index="checkpoint", columns="index", values="value", aggfunc="mean")
        out[series_key(name, layer, head)] = wide.sort_index()
    return out


def aligned(frame: pd.DataFrame | None, steps: np.ndarray) -> np.ndarray | None:
    """The per-prompt values at exactly ``steps``, ``[checkpoint, prompt]``, or None.

    Prompts missing at any of the steps are left out (the paired bootstrap needs every prompt at every
    checkpoint); None when a step has no per-prompt value at all or fewer than two prompts remain.
    """
    if frame is None:
        return None
    values = frame.reindex(np.asarray(steps)).dropna(axis=1, how="any").to_numpy(dtype=float)
    return values if values.shape[1] >= 2 else None


def paired_resamples(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``n`` prompts is drawn in each of ``n_boot`` resamples: ``[n_boot, n]``.

    One row is one resample, used at every checkpoint (the paired bootstrap). Counts, not the drawn
    indices, so a resample of thousands of prompts (grokking's 3,481) is a matrix product, never a
    ``[checkpoint, resample, prompt]`` copy.
    """
    picks = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1.0)
    return counts


def resampled_moments(per_prompt: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (``ddof = 1``) over the prompts of every resample at every checkpoint.

    Args:
        per_prompt: ``[checkpoint, prompt]``.
        counts: ``[resample, prompt]`` (``paired_resamples``).

    Returns:
        ``(mean, var)``, each ``[resample, checkpoint]``.
    """
    n = counts.sum(1, keepdims=True)  # [B, 1]
    # Centre per checkpoint first: the variance as E[x²] − E[x]² loses digits on an offset series.
    centred = per_prompt - per_prompt.mean(1, keepdims=True)
    mean_c = counts @ centred.T / n
    square = counts @ (centred**2).T / n
    var = np.maximum(square - mean_c**2, 0.0) * n / np.maximum(n - 1, 1)
    return mean_c + per_prompt.mean(1), var
