"""β*: where a head's row-averaged heat capacity ``C̄(β)`` peaks, and its bootstrap over prompts.

Three steps (docs/measures.md, "Thermodynamics"):

1. **Grid.** The grid maximum of ``C̄`` and the vertex of the parabola in ``ln β`` through it and its
   two neighbours (``peak_beta``). A maximum on a grid end is censored and goes no further.
2. **Refinement.** ``C̄`` evaluated exactly (the sweep's own sums, ``boltzmann.variance_sums``) at a
   stencil of three β around that vertex, half-width a quarter of the local grid step in ``ln β``,
   and the vertex of the parabola through them (``refine_peak``). The parabola's error falls as the
   square of its spacing, so the three-point error of the grid (from the skew of ``C̄(ln β)``)
   shrinks about 16-fold. Where the vertex falls outside the stencil, or far from its centre (a
   curve that is no parabola at that scale), another stencil is taken around the new vertex (as
   wide, or a quarter as wide), up to three in all. β* always stays between the grid maximum's
   neighbours.
3. **Bootstrap.** The per-prompt sums at the grid and at the final stencil are kept, so every
   resample of prompts pools them into its own ``C̄`` and repeats steps 1 and 2 on them
   (``beta_star_spread``) without a new pass over the scores. Each prompt's own β*
   (``beta_star_prompt``) stays at step 1: its peak may lie anywhere, not near the stencil.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.measures.boltzmann import variance_sums
from phasescope.measures.fluctuations import fluctuations, percentile_interval, resample_counts

__all__ = ["RefinedPeak", "beta_star_spread", "grid_peak", "parabola_vertex", "peak_beta", "refine_peak"]

# A row-averaged heat capacity below this everywhere on the grid is flat: all energies of every row
# are (numerically) degenerate. That is the vanishing-gap limit, whose peak β* ~ 1/gap runs off the
# top of the grid, so it is reported as censored above.
_FLAT_C = 1e-12
# The refinement stencil's half-width in ln β, as a fraction of the mean of the two grid steps around
# the grid maximum. The parabola's error scales as its spacing squared: 1/4 of the step makes the grid
# parabola's worst error on the default grid (2.5e-3 on a two-level system) about 16 times smaller,
# while C̄ still changes between the points by ~1e-3 of itself, far above the sums' rounding (~1e-13).
_STENCIL_FRACTION = 0.25
# Stencils per head. Another one where the last one's vertex fell outside it (as wide), or moved from
# its centre by more than _MOVED of its half-width (a quarter as wide): C̄ is not a parabola at that
# scale there (a flat or strongly skewed top, where the grid vertex is off by 2e-2 and one stencil by
# up to 1.5e-3), so a narrower stencil follows it closer. On the two-level system the first stencil's
# vertex moves by at most 0.08 of its half-width: one pass.
_PASSES = 3
_MOVED = 1 / 8
_NARROWER = 4.0


def grid_peak(
    heat: Float[Tensor, "... beta"], betas: Float[Tensor, " beta"]
) -> tuple[Float[Tensor, " ..."], Float[Tensor, " ..."], Tensor]:
    """``peak_beta`` with the grid index of the maximum instead of its β (for the refinement's bounds)."""
    last = betas.numel() - 1
    heat_max = heat.max(dim=-1).values
    idx = torch.where(heat_max < _FLAT_C, last, heat.argmax(dim=-1))  # argmax: first of ties
    censored = torch.where(idx == 0, -1.0, torch.where(idx == last, 1.0, 0.0))
    u = betas.log()
    mid = idx.clamp(1, max(last - 1, 1))
    points = torch.stack([u[mid + k] for k in (-1, 0, 1)], dim=-1)
    values = torch.stack([heat.gather(-1, (mid + k).unsqueeze(-1)).squeeze(-1) for k in (-1, 0, 1)], dim=-1)
    vertex, _ = parabola_vertex(points, values)
    beta_star = torch.where(censored == 0, vertex.exp(), math.nan)
    return beta_star, censored, idx


def peak_beta(
    heat: Float[Tensor, "... beta"], betas: Float[Tensor, " beta"]
) -> tuple[Float[Tensor, " ..."], Float[Tensor, " ..."], Float[Tensor, " ..."]]:
    """β* of heat-capacity curves on the grid alone: the vertex of the parabola in ``ln β`` through the
    grid maximum and its two neighbours (docs/measures.md, "Thermodynamics").

    The vertex of a parabola through three points lies between the outer two when the middle one is the
    largest, so β* stays within one grid step of the grid maximum; a parabola in ``ln β`` is
    reproduced exactly. ``thermo_table`` refines it further (``refine_peak``).

    Args:
        heat: ``C(β)`` on the grid, any leading dims.
        betas: the increasing grid.

    Returns:
        ``(beta_star, censored, edge)``: β* (NaN when censored), the censoring code (-1 the maximum is
        the first grid point, +1 the last, 0 inside; a curve below 1e-12 everywhere counts as +1) and
        the grid β of the maximum.
    """
    beta_star, censored, idx = grid_peak(heat, betas)
    return beta_star, censored, betas[idx]


def parabola_vertex(
    u: Float[Tensor, "... 3"], f: Float[Tensor, "... 3"]
) -> tuple[Float[Tensor, " ..."], Tensor]:
    """The vertex of the parabola through three points ``(u_k, f_k)``, ``u`` increasing.

    ``u* = u₁ − ½ [(u₁ − u₀)²(f₁ − f₂) − (u₁ − u₂)²(f₁ − f₀)] / [(u₁ − u₀)(f₁ − f₂) − (u₁ − u₂)(f₁ − f₀)]``;
    the denominator is positive exactly when the parabola opens downwards. Where it does not (three
    level or convex points) the "vertex" is the higher of the outer points, a step towards the peak.

    Returns:
        ``(vertex, concave)``: the vertex, and whether the parabola opens downwards (its vertex is then
        its maximum; it lies between ``u₀`` and ``u₂`` when the middle point is the largest).
    """
    u0, u1, u2 = u.unbind(-1)
    f0, f1, f2 = f.unbind(-1)
    a, b = f1 - f2, f1 - f0
    num = (u1 - u0) ** 2 * a - (u1 - u2) ** 2 * b
    den = (u1 - u0) * a - (u1 - u2) * b
    concave = den > 0
    level = torch.where((a == 0) & (b == 0), u1, torch.where(f0 > f2, u0, u2))
    vertex = torch.where(concave, u1 - 0.5 * num / torch.where(concave, den, 1.0), level)
    return vertex, concave


@dataclass
class RefinedPeak:
    """β* after the refinement, and what a bootstrap needs to repeat it.

    Attributes:
        beta_star: ``[layer, head]``, NaN where censored.
        stencil: ``[layer, head, 3]`` the final stencil's β (1.0 where censored).
        var_sums: ``[layer, batch, head, 3]`` per prompt, ``Σ Var_row(e)`` over its valid rows at the
            stencil's β (``C̄ = β² Σ var_sums / Σ count``).
        passes: ``[layer, head]`` how many stencils each head took (0 when censored).
    """

    beta_star: Tensor
    stencil: Tensor
    var_sums: Tensor
    passes: Tensor


def refine_peak(
    scores: Float[Tensor, "layer batch head query key"],
    betas: Float[Tensor, " beta"],
    heat: Float[Tensor, "layer head beta"],
    prompt_count: Tensor,
    slab_elements: int,
    buffer: Tensor,
) -> RefinedPeak:
    """β* of each head's pooled ``C̄(β)``: the grid vertex, then the vertex of an exact three-point stencil.

    Args:
        scores: the scores the sweep used.
        betas: its grid.
        heat: the sweep's ``C̄(β)`` of each head.
        prompt_count: ``[layer, batch, head]`` valid rows per prompt (the sweep's).
        slab_elements: scores per slab, and ``buffer`` (``boltzmann.weights_buffer`` for 3 β), as the sweep's.

    Returns:
        The refined β*, kept between the grid maximum's two neighbours, and the stencil sums.
    """
    n_layers, n_batch, n_heads = prompt_count.shape
    device = heat.device
    grid_star, censored, idx = grid_peak(heat, betas)
    interior = censored == 0
    u = betas.log()
    lo, hi = u[(idx - 1).clamp(min=0)], u[(idx + 1).clamp(max=betas.numel() - 1)]
    half = _STENCIL_FRACTION * (hi - lo) / 2
    centre = torch.where(interior, grid_star, 1.0).log()
    stencil = torch.ones(n_layers, n_heads, 3, dtype=torch.float64, device=device)
    var_sums = torch.zeros(n_layers, n_batch, n_heads, 3, dtype=torch.float64, device=device)
    rows = prompt_count.sum(dim=1).clamp(min=1).to(torch.float64).unsqueeze(-1)
    passes = torch.zeros(n_layers, n_heads, dtype=torch.int64, device=device)
    todo = interior.clone()
    for _ in range(_PASSES):
        for layer, head in todo.nonzero().tolist():
            # Equally spaced in β (two exp and two multiplications per score), [β_c e^-h, β_c, ≈ β_c e^h].
            c = math.exp(float(centre[layer, head]))
            d = -c * math.expm1(-float(half[layer, head]))
            points = [c - d, c, c + d]
            var_sums[layer, :, head] = variance_sums(scores[layer, :, head], points, slab_elements, buffer)
            stencil[layer, head] = torch.tensor(points, dtype=torch.float64, device=device)
        passes += todo.to(torch.int64)
        points = stencil.log()
        vertex, concave = parabola_vertex(points, stencil**2 * var_sums.sum(dim=1) / rows)
        within = concave & (points[..., 0] <= vertex) & (vertex <= points[..., 2])
        vertex = torch.minimum(torch.maximum(vertex, lo), hi)
        moved = (vertex - centre).abs()
        centre = torch.where(todo, vertex, centre)
        todo = todo & (~within | (moved > half * _MOVED))
        half = torch.where(within, half / _NARROWER, half)
        if not bool(todo.any()):
            break
    beta_star = torch.where(interior, centre.exp(), math.nan)
    return RefinedPeak(beta_star, stencil, var_sums, passes)


def beta_star_spread(
    prompt_sums: Float[Tensor, "layer batch head 5 beta"],
    prompt_count: Float[Tensor, "layer batch head"],
    betas: Float[Tensor, " beta"],
    refined: RefinedPeak,
) -> dict:
    """β* of each prompt's own ``C(β)``, its susceptibility, and the prompt bootstrap of the pooled β*.

    Each bootstrap resample pools the resampled prompts' row sums into one ``C̄`` per head, on the grid
    and at the final stencil, and finds its β* as the table does: its grid maximum (a resample whose
    maximum is on a grid end is left out), then the vertex of the parabola through its stencil values,
    kept between its grid maximum's neighbours. ``se`` is the resamples' standard deviation and
    ``ci_lo``/``ci_hi`` their 95% percentile interval; all three are NaN for a censored head. A prompt's
    own β* (``prompt``) is the grid vertex of its own ``C(β)``.
    """
    # Per prompt and β: Σ over the prompt's rows of Var_row(e) = <e²> − <e>² (C/β² summed over rows).
    var_sum = (prompt_sums[..., 2, :] - prompt_sums[..., 1, :]).transpose(1, 2)  # [layer, head, batch, β]
    count = prompt_count.transpose(1, 2).to(torch.float64)  # [layer, head, batch]
    b2 = betas * betas
    interior = refined.beta_star.isfinite()
    with torch.no_grad():
        heat_p = b2 * var_sum / count.unsqueeze(-1)  # NaN for a prompt without a valid row
        star_p, censored_p, _ = peak_beta(torch.nan_to_num(heat_p, nan=0.0), betas)
        star_p = torch.where((count > 0) & (censored_p == 0), star_p, math.nan)
        fl = fluctuations(star_p, count)
        counts = resample_counts(count.shape[-1], device=var_sum.device)  # [boot, batch]
        rows_b = torch.einsum("rb,lhb->lhr", counts, count).clamp_min(1.0).unsqueeze(-1)
        heat_b = b2 * torch.einsum("rb,lhbq->lhrq", counts, var_sum) / rows_b
        _, censored_b, idx_b = grid_peak(heat_b, betas)  # [layer, head, boot]
        stencil = refined.stencil.unsqueeze(2)  # [layer, head, 1, 3]
        var_st = refined.var_sums.transpose(1, 2)  # [layer, head, batch, 3]
        heat_st = stencil**2 * torch.einsum("rb,lhbk->lhrk", counts, var_st) / rows_b
        vertex, _ = parabola_vertex(stencil.log().expand_as(heat_st), heat_st)
        u = betas.log()
        lo, hi = u[(idx_b - 1).clamp(min=0)], u[(idx_b + 1).clamp(max=betas.numel() - 1)]
        star_b = torch.where(censored_b == 0, torch.minimum(torch.maximum(vertex, lo), hi).exp(), math.nan)
        lo_ci, hi_ci = percentile_interval(star_b)
        ok = star_b.isfinite()
        k = ok.sum(-1).to(torch.float64)
        mean_b = torch.where(ok, star_b, 0.0).sum(-1) / k
        dev = torch.where(ok, star_b - mean_b.unsqueeze(-1), 0.0)
        se = ((dev * dev).sum(-1) / (k - 1)).sqrt()
    off = ~interior | (k < 2)
    return {
        "se": torch.where(off, math.nan, se),
        "ci_lo": torch.where(off, math.nan, lo_ci),
        "ci_hi": torch.where(off, math.nan, hi_ci),
        "prompt": star_p,
        "fluctuations": fl,
    }
