"""Server-side downsampling for the figures: the browser never needs more points than it has pixels.

A line keeps at most about ``max_points`` points, chosen so that what a reader looks for survives: the
ends, every local extreme (each of ``max_points // 2`` equal-count buckets along x keeps its lowest
and its highest value, so a spike or a jump is never smoothed away), and the points nearest to the
x values the figure marks (the detected transition, the checkpoint cursor). A heatmap over
checkpoints keeps at most ``max_columns`` columns the same way: the ends, the marked steps, and in
each bucket the column that differs most from the one before it (where a transition is). Below the
limits nothing is dropped. Pure numpy: tested in tests/unit/test_downsample.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_COLUMNS", "MAX_LINE_POINTS", "column_indices", "line_indices"]

MAX_LINE_POINTS = 600  # per line; a figure ~1000 px wide shows no more
MAX_COLUMNS = 400  # heatmap columns over checkpoints


def _nearest(x: np.ndarray, targets: Sequence[float]) -> list[int]:
    """Index of the point nearest each target (``x`` sorted ascending), for the finite targets."""
    out = []
    for t in targets:
        if t is None or not np.isfinite(t) or not len(x):
            continue
        i = int(np.clip(np.searchsorted(x, t), 1, len(x) - 1)) if len(x) > 1 else 0
        out.append(i - 1 if len(x) > 1 and abs(x[i - 1] - t) <= abs(x[i] - t) else i)
    return out


def line_indices(
    x: np.ndarray, y: np.ndarray, max_points: int = MAX_LINE_POINTS, keep_x: Sequence[float] = ()
) -> np.ndarray:
    """Positions (into ``x``, sorted ascending) of the points one line keeps.

    Args:
        x: the line's x values, shape (n,), sorted ascending.
        y: its y values, shape (n,); NaN is never chosen as an extreme.
        max_points: about how many points to keep (the marked ones come on top).
        keep_x: x values whose nearest point is always kept.

    Returns:
        Sorted unique indices; ``arange(n)`` when ``n <= max_points``.
    """
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    buckets = np.array_split(np.arange(1, n - 1), max(1, (max_points - 2) // 2))
    keep = [0, n - 1, *_nearest(np.asarray(x, dtype=float), keep_x)]
    values = np.asarray(y, dtype=float)
    for idx in buckets:
        if not len(idx):
            continue
        v = values[idx]
        if np.isnan(v).all():
            keep.append(int(idx[0]))
            continue
        keep += [int(idx[np.nanargmin(v)]), int(idx[np.nanargmax(v)])]
    return np.unique(np.asarray(keep, dtype=int))


def column_indices(
    columns: np.ndarray, z: np.ndarray, max_columns: int = MAX_COLUMNS, keep_x: Sequence[float] = ()
) -> np.ndarray:
    """Columns a heatmap keeps: ends, marked steps, and the sharpest change of each bucket.

    Args:
        columns: the column coordinates (checkpoint steps), shape (m,), sorted ascending.
        z: the heatmap, shape (rows, m).
        max_columns: about how many columns to keep.
        keep_x: steps whose nearest column is always kept.

    Returns:
        Sorted unique column indices; ``arange(m)`` when ``m <= max_columns``.
    """
    m = len(columns)
    if m <= max_columns:
        return np.arange(m)
    zz = np.asarray(z, dtype=float)
    # How much each column differs from the one before it (the largest change over the rows).
    jump = np.zeros(m)
    with np.errstate(invalid="ignore"):
        diff = np.abs(np.diff(zz, axis=1))
    if diff.size:
        finite = np.where(np.isfinite(diff), diff, -np.inf)
        jump[1:] = finite.max(axis=0)
    keep = [0, m - 1, *_nearest(np.asarray(columns, dtype=float), keep_x)]
    for idx in np.array_split(np.arange(1, m - 1), max(1, max_columns - 2)):
        if len(idx):
            keep.append(int(idx[np.argmax(jump[idx])]))
    return np.unique(np.asarray(keep, dtype=int))
