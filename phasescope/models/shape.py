"""A model's dimensions (layers, heads, widths) without loading its weights.

Two sources, both cheap: what a series's manifest declares (zoo and local series: read at submit),
and the ``layer`` / ``head`` columns of its results (any kind: known once one checkpoint is
measured). The analysis status carries the result (``phasescope.responses.ModelShape``), so the
dashboard lays itself out without downloading results.
"""

from __future__ import annotations

from typing import Any

from phasescope.config import Settings
from phasescope.errors import PhasescopeError

__all__ = ["SHAPE_KEYS", "declared_shape", "model_shape"]

SHAPE_KEYS = ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab")


def declared_shape(model: str, settings: Settings) -> dict[str, int | None] | None:
    """The dimensions a series's manifest declares (zoo and local series); None for other kinds.

    Hugging Face and TransformerLens models would need their config fetched or converted: their
    shape comes from the results table instead (:func:`model_shape`).

    Args:
        model: a model string (``zoo:induction-2l``, a series directory under the model roots, ...).
        settings: where the zoo and the model roots are.
    """
    from phasescope.models.loading import parse_model_spec
    from phasescope.models.series import is_series_dir, read_manifest

    try:
        ref = parse_model_spec(model, settings)
        if ref.kind not in ("zoo", "series") or ref.path is None or not is_series_dir(ref.path):
            return None
        config = read_manifest(ref.path).config
    except (PhasescopeError, OSError, ValueError):
        return None
    # TransformerLens writes -1 (or nothing) for what it derives at load time: unknown here.
    return {k: v if isinstance(v, int) and v > 0 else None for k in SHAPE_KEYS for v in [config.get(k)]}


def model_shape(declared: dict[str, Any] | None, table: Any) -> dict[str, int | None] | None:
    """The model's dimensions: layers and heads as measured in ``table``, the rest as declared.

    Args:
        declared: the shape from the model's files (:func:`declared_shape`), or None.
        table: results rows with ``layer`` and ``head`` columns (any number of checkpoints), or None.

    Returns:
        ``{n_layers, n_heads, d_model, d_head, n_ctx, d_vocab}`` (None where unknown), or None when
        nothing is known.

    >>> import pandas as pd
    >>> model_shape(None, pd.DataFrame({"layer": [0, 1, None], "head": [0, 3, None]}))["n_heads"]
    4
    """
    shape: dict[str, int | None] = dict.fromkeys(SHAPE_KEYS)
    shape.update({k: v for k, v in (declared or {}).items() if k in SHAPE_KEYS})
    for key, column in (("n_layers", "layer"), ("n_heads", "head")):
        if column in getattr(table, "columns", ()):
            values = table[column].dropna()
            if len(values):
                # Per-head measures cover every layer and head; model-level rows have neither (NaN).
                shape[key] = int(values.max()) + 1
    return shape if any(v is not None for v in shape.values()) else None
