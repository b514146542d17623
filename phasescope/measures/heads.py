"""Order parameters of individual heads: induction and previous-token scores.

A phase transition needs an order parameter that means something. For induction-head formation it is
how much a head attends, on a sequence repeated once, from a token in the second copy to the token
*after* that token's first occurrence (the induction target); previous-token heads, which the
induction circuit composes with, attend from each token to the one before it.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.measures.tables import concat_tables, tidy

__all__ = ["heads_table", "induction_scores", "previous_token_scores"]


def induction_scores(
    patterns: Float[Tensor, "layer batch head query key"], period: int, offset: int = 0
) -> Float[Tensor, "layer head"]:
    """Mean attention from each query in the second copy to the induction target.

    Args:
        patterns: post-softmax attention on sequences ``[prefix (offset tokens), block, block]``.
        period: length of the repeated block.
        offset: tokens before the first copy (e.g. 1 for a BOS token).

    Returns:
        For every layer and head, the attention paid to key ``i - period + 1`` averaged over queries
        ``i`` in the second copy and over the batch: 1 for a perfect induction head, ~1/i for a uniform
        one.
    """
    seq = patterns.shape[-1]
    queries = torch.arange(offset + period, seq, device=patterns.device)
    if len(queries) == 0:
        raise ValueError(f"sequences of {seq} tokens hold no second copy of a block of {period}")
    keys = queries - period + 1
    # (layer, batch, head, n_queries): the one key per query that an induction head looks at.
    picked = patterns[..., queries, keys]
    return picked.mean(dim=(1, 3))


def previous_token_scores(
    patterns: Float[Tensor, "layer batch head query key"],
) -> Float[Tensor, "layer head"]:
    """Mean attention from query ``i`` to key ``i - 1`` over queries ``i >= 1`` and the batch."""
    seq = patterns.shape[-1]
    queries = torch.arange(1, seq, device=patterns.device)
    return patterns[..., queries, queries - 1].mean(dim=(1, 3))


def heads_table(
    patterns: Float[Tensor, "layer batch head query key"],
    period: int,
    checkpoint: int,
    offset: int = 0,
    layer_offset: int = 0,
) -> pd.DataFrame:
    """Induction and previous-token score per head, as a tidy table (measure ``heads``).

    Args:
        patterns: attention patterns on a repeated-block probe batch.
        period: the block length of the probe.
        checkpoint: training step.
        offset: tokens before the first copy.
        layer_offset: index of the first layer in ``patterns`` (when layers come in chunks).
    """
    layers = torch.arange(patterns.shape[0]) + layer_offset
    coords = {"layer": layers}
    return concat_tables(
        [
            tidy(
                "heads",
                "induction_score",
                induction_scores(patterns, period, offset),
                ("layer", "head"),
                checkpoint=checkpoint,
                coords=coords,
            ),
            tidy(
                "heads",
                "prev_token_score",
                previous_token_scores(patterns),
                ("layer", "head"),
                checkpoint=checkpoint,
                coords=coords,
            ),
        ]
    )
