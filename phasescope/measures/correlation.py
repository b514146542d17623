"""Correlation functions of attention and of the residual stream, and their correlation lengths.

Attention as an interaction field: how a head's mass spreads over the query–key distance
``r = |q − k|``. The residual stream as a field over positions: how alike two tokens' residual
vectors are at distance ``r`` once the mean over prompts at each position is taken away. Each curve
gets a decay length from one fitting rule (``decay_length``). Definitions, the fitting rule and the
checks: docs/measures.md, "Activation fields", "Correlation functions".
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "FIT_FLOOR",
    "attention_distance",
    "correlation_table",
    "decay_length",
    "distance_pairs",
    "residual_correlation",
]

MEASURE = "correlation"
FIT_FLOOR = 0.01
"""The fit of ``decay_length`` stops where the curve first falls below this fraction of its r = 1 value."""


def distance_pairs(n: int, causal: bool, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """The queries a distance average runs over and the (query, key) pairs at each distance.

    A causal query ``q`` sees keys ``0..q``: query 0 sees only itself and says nothing about
    distance, so causal averages run over queries ``1..n−1``; an encoder's queries all see ``n``
    keys.

    Returns:
        ``(queries [n_q], distance [n_q, n] long = |q − k|, pairs [n] = number of allowed (query, key)
        pairs in ``queries`` at each distance)``.
    """
    queries = torch.arange(1 if causal else 0, n, device=device)
    keys = torch.arange(n, device=device)
    distance = (queries[:, None] - keys[None, :]).abs()
    allowed = keys[None, :] <= queries[:, None] if causal else torch.ones_like(distance, dtype=torch.bool)
    pairs = torch.zeros(n, dtype=torch.float64, device=device).scatter_add_(
        0, distance[allowed], torch.ones(int(allowed.sum()), dtype=torch.float64, device=device)
    )
    return queries, distance, pairs


def attention_distance(
    patterns: Float[Tensor, "layer batch head query key"], causal: bool = True
) -> tuple[Float[Tensor, "layer head r"], Float[Tensor, "layer head r"]]:
    """The attention mass at each query–key distance, and the mean weight of one key at that distance.

    Args:
        patterns: post-softmax attention (rows sum to 1), float64.
        causal: whether keys after the query are masked (a decoder); see ``distance_pairs``.

    Returns:
        ``mass[r]``: mean over prompts and queries of the attention on keys at distance ``r`` (a
        query without a key at distance ``r`` counts 0, so ``Σ_r mass[r] = 1``); ``per_pair[r]``:
        ``mass[r]`` divided by the share of (query, key) pairs at distance ``r`` per query, i.e.
        the mean attention weight of one key at distance ``r`` (what ``decay_length`` fits: the
        fewer queries that reach far back are not mistaken for a decay).
    """
    n = patterns.shape[-1]
    queries, distance, pairs = distance_pairs(n, causal, patterns.device)
    summed = patterns[..., queries, :].double().sum(dim=1)  # [layer, head, n_q, key]: over prompts
    flat = summed.flatten(-2)  # [layer, head, n_q * key]
    index = distance.flatten().expand_as(flat)
    mass = torch.zeros(*flat.shape[:-1], n, dtype=torch.float64, device=flat.device).scatter_add_(
        -1, index, flat
    )
    mass = mass / (patterns.shape[1] * len(queries))
    per_pair = torch.where(pairs > 0, mass * len(queries) / pairs.clamp_min(1), math.nan)
    return mass, per_pair


def decay_length(curve: Float[Tensor, "*batch r"], floor: float = FIT_FLOOR) -> Float[Tensor, "*batch"]:
    """The length ``ξ`` of ``curve[r] ∝ exp(−r/ξ)``, fitted from r = 1 until it falls below a floor.

    The rule: the points ``r = 1..R`` where ``R`` is the last of the unbroken run from ``r = 1`` with
    ``curve[r] ≥ floor · curve[1]`` (and ``> 0``); a least-squares line through ``ln curve[r]``
    against ``r``, each point weighted by ``curve[r]`` (the bulk of the curve, not its noisy tail,
    decides); ``ξ = −1 / slope``. NaN when fewer than three points qualify, the slope is not
    negative (a curve that does not decay, or all of whose weight sits at r = 1), or ``ξ`` is longer
    than the curve itself (it barely decays over the distances there are: no length is measured).

    Args:
        curve: values at ``r = 0, 1, ...`` along the last axis (``r = 0`` is not fitted).
        floor: the fraction of ``curve[1]`` below which the fit stops.

    Returns:
        ``ξ`` in units of ``r`` (tokens), one per leading index.
    """
    curve = curve.double()
    tail = curve[..., 1:]
    start = tail[..., :1]
    ok = (tail > 0) & (tail >= floor * start) & tail.isfinite()
    used = ok.long().cumprod(dim=-1).bool()  # the unbroken run from r = 1
    r = torch.arange(1, curve.shape[-1], dtype=torch.float64, device=curve.device)
    w = torch.where(used, tail, 0.0)
    y = torch.where(used, tail.clamp_min(torch.finfo(torch.float64).tiny).log(), 0.0)
    sw, swx, swy = w.sum(-1), (w * r).sum(-1), (w * y).sum(-1)
    swxx, swxy = (w * r * r).sum(-1), (w * r * y).sum(-1)
    det = sw * swxx - swx * swx
    slope = (sw * swxy - swx * swy) / torch.where(det > 0, det, 1.0)
    xi = -1.0 / torch.where(slope < 0, slope, -1.0)
    fit = (used.sum(-1) >= 3) & (det > 0) & (slope < 0) & (xi <= curve.shape[-1])
    return torch.where(fit, xi, math.nan)


def residual_correlation(
    resid: Float[Tensor, "layer batch pos d_model"],
) -> Float[Tensor, "layer r"]:
    """``C(r)``: the centred cosine of residual vectors ``r`` positions apart, per layer.

    Centring takes away the mean over prompts at each position, ``δx_{b,t} = x_{b,t} − mean_b
    x_{b,t}`` (what every prompt has at position ``t``: the positional embedding and any constant
    direction); ``C(r)`` is the mean over prompts ``b`` and positions ``t`` of
    ``cos(δx_{b,t}, δx_{b,t+r})``, so ``C(0) = 1``. Needs at least two prompts (one prompt is its
    own mean: NaN).

    Args:
        resid: the residual stream per layer, float64.

    Returns:
        ``C[layer, r]`` for ``r = 0..pos−1``.
    """
    n_layers, n_batch, n = resid.shape[:3]
    # Causal pairs (t + r, t) only: each unordered pair once, query 0 included (it has r = 0).
    keys = torch.arange(n, device=resid.device)
    distance = keys[:, None] - keys[None, :]  # [pos, pos]: row t + r, column t
    lower = distance >= 0
    index, pairs = distance[lower], torch.bincount(distance[lower], minlength=n).double()
    out = torch.empty(n_layers, n, dtype=torch.float64, device=resid.device)
    for layer in range(n_layers):  # one [batch, pos, pos] Gram matrix at a time bounds the memory
        x = resid[layer].double()
        delta = x - x.mean(dim=0, keepdim=True)
        norm = delta.norm(dim=-1, keepdim=True)
        unit = torch.where(norm > 0, delta / norm.clamp_min(torch.finfo(torch.float64).tiny), math.nan)
        gram = (unit @ unit.transpose(-1, -2)).sum(dim=0)  # [pos, pos], summed over prompts
        summed = torch.zeros(n, dtype=torch.float64, device=x.device).scatter_add_(0, index, gram[lower])
        out[layer] = summed / (pairs * n_batch)
    return out


def correlation_table(
    patterns: Float[Tensor, "layer batch head query key"],
    resid: Float[Tensor, "layer batch pos d_model"] | None,
    checkpoint: int,
    causal: bool = True,
) -> pd.DataFrame:
    """Attention mass against distance and the residual correlation, as a tidy table (``correlation``).

    Args:
        patterns: post-softmax attention per layer.
        resid: the residual stream each block hands on, or None (then no residual rows).
        checkpoint: the training step.
        causal: whether the model is a decoder (``distance_pairs``).

    Returns:
        ``attention_mass_distance`` (layer, head, index = r), ``attention_mean_distance`` and
        ``attention_correlation_length`` (layer, head), ``residual_correlation`` (layer, index = r)
        and ``residual_correlation_length`` (layer).
    """
    mass, per_pair = attention_distance(patterns, causal)
    r = torch.arange(mass.shape[-1], dtype=torch.float64, device=mass.device)
    tables = [
        tidy(MEASURE, "attention_mass_distance", mass, ("layer", "head", "index"), checkpoint=checkpoint),
        tidy(
            MEASURE, "attention_mean_distance", (mass * r).sum(-1), ("layer", "head"), checkpoint=checkpoint
        ),
        tidy(
            MEASURE,
            "attention_correlation_length",
            decay_length(per_pair),
            ("layer", "head"),
            checkpoint=checkpoint,
        ),
    ]
    if resid is not None:
        corr = residual_correlation(resid)
        tables += [
            tidy(MEASURE, "residual_correlation", corr, ("layer", "index"), checkpoint=checkpoint),
            tidy(
                MEASURE, "residual_correlation_length", decay_length(corr), ("layer",), checkpoint=checkpoint
            ),
        ]
    return concat_tables(tables)
