"""Attention energy landscape of each head: the distribution of energies ``E_ij = −s_ij``.

``s_ij`` are the pre-softmax scores (the model's own ``1/√d_head`` scale, ``−inf`` at masked keys);
attention is the Boltzmann distribution ``p_ij ∝ exp(−β E_ij)`` at β = 1. Per head, the histogram
of ``E_ij`` over every allowed entry (prompt × query × allowed key) shows the landscape the softmax
sees: a wide spread with a low tail is a few deep minima (a head that picks one key), a narrow one a
flat landscape (a head that averages).

Energies are defined up to a constant per row (adding ``c_i`` to a row of scores changes nothing in
``p``), so a histogram of raw energies mixes row offsets with the landscape itself. ``reference=
"row_min"`` measures each energy from its row's ground state, ``E_ij − min_j E_ij ≥ 0``, which is
invariant to those offsets; ``"raw"`` (default) keeps ``E_ij`` as the model computed it.

To compare checkpoints, histogram them on the same bin edges: pass ``edges`` (e.g. from
``energy_edges`` on the first and last checkpoints' scores together).

The Hopfield regime (Ramsauer et al. 2020) of each head comes from its k90 (the fewest keys holding
90% of a row's attention), with the same rule and codes as ``phasescope.measures.entropy``
(``HOPFIELD_REGIMES``: 0 fixed point, 1 metastable, 2 global averaging).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.errors import MeasureError
from phasescope.measures.entropy import HOPFIELD_REGIMES, entropy_table
from phasescope.measures.tables import concat_tables, tidy

__all__ = ["HOPFIELD_REGIMES", "energy_edges", "energy_histogram", "energy_table"]

Reference = Literal["raw", "row_min"]


def _energies(scores: Tensor, reference: Reference) -> tuple[Tensor, Tensor]:
    """Energies in float64 and the mask of allowed (finite-score) entries."""
    s = scores.to(torch.float64)
    allowed = torch.isfinite(s)
    energy = torch.where(allowed, -s, torch.zeros_like(s))  # masked entries: any finite filler
    if reference == "row_min":
        inf = torch.full_like(energy, torch.inf)
        ground = torch.where(allowed, energy, inf).amin(dim=-1, keepdim=True)
        energy = torch.where(allowed, energy - ground, energy)
    elif reference != "raw":
        raise ValueError(f"reference must be 'raw' or 'row_min', got {reference!r}")
    return energy, allowed


def energy_edges(
    scores: Float[Tensor, "... key"], n_bins: int = 50, reference: Reference = "raw"
) -> Float[Tensor, " edge"]:
    """``n_bins + 1`` equal-width bin edges spanning every allowed energy of ``scores``.

    Args:
        scores: pre-softmax scores, ``−inf`` at masked keys; concatenate several checkpoints' scores
            (along any leading axis) to get edges they can all share.
        n_bins: number of bins.
        reference: ``"raw"`` or ``"row_min"`` (see the module docstring).

    Returns:
        float64 edges on the scores' device; a constant energy gets a unit-wide range around it.
    """
    energy, allowed = _energies(scores, reference)
    values = energy[allowed]
    if values.numel() == 0:
        raise MeasureError("no allowed (finite) score to histogram")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return torch.linspace(lo, hi, n_bins + 1, dtype=torch.float64, device=scores.device)


def energy_histogram(
    scores: Float[Tensor, "layer batch head query key"],
    edges: Float[Tensor, " edge"],
    reference: Reference = "raw",
) -> tuple[Float[Tensor, "layer head bin"], Float[Tensor, "layer head"], Float[Tensor, "layer head"]]:
    """Per-head counts of allowed energies in each bin, plus the counts below and above the edges.

    Bins are ``[edges[k], edges[k+1])``, the last one closed; masked (``−inf``) keys are never counted,
    so ``counts.sum(-1) + below + above`` is each head's number of allowed entries.

    Returns:
        ``(counts [layer, head, bin], below [layer, head], above [layer, head])``, float64.
    """
    energy, allowed = _energies(scores, reference)
    edges = edges.to(energy.device, torch.float64)
    n_bins = edges.numel() - 1
    # (layer, batch, head, query, key) → (layer, head, entries): one row of entries per head.
    e = energy.transpose(1, 2).reshape(energy.shape[0], energy.shape[2], -1)
    ok = allowed.transpose(1, 2).reshape(e.shape)
    below = (ok & (e < edges[0])).sum(-1).to(torch.float64)
    above = (ok & (e > edges[-1])).sum(-1).to(torch.float64)
    inside = ok & (e >= edges[0]) & (e <= edges[-1])
    # bucketize(right=True) - 1 puts edges[k] ≤ e < edges[k+1] in bin k; clamp puts e == edges[-1]
    # in the last bin instead of one past it.
    idx = (torch.bucketize(e, edges, right=True) - 1).clamp(0, n_bins - 1)
    flat = (
        torch.arange(e.shape[0] * e.shape[1], device=e.device).reshape(e.shape[:2])[..., None] * n_bins + idx
    )[inside]
    counts = torch.bincount(flat, minlength=e.shape[0] * e.shape[1] * n_bins).reshape(
        e.shape[0], e.shape[1], n_bins
    )
    return counts.to(torch.float64), below, above


def energy_table(
    scores: Float[Tensor, "layer batch head query key"],
    checkpoint: int,
    *,
    edges: Float[Tensor, " edge"] | None = None,
    n_bins: int = 50,
    reference: Reference = "raw",
) -> pd.DataFrame:
    """Attention energy histograms and Hopfield regimes per head, as a tidy table (``measure="energies"``).

    Args:
        scores: pre-softmax scores ``[layer, batch, head, query, key]``, ``−inf`` at masked keys.
        checkpoint: the training step.
        edges: shared bin edges (``energy_edges``); default: ``n_bins`` bins over these scores.
        n_bins: number of bins when ``edges`` is not given.
        reference: ``"raw"`` energies or energies above each row's minimum (``"row_min"``).

    Returns:
        Quantities per ``(layer, head)``:

        - ``energy_hist``: count of allowed entries per bin, at ``x`` = bin centre (energy in units
          of the score, i.e. of ``T = √d_head`` in raw dot-product units); ``index`` is the bin.
        - ``energy_below`` / ``energy_above``: allowed entries outside the edges (zero with default
          edges).
        - ``energy_mean`` and ``energy_std`` over allowed entries.
        - ``hopfield_regime`` (code, ``HOPFIELD_REGIMES``), with the ``k90_mean`` (keys) and
          ``k90_frac_mean`` it was decided from, exactly as ``entropy_table`` reports them.
    """
    if scores.ndim != 5:
        raise MeasureError(
            f"scores must be [layer, batch, head, query, key], got shape {tuple(scores.shape)}"
        )
    edges = energy_edges(scores, n_bins, reference) if edges is None else edges.to(torch.float64)
    counts, below, above = energy_histogram(scores, edges, reference)
    centres = ((edges[:-1] + edges[1:]) / 2).cpu()

    energy, allowed = _energies(scores, reference)
    n = allowed.sum(dim=(1, 3, 4)).to(torch.float64)  # [layer, head]
    mean = torch.where(allowed, energy, 0.0).sum(dim=(1, 3, 4)) / n
    # Centred two-pass variance: ⟨E²⟩ − ⟨E⟩² cancels badly when the scores carry a large offset.
    dev = torch.where(allowed, energy - mean[:, None, :, None, None], 0.0)
    std = ((dev**2).sum(dim=(1, 3, 4)) / n).sqrt()

    hist = tidy("energies", "energy_hist", counts, ("layer", "head", "index"), checkpoint=checkpoint)
    hist["x"] = centres.numpy()[hist["index"].to_numpy()]
    tables = [hist]
    for name, value in {
        "energy_below": below,
        "energy_above": above,
        "energy_mean": mean,
        "energy_std": std,
    }.items():
        tables.append(tidy("energies", name, value, ("layer", "head"), checkpoint=checkpoint))
    regimes = entropy_table(scores, checkpoint)
    keep = regimes["quantity"].isin(["hopfield_regime", "k90_mean", "k90_frac_mean"])
    # The per-head rows of entropy_table have no position; drop the column the per-position rows brought.
    tables.append(regimes[keep].assign(measure="energies").drop(columns=["position"], errors="ignore"))
    return concat_tables(tables)
