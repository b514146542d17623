"""The mean-field check of MLP pre-activations: how far each layer's pre-activations are from Gaussian.

At initialisation a neuron's pre-activation ``h_j = w_j · x + b_j`` is a sum of many independent
terms, so over neurons and tokens it is Gaussian (exactly so, given a LayerNorm'd input, for
Gaussian weights); training that makes neurons specialise makes it heavy-tailed, skewed or sparse.
Per layer: the histogram, moments, the share of active units, and the Kolmogorov–Smirnov distance
from the Gaussian of the same mean and variance with the bound a Gaussian sample of that size stays
under. Definitions and the checks: docs/measures.md, "Activation fields", "Mean-field check".
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "HIST_BINS",
    "HIST_WIDTH",
    "KS_COEFFICIENT",
    "KS_SAMPLE",
    "ks_gaussian",
    "meanfield_table",
    "preact_stats",
]

MEASURE = "meanfield"
HIST_BINS = 64
"""Bins of the histogram, equal width over ``mean ± HIST_WIDTH · std``."""
HIST_WIDTH = 5.0
KS_COEFFICIENT = 1.63
"""The 1% critical value of the Kolmogorov distribution, ``√n · D`` (the bound is ``1.63 / √n``)."""
KS_SAMPLE = 1 << 18
"""Most values the KS distance sorts: a larger layer is read at an even stride (the KS error of that,
≈ 1/√KS_SAMPLE ≈ 0.002, is far under any bound we compare with: 0.029 for 3,072 neurons)."""


def ks_gaussian(values: Float[Tensor, " n"], mean: float, std: float) -> float:
    """``sup_x |F_n(x) − Φ((x − mean) / std)|``: the KS distance of a sample from a given Gaussian."""
    x, _ = values.double().sort()
    n = x.numel()
    cdf = 0.5 * torch.erfc(-(x - mean) / (std * math.sqrt(2.0)))
    i = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def preact_stats(preact: Float[Tensor, "batch pos neuron"]) -> dict[str, Tensor | float]:
    """One layer's pre-activation statistics over every prompt, position and neuron.

    Returns:
        ``mean``, ``std`` (population), ``skew`` (``E z³``), ``kurtosis`` (excess, ``E z⁴ − 3``),
        ``active_fraction`` (share of values > 0), ``ks`` (``ks_gaussian`` against the Gaussian of the
        same mean and std), ``ks_bound`` (``KS_COEFFICIENT / √neurons``), ``hist`` (density per bin,
        ``[HIST_BINS]``) and ``centres`` (the bins' centres).
    """
    h = preact.double().flatten()
    mean, std = h.mean(), h.std(correction=0)
    z = (h - mean) / std
    stride = max(1, math.ceil(h.numel() / KS_SAMPLE))
    lo, hi = float(mean - HIST_WIDTH * std), float(mean + HIST_WIDTH * std)
    width = (hi - lo) / HIST_BINS
    counts = torch.histc(h, bins=HIST_BINS, min=lo, max=hi) if std > 0 else torch.zeros(HIST_BINS)
    return {
        "mean": float(mean),
        "std": float(std),
        "skew": float((z**3).mean()),
        "kurtosis": float((z**4).mean() - 3.0),
        "active_fraction": float((h > 0).double().mean()),
        "ks": ks_gaussian(h[::stride], float(mean), float(std)) if std > 0 else math.nan,
        # The neurons of a layer are independent given the token (their weight rows are drawn
        # independently); tokens share every neuron's weights and are correlated. One sample per
        # neuron is the fewest independent values the layer holds: the bound is conservative.
        "ks_bound": KS_COEFFICIENT / math.sqrt(preact.shape[-1]),
        "hist": counts.double() / (h.numel() * width) if std > 0 else counts.double(),
        "centres": lo + width * (torch.arange(HIST_BINS, dtype=torch.float64) + 0.5),
    }


_SCALARS = (
    ("preact_mean", "mean"),
    ("preact_std", "std"),
    ("preact_skew", "skew"),
    ("preact_kurtosis", "kurtosis"),
    ("preact_active_fraction", "active_fraction"),
    ("preact_ks", "ks"),
    ("preact_ks_bound", "ks_bound"),
)


def meanfield_table(preacts: dict[int, Float[Tensor, "batch pos neuron"]], checkpoint: int) -> pd.DataFrame:
    """``preact_stats`` of each layer as a tidy table (measure ``meanfield``).

    Args:
        preacts: each layer's MLP pre-activations (the input of the activation function), by layer.
        checkpoint: the training step.

    Returns:
        ``preact_hist`` (layer, index = bin; ``x`` = the bin's centre, value = probability density)
        and the scalars ``preact_mean`` … ``preact_ks_bound`` (layer); empty without layers.
    """
    tables = []
    for layer, preact in sorted(preacts.items()):
        stats = preact_stats(preact)
        fixed = {"layer": layer}
        tables.append(
            tidy(
                MEASURE,
                "preact_hist",
                stats["hist"],
                ("index",),
                checkpoint=checkpoint,
                fixed={**fixed, "x": stats["centres"].numpy()},
            )
        )
        tables += [
            tidy(MEASURE, name, float(stats[key]), (), checkpoint=checkpoint, fixed=fixed)
            for name, key in _SCALARS
        ]
    return concat_tables(tables)
