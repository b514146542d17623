"""The tidy table every measure returns: one row per value.

Columns, always present and in this order::

    measure     str    which measure produced the row ("entropy", "thermo", ...)
    checkpoint  int    training step of the checkpoint
    layer       Int64  layer index, <NA> where the value is not per layer
    head        Int64  head index, <NA> where the value is not per head
    quantity    str    what the value is ("entropy", "beta_star", "sigma", ...)
    value       float  the number (float64 in memory, float32 when stored)

plus coordinate columns where a quantity has them: ``beta``, ``position``, ``index`` (floats or Int64,
<NA> elsewhere), ``matrix`` (the weight matrix name for weight spectra) and ``x``, ``y`` (float
plot coordinates: a loss-surface grid point, a histogram bin centre), and the uncertainty columns
where a value has one (docs/measures.md, "Uncertainties"): ``se`` (its standard error), ``ci_lo`` and
``ci_hi`` (a 95% interval), float, NaN on rows without one. One format for every measure is what
lets the API, the dashboard and notebooks treat them alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch is imported lazily so the backend can read tables without it
    import torch

__all__ = ["BASE_COLUMNS", "COORD_COLUMNS", "UNCERTAINTY_COLUMNS", "concat_tables", "empty_table", "tidy"]

BASE_COLUMNS = ["measure", "checkpoint", "layer", "head", "quantity", "value"]
COORD_COLUMNS = ["beta", "position", "index", "matrix", "x", "y"]
UNCERTAINTY_COLUMNS = ["se", "ci_lo", "ci_hi"]
_INT_COLUMNS = {
    "checkpoint": "int64",
    "layer": "Int64",
    "head": "Int64",
    "position": "Int64",
    "index": "Int64",
}


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence[float] | float) -> np.ndarray:
    import sys

    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def tidy(
    measure: str,
    quantity: str,
    values: torch.Tensor | np.ndarray | float,
    dims: Sequence[str] = (),
    *,
    checkpoint: int = 0,
    coords: dict[str, Sequence[float] | np.ndarray | torch.Tensor] | None = None,
    fixed: dict[str, object] | None = None,
) -> pd.DataFrame:
    """Flatten an n-d array of one quantity into tidy rows.

    Args:
        measure: the measure's name.
        quantity: the quantity's name.
        values: array whose axes are named by ``dims`` (a scalar when ``dims`` is empty).
        dims: one name per axis, each a column: "layer", "head", "position", "index", "beta", "matrix",
            "x", "y".
        checkpoint: the training step these values belong to.
        coords: the coordinate value of each index along an axis (default: the index itself).
        fixed: columns with one value for every row (e.g. ``{"layer": 3}``).

    Returns:
        A DataFrame with ``BASE_COLUMNS`` and the coordinate columns that were named.

    >>> import torch
    >>> tidy("entropy", "entropy", torch.ones(2, 3), ("layer", "head")).shape
    (6, 6)
    """
    arr = _as_numpy(values)
    if arr.ndim != len(dims):
        raise ValueError(f"{quantity}: values have {arr.ndim} axes but dims name {len(dims)}: {dims}")
    coords = coords or {}
    # Meshgrid in 'ij' order matches a C-order ravel of the values.
    grids = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij") if dims else []
    columns: dict[str, object] = {
        "measure": measure,
        "checkpoint": int(checkpoint),
        "quantity": quantity,
        "value": arr.ravel(),
    }
    for axis, name in enumerate(dims):
        idx = grids[axis].ravel()
        if name in coords:
            columns[name] = np.asarray(_as_numpy(coords[name]) if name != "matrix" else coords[name])[idx]
        else:
            columns[name] = idx
    for name, value in (fixed or {}).items():
        columns[name] = value
    frame = pd.DataFrame(columns, index=pd.RangeIndex(arr.size))
    return _normalise(frame)


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("layer", "head"):
        if col not in frame:
            frame[col] = pd.NA
    for col, dtype in _INT_COLUMNS.items():
        if col in frame:
            frame[col] = frame[col].astype(dtype)
    frame["value"] = frame["value"].astype("float64")
    coords = [c for c in COORD_COLUMNS if c in frame]
    spreads = [c for c in UNCERTAINTY_COLUMNS if c in frame]
    for col in spreads:
        frame[col] = frame[col].astype("float64")
    return frame[BASE_COLUMNS + coords + spreads]


def empty_table() -> pd.DataFrame:
    """A table with the base columns and no rows."""
    return _normalise(pd.DataFrame({c: pd.Series([], dtype="object") for c in BASE_COLUMNS}))


def concat_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack tidy tables, keeping the union of coordinate columns with the right dtypes."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_table()
    frame = pd.concat(tables, ignore_index=True, sort=False)
    return _normalise(frame)
