"""The compute functions of the activation-field measures: residual flow, correlations, mean-field.

Their registry entries (``phasescope.measures.builtin_fields``) name extra hooks (``Measure.hooks``),
so the shared forward pass of the ``activation`` kind captures the residual stream or the MLP
pre-activations as well as the scores (``phasescope.analysis.run.capture_forward``); each function
here gathers the layers it reads from ``MeasureInput.activations`` and calls the pure measure.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from phasescope.analysis.adapters import MeasureInput
from phasescope.measures.tables import empty_table

__all__ = [
    "correlation",
    "meanfield",
    "residual",
]


def _layers(data: MeasureInput, suffix: str) -> list[Tensor] | None:
    """``blocks.<layer>.<suffix>`` of every layer, or None when some layer lacks it."""
    n_layers = int(data.loaded.model.cfg.n_layers)
    found = [data.activations.get(f"blocks.{layer}.{suffix}") for layer in range(n_layers)]
    if any(t is None for t in found):
        return None
    return [t for t in found if t is not None]


def _block_outputs(data: MeasureInput) -> Tensor:
    """``[layer, batch, pos, d_model]``: the stream each block hands on to the next."""
    # A post-LayerNorm encoder block (BERT) hands on hook_normalized_resid_post, not hook_resid_post.
    outputs = _layers(data, "hook_normalized_resid_post") or _layers(data, "hook_resid_post")
    assert outputs is not None, "the entry's hooks include the block outputs"
    return torch.stack(outputs)


def residual(data: MeasureInput) -> pd.DataFrame:
    """Residual norms around each block and the shares blocks add (``phasescope.measures.residual``)."""
    from phasescope.measures.residual import residual_table

    pre, attn_out = _layers(data, "hook_resid_pre"), _layers(data, "hook_attn_out")
    assert pre is not None and attn_out is not None, "every block has these hooks"
    mlp_out, mid = _layers(data, "hook_mlp_out"), _layers(data, "hook_resid_mid")
    return residual_table(
        torch.stack(pre),
        _block_outputs(data),
        torch.stack(attn_out),
        data.step,
        mlp_out=None if mlp_out is None else torch.stack(mlp_out),
        # A parallel block (GPT-J, GPT-NeoX) has no mid: its MLP reads the block's input.
        mlp_in=None if mid is None else torch.stack(mid),
    )


def correlation(data: MeasureInput) -> pd.DataFrame:
    """Attention mass against distance and the residual correlation (``phasescope.measures.correlation``)."""
    from phasescope.measures.correlation import correlation_table

    return correlation_table(data.patterns, _block_outputs(data), data.step, causal=data.loaded.causal)


def meanfield(data: MeasureInput) -> pd.DataFrame:
    """MLP pre-activation statistics (``phasescope.measures.meanfield``); empty for a model without MLPs."""
    from phasescope.measures.meanfield import meanfield_table

    n_layers = int(data.loaded.model.cfg.n_layers)
    preacts = {
        layer: t
        for layer in range(n_layers)
        if (t := data.activations.get(f"blocks.{layer}.mlp.hook_pre")) is not None
    }
    if not preacts:
        # Attention-only models (the induction zoo) have no MLP: the measure does not apply, as heads
        # says of a model without a causal head, with an empty table.
        return empty_table()
    return meanfield_table(preacts, data.step)
