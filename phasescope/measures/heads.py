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

from phasescope.measures.fluctuations import (
    PROMPT_ROWS_PER_HEAD,
    fluctuation_frame,
    fluctuations,
    resample_counts,
)
from phasescope.measures.tables import concat_tables

__all__ = [
    "heads_table",
    "induction_scores",
    "induction_scores_per_prompt",
    "previous_token_scores",
    "previous_token_scores_per_prompt",
]


def induction_scores_per_prompt(
    patterns: Float[Tensor, "layer batch head query key"], period: int, offset: int = 0
) -> Float[Tensor, "layer batch head"]:
    """Each prompt's mean attention from the queries of its second copy to their induction targets.

    Args:
        patterns: post-softmax attention on sequences ``[prefix (offset tokens), block, block]``.
        period: length of the repeated block.
        offset: tokens before the first copy (e.g. 1 for a BOS token).

    Returns:
        For every layer, prompt and head, the attention paid to key ``i - period + 1`` averaged over
        the prompt's queries ``i`` in the second copy (``seq - offset - period`` of them).
    """
    seq = patterns.shape[-1]
    queries = torch.arange(offset + period, seq, device=patterns.device)
    if len(queries) == 0:
        raise ValueError(f"sequences of {seq} tokens hold no second copy of a block of {period}")
    keys = queries - period + 1
    # (layer, batch, head, n_queries): the one key per query that an induction head looks at.
    picked = patterns[..., queries, keys]
    return picked.mean(dim=3)


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
        one. Every prompt has as many such queries, so this is the mean of
        ``induction_scores_per_prompt`` over prompts.
    """
    return induction_scores_per_prompt(patterns, period, offset).mean(dim=1)


def previous_token_scores_per_prompt(
    patterns: Float[Tensor, "layer batch head query key"],
) -> Float[Tensor, "layer batch head"]:
    """Each prompt's mean attention from query ``i`` to key ``i - 1`` over its queries ``i >= 1``."""
    seq = patterns.shape[-1]
    queries = torch.arange(1, seq, device=patterns.device)
    return patterns[..., queries, queries - 1].mean(dim=3)


def previous_token_scores(
    patterns: Float[Tensor, "layer batch head query key"],
) -> Float[Tensor, "layer head"]:
    """Mean attention from query ``i`` to key ``i - 1`` over queries ``i >= 1`` and the batch."""
    return previous_token_scores_per_prompt(patterns).mean(dim=1)


def heads_table(
    patterns: Float[Tensor, "layer batch head query key"],
    period: int,
    checkpoint: int,
    offset: int = 0,
    layer_offset: int = 0,
) -> pd.DataFrame:
    """Induction and previous-token score per head, as a tidy table (measure ``heads``).

    Each score ``q`` comes with its standard error over prompts (``se``) and a 95% bootstrap interval
    (``ci_lo``, ``ci_hi``) on its rows, its value per prompt ``q_prompt`` (dims layer, head, index) and
    its susceptibility ``q_chi`` (docs/measures.md, "Uncertainties and susceptibility"), with ``N_p``
    = the queries the score averages over in one prompt.

    Args:
        patterns: attention patterns on a repeated-block probe batch.
        period: the block length of the probe.
        checkpoint: training step.
        offset: tokens before the first copy.
        layer_offset: index of the first layer in ``patterns`` (when layers come in chunks).
    """
    seq = patterns.shape[-1]
    layers = torch.arange(patterns.shape[0]) + layer_offset
    coords = {"layer": layers}
    counts = resample_counts(patterns.shape[1], device=patterns.device)
    tables = []
    for quantity, per_prompt, units in (
        ("induction_score", induction_scores_per_prompt(patterns, period, offset), seq - offset - period),
        ("prev_token_score", previous_token_scores_per_prompt(patterns), seq - 1),
    ):
        values = per_prompt.transpose(1, 2)  # (layer, head, prompt)
        fl = fluctuations(values, float(units), counts=counts)
        tables.append(
            fluctuation_frame(
                "heads",
                quantity,
                values.mean(dim=-1),
                values,
                ("layer", "head"),
                fl,
                checkpoint=checkpoint,
                coords=coords,
                max_prompts=PROMPT_ROWS_PER_HEAD,
            )
        )
    return concat_tables(tables)
