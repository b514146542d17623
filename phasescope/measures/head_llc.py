"""Per-head local learning coefficient: the LLC restricted to one attention head's weights.

Definitions, units and what the tests check: docs/measures.md, "Per-head local learning coefficient".
For head h of layer l the SGLD chains of ``phasescope.measures.llc`` move only that head's slices of
W_Q, W_K, W_V, W_O and of b_Q, b_K, b_V (b_O is shared by the layer's heads and is not the head's);
every other weight stays at the checkpoint θ*. The restriction is devinterp's own
(``devinterp.slt.weight_restrictions.create_param_masks(model, "l{l}h{h}")``, boolean masks that its
sampler multiplies into the drift, the noise and the localisation of every update), so

    λ̂_{l,h} = nβ · (E_restricted[L(w)] − L(θ*))

is the learning coefficient of the loss as a function of that head's weights alone, the others
fixed. Cost: one sampler run per head, ``head_llc_chains × head_llc_draws`` SGLD steps each (a forward
and a backward pass over the landscape prompts per step); the request's own sampler size, smaller by
default than the llc measure's because it runs once per head.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from phasescope.analysis.inputs import Batch
from phasescope.errors import MeasureError
from phasescope.measures.llc import ItemLoss, LLCResult, batch_item_loss, estimate_llc
from phasescope.measures.tables import tidy

__all__ = ["head_llc_table", "head_masks", "restricted_llc"]

ParamMasks = dict[str, Tensor | None]


@contextmanager
def _gc_frozen() -> Iterator[None]:
    """Keep the objects alive now out of the garbage collector's full passes while sampling.

    devinterp runs ``gc.collect()`` before and after every chain; in a process that has imported
    torch, TransformerLens and pandas one pass took ~0.9 s (measured), more than a tiny model's whole
    chain. Frozen objects are skipped by those passes (``gc.freeze``); new ones are still collected.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def head_masks(model: torch.nn.Module, layer: int, head: int) -> ParamMasks:
    """devinterp's weight restriction to one head of a HookedTransformer.

    Args:
        model: a HookedTransformer (grouped-query models: the head's query slice and its group's
            key/value slices, as devinterp restricts them).
        layer: the layer.
        head: the head in that layer.

    Returns:
        ``{parameter name: boolean mask of the head's elements}`` for W_Q, W_K, W_V, W_O, b_Q, b_K, b_V.
    """
    from devinterp.slt.weight_restrictions import create_param_masks

    return create_param_masks(model, f"l{layer}h{head}")


def restricted_llc(
    model: torch.nn.Module, item_loss: ItemLoss, n_items: int, masks: ParamMasks, **kwargs: Any
) -> LLCResult:
    """The LLC of ``item_loss`` with only the masked weights sampled (``estimate_llc`` restricted).

    Args:
        model: the model at θ*; not modified.
        item_loss: per-item loss, as ``estimate_llc`` takes it.
        n_items: number of items.
        masks: the weight restriction (``head_masks``, or any devinterp ``ParamMasks``).
        **kwargs: the sampler settings of ``estimate_llc`` (lr, localization, num_chains, ...).

    Returns:
        An ``LLCResult`` whose settings record the number of sampled weights (``sampled_weights``).
    """
    params = dict(model.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"the restriction names parameters the model does not have: {unknown}")
    with _gc_frozen():
        res = estimate_llc(model, item_loss, n_items, param_masks=masks, **kwargs)
    res.settings["sampled_weights"] = sum(
        params[name].numel() if mask is None else int(mask.sum()) for name, mask in masks.items()
    )
    return res


def head_llc_table(
    model: torch.nn.Module, batch: Batch, checkpoint: int, *, max_heads: int = 8, **kwargs: Any
) -> pd.DataFrame:
    """The LLC restricted to each head, as a tidy table (``measure="head_llc"``).

    Args:
        model: the model at the checkpoint (a HookedTransformer); not modified.
        batch: the prompts (the SGLD data), on the model's device.
        checkpoint: the training step.
        max_heads: refuse a model with more heads than this (each costs one sampler run).
        **kwargs: the sampler settings, passed to ``estimate_llc`` (the request's ``head_llc_chains``,
            ``head_llc_draws``, ``llc_lr``, ``llc_localization``, ``landscape_seed``).

    Returns:
        Quantity ``head_llc`` per (layer, head): λ̂ averaged over chains in ``value``, the spread over
        chains divided by √chains in ``se`` (NaN with one chain).

    Raises:
        MeasureError: the model has more than ``max_heads`` heads.
    """
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    if n_layers * n_heads > max_heads:
        raise MeasureError(
            f"head_llc samples each head separately and this model has {n_layers * n_heads} heads, over "
            f"head_llc_max_heads={max_heads}: raise head_llc_max_heads (the cost grows with it)",
            field="params.head_llc_max_heads",
        )
    item_loss, n_items = batch_item_loss(batch), int(batch.tokens.shape[0])
    value = np.full((n_layers, n_heads), np.nan)
    se = np.full((n_layers, n_heads), np.nan)
    for layer in range(n_layers):
        for head in range(n_heads):
            res = restricted_llc(model, item_loss, n_items, head_masks(model, layer, head), **kwargs)
            value[layer, head] = res.mean
            se[layer, head] = res.std / math.sqrt(len(res.per_chain))
    table = tidy("head_llc", "head_llc", value, ("layer", "head"), checkpoint=checkpoint)
    return table.assign(se=se.ravel())
