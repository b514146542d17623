"""Attention entropy: how many keys each query row spreads its attention over.

A row is one query position of one head of one prompt; its ``n_i`` allowed keys are those whose
pre-softmax score is finite (masked keys carry ``-inf``). Everything is computed in float64 from the
pre-softmax scores, with masked keys removed explicitly so that no ``0 * (-inf)`` ever appears.

Quantities (docs/measures.md):

- ``entropy``: ``S_i = -sum_j p_ij ln p_ij`` in nats, ``p_i = softmax(s_i)`` over allowed keys.
- ``entropy_norm``: ``S_i / ln n_i`` in ``[0, 1]``; undefined (NaN, and left out of every average)
  for rows with a single key, such as position 0 of a causal head.
- ``k90``: the fewest keys holding at least 90% of the row's attention (Ramsauer et al. 2020).

The rows are taken in slabs (``phasescope.measures.boltzmann.slabs``: blocks of queries over the keys
they may see), with energies above each row's ground state, ``S = <e> + ln Z'`` (docs/measures.md).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from phasescope.errors import MeasureError
from phasescope.measures.boltzmann import EXP_FLOOR, Slab, slabs
from phasescope.measures.fluctuations import PROMPT_ROWS_PER_HEAD, fluctuation_frame, fluctuations
from phasescope.measures.tables import concat_tables, tidy

__all__ = ["HOPFIELD_REGIMES", "K90_MASS", "entropy_table", "row_entropy"]

K90_MASS = 0.9
"""Share of a row's attention that ``k90`` keys must hold."""

HOPFIELD_REGIMES = {0: "fixed_point", 1: "metastable", 2: "global_averaging"}
"""The ``hopfield_regime`` codes of ``entropy_table``, ordered by how many keys a head averages over."""

# A head whose rows need, on average, at least this share of their keys for 90% of the mass averages
# globally; one whose rows need at most _FIXED_POINT_K90 keys sits in a fixed point.
_GLOBAL_FRACTION = 0.5
_FIXED_POINT_K90 = 2.0
# Cumulative sums of sorted probabilities are off by a few ulps: a row whose top k keys hold exactly
# 90% must count k keys, not k + 1.
_K90_TOL = 1e-12
# row_entropy works on slabs of this many scores (float64: 512 KiB), so its passes stay in cache.
_SLAB_ELEMENTS = 2**16
_HEAD = ("layer", "head")


def _prepare(scores: Tensor) -> tuple[Float[Tensor, "... key"], Bool[Tensor, "... key"]]:
    """Scores in float64 and the mask of allowed keys; raises if a row has no allowed key."""
    if scores.ndim == 0 or scores.shape[-1] == 0:
        raise MeasureError(f"scores need a non-empty key axis, got shape {tuple(scores.shape)}")
    s = scores.to(torch.float64)
    allowed = ~torch.isneginf(s)
    if not bool(allowed.any(dim=-1).all()):
        raise MeasureError("every row needs at least one key whose score is not -inf")
    return s, allowed


def _row_mean(
    values: Float[Tensor, "layer batch head query"], valid: Bool[Tensor, "layer batch head query"]
) -> Float[Tensor, "layer head"]:
    """Mean over prompts and query positions of the valid rows; NaN for a head with none."""
    count = valid.sum(dim=(1, 3))
    total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=(1, 3))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def row_entropy(scores: Float[Tensor, "... key"]) -> dict[str, Tensor]:
    """Entropy, normalised entropy and k90 of every attention row.

    Args:
        scores: pre-softmax attention scores, ``-inf`` at masked keys; any leading dims, e.g.
            ``[layer, batch, head, query, key]``. float32 or float64, any device.

    Returns:
        Tensors of shape ``scores.shape[:-1]`` on the scores' device:

        - ``entropy``: ``-sum_j p_j ln p_j`` (nats, float64).
        - ``entropy_norm``: ``entropy / ln n`` (dimensionless, float64); NaN where ``n == 1``.
        - ``k90``: fewest keys holding at least 90% of the mass (a count, float64).
        - ``n_keys``: number of allowed keys ``n`` (int64).

    Raises:
        MeasureError: a row has no allowed key, or a NaN or ``+inf`` score.

    >>> out = row_entropy(torch.zeros(2, 4))
    >>> out["entropy_norm"].tolist(), out["k90"].tolist()
    ([1.0, 1.0], [4.0, 4.0])
    """
    if scores.ndim == 0 or scores.shape[-1] == 0:
        raise MeasureError(f"scores need a non-empty key axis, got shape {tuple(scores.shape)}")
    n_query = scores.shape[-2] if scores.ndim >= 2 else 1
    grid = scores.detach().reshape(-1, n_query, scores.shape[-1])  # [rows, query, key]
    out = {
        name: torch.empty(grid.shape[:2], dtype=dtype, device=scores.device)
        for name, dtype in (("entropy", torch.float64), ("k90", torch.float64), ("n_keys", torch.int64))
    }
    for slab in slabs(grid, _SLAB_ELEMENTS):
        g, q = slab.r1 - slab.r0, slab.q1 - slab.q0
        rows = _slab_entropy(slab)
        for name, value in rows.items():
            out[name][slab.r0 : slab.r1, slab.q0 : slab.q1] = value.view(g, q)
    shape = scores.shape[:-1]
    n_keys = out["n_keys"].view(shape)
    entropy = out["entropy"].view(shape)
    log_n = n_keys.to(torch.float64).log()
    entropy_norm = torch.where(
        n_keys >= 2, entropy / log_n.clamp(min=math.log(2)), torch.full_like(entropy, math.nan)
    )
    return {"entropy": entropy, "entropy_norm": entropy_norm, "k90": out["k90"].view(shape), "n_keys": n_keys}


def _slab_entropy(slab: Slab) -> dict[str, Tensor]:
    """Entropy, k90 and key count of a slab's rows (``boltzmann.Slab``), each ``[rows]``.

    With energies above the ground state, ``w = exp(-e)`` and ``Z' = Σ w`` in ``[1, n]``, the entropy
    is ``S = <e> + ln Z'``: a sum of two terms >= 0, so it cannot cancel (docs/measures.md).
    """
    keep = slab.allowed.to(torch.float64)
    w = (-slab.e).clamp_min_(EXP_FLOOR).exp_().mul_(keep)  # 0 at masked keys
    z = w.sum(dim=-1)
    p = w.div_(z.unsqueeze(-1))
    entropy = torch.linalg.vecdot(p, slab.e) + z.log_()
    n_keys = slab.allowed.sum(dim=-1)
    return {"entropy": entropy, "k90": _k90(p, n_keys), "n_keys": n_keys}


def _k90(p: Float[Tensor, "row key"], n_keys: Int[Tensor, " row"]) -> Float[Tensor, " row"]:
    """Fewest keys holding ``K90_MASS`` of each row's probabilities ``p`` (masked keys: p = 0).

    The probabilities are sorted, largest first, and summed; on a CPU numpy's vectorised sort is used
    (for rows of 128 keys about 15x faster than ``torch.sort``, which also computes indices).
    """
    if p.device.type == "cpu":
        ordered = torch.from_numpy(np.sort(p.numpy(), axis=-1)[:, ::-1].copy())
    else:
        ordered = torch.sort(p, dim=-1, descending=True).values
    mass = ordered.cumsum(dim=-1)  # masked keys (p = 0) sort last and never reach K90_MASS
    k90 = (mass < K90_MASS - _K90_TOL).sum(dim=-1) + 1
    return torch.minimum(k90, n_keys).to(torch.float64)


def entropy_table(scores: Float[Tensor, "layer batch head query key"], checkpoint: int) -> pd.DataFrame:
    """Attention entropy per position and per head, as a tidy table (``measure="entropy"``).

    Args:
        scores: pre-softmax attention scores ``[layer, batch, head, query, key]``, ``-inf`` at masked
            keys (causal: key ``j > i``; bidirectional encoders: none).
        checkpoint: training step of the checkpoint the scores come from.

    Returns:
        A tidy table (``phasescope.measures.tables``) with these quantities, none of them NaN:

        Per ``(layer, head, position)``, averaged over the prompts of the batch:

        - ``entropy`` (nats) and ``k90`` (keys), every position included;
        - ``entropy_norm`` (dimensionless): rows with one key are left out, and a position where
          every prompt has one key (position 0 of a causal head) has no row.

        Per ``(layer, head)``, averaged over every row (prompt x position) with ``n >= 2`` keys:

        - ``entropy_mean`` (nats), ``entropy_norm_mean``, ``k90_mean`` (keys);
        - ``k90_frac_mean``: the mean over rows of ``k90 / n``, in ``(0, 1]``;
        - ``hopfield_regime``: the head's regime in the sense of Ramsauer et al. (2020), coded as in
          ``HOPFIELD_REGIMES``: ``2`` global averaging when ``k90_frac_mean >= 0.5`` (the rows need
          half their keys or more for 90% of the mass); otherwise ``0`` fixed point when
          ``k90_mean <= 2`` (one or two keys carry the row); otherwise ``1`` metastable (a subset of
          keys). The fraction is tested first so that short contexts, where two keys can be most of
          the row, are not called fixed points.

        ``entropy_mean`` carries its standard error over prompts (``se``) and a 95% bootstrap interval
        (``ci_lo``, ``ci_hi``); ``entropy_mean_prompt`` (layer, head, index) is each prompt's mean over
        its own rows with ``n >= 2`` keys, and ``entropy_mean_chi`` (layer, head) the susceptibility
        with ``N_p`` = those rows (docs/measures.md, "Uncertainties and susceptibility").

        A head without a single row of two or more keys (query length 1) has no summary rows.

    Raises:
        MeasureError: ``scores`` is not 5-d, or a row has no allowed key.
    """
    if scores.ndim != 5:
        raise MeasureError(
            f"scores must be [layer, batch, head, query, key], got shape {tuple(scores.shape)}"
        )
    rows = row_entropy(scores)  # each [layer, batch, head, query]
    valid = rows["n_keys"] >= 2
    nan = torch.full_like(rows["entropy"], math.nan)

    per_position = {
        "entropy": rows["entropy"].mean(dim=1),  # [layer, head, query]
        "k90": rows["k90"].mean(dim=1),
        "entropy_norm": torch.where(valid, rows["entropy_norm"], nan).nanmean(dim=1),
    }
    k90_frac = rows["k90"] / rows["n_keys"].to(torch.float64)
    summary = {
        "entropy_mean": _row_mean(rows["entropy"], valid),  # [layer, head]
        "entropy_norm_mean": _row_mean(rows["entropy_norm"], valid),
        "k90_mean": _row_mean(rows["k90"], valid),
        "k90_frac_mean": _row_mean(k90_frac, valid),
    }
    # Per prompt: the mean over the prompt's valid rows (N_p of them); entropy_mean pools them weighted
    # by N_p (docs/measures.md, "Uncertainties and susceptibility").
    units = valid.sum(dim=3).to(torch.float64)  # [layer, batch, head]
    per_prompt = torch.where(valid, rows["entropy"], 0.0).sum(dim=3) / units  # NaN where N_p = 0
    per_prompt = per_prompt.transpose(1, 2)  # [layer, head, prompt]
    fl = fluctuations(per_prompt, units.transpose(1, 2))
    regime = torch.where(
        summary["k90_frac_mean"] >= _GLOBAL_FRACTION,
        2.0,
        torch.where(summary["k90_mean"] <= _FIXED_POINT_K90, 0.0, 1.0),
    )
    summary["hopfield_regime"] = torch.where(summary["k90_mean"].isnan(), math.nan, regime)

    tables = [
        tidy("entropy", q, v, ("layer", "head", "position"), checkpoint=checkpoint)
        for q, v in per_position.items()
    ]
    tables += [
        fluctuation_frame(
            "entropy", q, v, per_prompt, _HEAD, fl, checkpoint=checkpoint, max_prompts=PROMPT_ROWS_PER_HEAD
        )
        if q == "entropy_mean"
        else tidy("entropy", q, v, _HEAD, checkpoint=checkpoint)
        for q, v in summary.items()
    ]
    table = concat_tables(tables)
    return table[table["value"].notna()].reset_index(drop=True)
