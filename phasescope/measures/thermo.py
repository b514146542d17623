"""Attention as a Boltzmann distribution: free energy, entropy and heat capacity against β.

Each attention row is a canonical ensemble over its allowed keys with energies ``E_ij = -s_ij`` (the
pre-softmax scores) at inverse temperature β; β = 1 is the model as it is. For each row, over allowed
keys only (docs/measures.md):

- ``ln Z(β) = logsumexp_j(β s_ij)`` and ``p_ij(β) = softmax_j(β s_ij)``
- ``βF = -ln Z`` and free energy ``F = -ln Z / β``
- internal energy ``U = Σ_j p_ij E_ij``
- entropy ``S = -Σ_j p_ij ln p_ij`` (equal to ``β(U - F)``, but never computed that way: that form
  cancels catastrophically at large β)
- heat capacity ``C = β² Var_p(E)`` in the centred two-pass form (``= -β dS/dβ``)

Everything is float64; masked keys (``-inf`` scores) are removed with explicit masks, so no
``0 * (-inf)`` appears in the values or in their gradients.

``row_thermo`` is the exact, differentiable form (one ``exp`` per β, the centred two-pass variance).
``thermo_table`` computes the same averages through ``phasescope.measures.boltzmann``: three sums per
row and β, ``S = β<e> + ln Z'``, the one-pass variance and multiplications for exponentials on the
equal-step runs of ``beta_grid``, each with the error bound docs/measures.md states.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from phasescope.errors import MeasureError
from phasescope.measures.boltzmann import boltzmann_sums, slabs, sweep_plan, weights_buffer
from phasescope.measures.entropy import _prepare
from phasescope.measures.fluctuations import PROMPT_ROWS_PER_HEAD, fluctuation_tables, tidy_with_spread
from phasescope.measures.tables import concat_tables
from phasescope.measures.thermo_peak import beta_star_spread, peak_beta, refine_peak

__all__ = ["ROW_QUANTITIES", "beta_grid", "peak_beta", "row_thermo", "thermo_table"]

ROW_QUANTITIES = ("log_z", "beta_f", "free_energy", "internal_energy", "entropy", "heat_capacity")
"""The quantities ``row_thermo`` returns, and ``thermo_table`` averages per (layer, head, beta)."""

# Bound on the elements of one [beta, ..., key] intermediate of row_thermo (float64: 256 MiB). The
# sweep runs over chunks of β sized to this; a single β over a larger score tensor is done in one piece.
_CHUNK_ELEMENTS = 2**25
# beta_grid's knots: every this many points of the log grid (default: 10 uniform runs of 6 steps).
_SEGMENT_STEPS = 6
# thermo_table sweeps its rows in slabs of this many scores, and keeps the weights of a slab at up to
# _BUFFER_ELEMENTS / _SLAB_ELEMENTS values of β for one matrix product (float64: 64 KiB and 4 MiB, so
# a slab's passes stay in a CPU's caches; larger on an accelerator, where a kernel launch costs more
# than its memory traffic).
_SLAB_ELEMENTS = 2**15
_BUFFER_ELEMENTS = 2**18
_SLAB_ELEMENTS_ACCEL = 2**22
_BUFFER_ELEMENTS_ACCEL = 2**26
_HEAD = ("layer", "head")


def beta_grid(beta_min: float = 0.05, beta_max: float = 20.0, n: int = 61) -> Float[Tensor, " beta"]:
    """Inverse temperatures from ``beta_min`` to ``beta_max``: log-spaced knots, uniform between them.

    The knots are every ``_SEGMENT_STEPS``-th point of the log-spaced grid of ``n`` points (plus its
    last point and its β = 1); between two knots the points are equally spaced in β. The density in
    ``ln β`` stays close to the log grid's (for the default, steps of 0.08 to 0.13 in ``ln β``
    instead of 0.1), and on each equal-step run the sweep replaces ``exp`` by one multiplication per
    β (``phasescope.measures.boltzmann``; docs/measures.md).

    Args:
        beta_min: first point (> 0, dimensionless: β = 1 is the model's own temperature).
        beta_max: last point (> ``beta_min``).
        n: number of points (>= 2).

    Returns:
        ``[n]`` increasing float64 values on the CPU with the exact endpoints. A log-grid point within
        1e-9 of β = 1 in ``ln β`` is a knot set to exactly 1.0, so a range symmetric around 1 in log
        (``beta_min * beta_max == 1``) with odd ``n`` contains the model's own β exactly.

    >>> grid = beta_grid()
    >>> len(grid), float(grid[30]), round(float(grid[6]), 6), round(float(grid[3] - grid[2]), 6)
    (61, 1.0, 0.091028, 0.006838)
    """
    if not (0 < beta_min < beta_max) or not math.isfinite(beta_max) or n < 2:
        raise MeasureError(f"need 0 < beta_min < beta_max < inf and n >= 2, got {beta_min}, {beta_max}, {n}")
    log_grid = torch.linspace(math.log(beta_min), math.log(beta_max), n, dtype=torch.float64)
    log_points = log_grid.exp()
    log_points[0], log_points[-1] = beta_min, beta_max
    one = log_grid.abs() < 1e-9
    log_points[one] = 1.0
    knots = sorted({0, n - 1, *range(0, n, _SEGMENT_STEPS), *one.nonzero().flatten().tolist()})
    grid = torch.empty(n, dtype=torch.float64)
    for a, b in zip(knots, knots[1:], strict=False):
        lo, hi = float(log_points[a]), float(log_points[b])
        step = (hi - lo) / (b - a)
        grid[a:b] = lo + step * torch.arange(b - a, dtype=torch.float64)
    grid[-1] = beta_max
    return grid


def _check_betas(betas: Tensor, device: torch.device) -> Float[Tensor, " beta"]:
    betas = betas.to(device=device, dtype=torch.float64)
    if betas.ndim != 1 or betas.numel() == 0:
        raise MeasureError(f"betas must be a non-empty 1-d tensor, got shape {tuple(betas.shape)}")
    if not bool(((betas > 0) & betas.isfinite()).all()):
        raise MeasureError("betas must be finite and > 0")
    return betas


def _shifted(
    s: Float[Tensor, "... key"], allowed: Bool[Tensor, "... key"]
) -> tuple[Float[Tensor, "... key"], Float[Tensor, " ..."]]:
    """Energies above each row's ground state, ``e = max_j s_j - s >= 0`` (0 at masked keys), and the max.

    Working with ``e`` keeps ``Z' = Σ exp(-β e)`` in ``[1, n]`` at every β, so nothing overflows.
    """
    top = s.amax(dim=-1)  # finite: every row has an allowed key
    return torch.where(allowed, top.unsqueeze(-1) - s, 0.0), top


def _sweep(
    e0: Float[Tensor, "... key"], top: Float[Tensor, " ..."], allowed: Bool[Tensor, "... key"], betas: Tensor
) -> dict[str, Tensor]:
    """The six row quantities for a chunk of β at once, each ``[beta, ...]``; differentiable.

    ``e0`` is zero at masked keys and every product meets finite numbers only: the masked keys are
    dropped by ``where`` (so their gradient is 0, not 0 * inf).
    """
    b = betas.reshape(-1, *([1] * e0.ndim))  # [beta, 1, ..., 1]
    minus_be = -b * e0  # [beta, ..., key]
    w = torch.where(allowed, minus_be.exp(), 0.0)
    z = w.sum(dim=-1)  # Z' = Z exp(-β max s), in [1, n]
    p = w / z.unsqueeze(-1)
    logp = minus_be - z.log().unsqueeze(-1)  # finite at masked keys, where p = 0
    entropy = -(p * logp).sum(dim=-1)
    mean_e = (p * e0).sum(dim=-1)
    centred = e0 - mean_e.unsqueeze(-1)
    var = (p * centred * centred).sum(dim=-1)
    b_rows = b.squeeze(-1)  # [beta, 1, ..., 1] against the row dims
    log_z = b_rows * top + z.log()
    return _quantities(log_z, b_rows, mean_e - top, entropy, var)


def _quantities(
    log_z: Tensor, b: Tensor, internal: Tensor, entropy: Tensor, var: Tensor
) -> dict[str, Tensor]:
    return {
        "log_z": log_z,
        "beta_f": -log_z,
        "free_energy": -log_z / b,
        "internal_energy": internal,
        "entropy": entropy,
        "heat_capacity": b * b * var,
    }


def _slab_and_buffer(n_beta: int, device: torch.device) -> tuple[int, Tensor]:
    """The slab size and weights buffer of a sweep over ``n_beta`` values of β on ``device``."""
    accel = device.type != "cpu"
    slab_elements = _SLAB_ELEMENTS_ACCEL if accel else _SLAB_ELEMENTS
    buffer_elements = _BUFFER_ELEMENTS_ACCEL if accel else _BUFFER_ELEMENTS
    return slab_elements, weights_buffer(slab_elements, n_beta, buffer_elements, device)


def _table_sums(
    scores: Float[Tensor, "layer batch head query key"], betas: Float[Tensor, " beta"]
) -> tuple[Float[Tensor, "layer batch head 5 beta"], Float[Tensor, "layer batch head"]]:
    """Sums over the valid rows (``n >= 2``) of each head and prompt, and their number; no autograd.

    Returns ``(sums, count)``: ``sums[..., i, :]`` holds, per β, ``Σ <e>``, ``Σ <e>²``, ``Σ <e²>``,
    ``Σ ln Z'`` and (constant in β) ``Σ max s`` over the valid rows (queries) of one prompt of a head;
    summed over prompts, ``_table_means`` makes the averaged quantities of them. The rows are swept in slabs
    (``boltzmann.slabs``) with the three sums of ``boltzmann.boltzmann_sums``; per row and β only a
    few divisions remain, and ``ln Z'`` is taken once per query block of a row's product
    (``Π Z' <= n^16`` cannot overflow), not once per row.
    """
    n_layers, n_batch, n_heads, n_query, n_key = scores.shape
    n_rows, n_beta = n_layers * n_batch * n_heads, betas.numel()
    slab_elements, buffer = _slab_and_buffer(n_beta, scores.device)
    plan = sweep_plan(betas.tolist())
    sums = torch.zeros(n_rows, 5, n_beta, dtype=torch.float64, device=scores.device)
    count = torch.zeros(n_rows, dtype=torch.int64, device=scores.device)
    for slab in slabs(scores.reshape(n_rows, n_query, n_key), slab_elements):
        g, q = slab.r1 - slab.r0, slab.q1 - slab.q0
        raw = boltzmann_sums(slab.e, slab.allowed.to(torch.float64), plan, buffer)  # [g·q, 3, β]
        z = raw[:, 0]
        mean_e = raw[:, 1] / z  # <e> >= 0
        stats = torch.stack((mean_e, mean_e * mean_e, raw[:, 2] / z), dim=1)  # <e>, <e>², <e²>
        valid = slab.allowed.sum(dim=-1) >= 2  # one-key rows have no thermodynamics
        weight = valid.to(torch.float64).view(g, 1, q)
        part = sums[slab.r0 : slab.r1]
        part[:, :3] += torch.bmm(weight, stats.view(g, q, 3 * n_beta)).view(g, 3, n_beta)
        product = torch.where(valid.unsqueeze(-1), z, 1.0).view(g, q, n_beta).prod(dim=1)
        part[:, 3] += product.log_()
        part[:, 4] += torch.bmm(weight, slab.top.view(g, q, 1)).view(g, 1)
        count[slab.r0 : slab.r1] += valid.view(g, q).sum(dim=1)
    if not bool(sums.isfinite().all()):
        raise MeasureError("scores span too wide a range for float64 (energies above 1e154)")
    shape = (n_layers, n_batch, n_heads)
    return sums.view(*shape, 5, n_beta), count.view(shape)


def _table_means(
    sums: Float[Tensor, "layer head 5 beta"], count: Float[Tensor, "layer head"], betas: Tensor
) -> dict[str, Tensor]:
    """The six quantities averaged over each head's valid rows, each ``[layer, head, beta]``.

    Per row ``S = β<e> + ln Z'`` (both terms >= 0: no cancellation, unlike ``β(U - F)`` in raw
    scores), ``U = <e> - max s``, ``ln Z = β max s + ln Z'`` and ``Var(E) = <e²> - <e>²``, whose
    rounding error is bounded by ``Var(e) >= <e>²/n`` (docs/measures.md).
    """
    n = count.clamp(min=1).to(torch.float64).unsqueeze(-1)
    mean_e, mean_e_sq, mean_e2, log_zp = (sums[..., i, :] / n for i in range(4))
    top = sums[..., 4, :] / n
    return _quantities(
        betas * top + log_zp, betas, mean_e - top, betas * mean_e + log_zp, mean_e2 - mean_e_sq
    )


def _chunks(betas: Tensor, row_elements: int) -> list[Tensor]:
    size = max(1, _CHUNK_ELEMENTS // max(1, row_elements))
    return list(betas.split(size))


def row_thermo(scores: Float[Tensor, "... key"], betas: Float[Tensor, " beta"]) -> dict[str, Tensor]:
    """Thermodynamic quantities of every attention row at every β.

    Args:
        scores: pre-softmax attention scores, ``-inf`` at masked keys; any leading dims. float32 or
            float64, any device; gradients flow to ``scores`` and ``betas`` if they require them.
        betas: ``[beta]`` inverse temperatures (> 0), e.g. from ``beta_grid``.

    Returns:
        float64 tensors ``[beta, *scores.shape[:-1]]`` on the scores' device, in nats:
        ``log_z`` (ln Z), ``beta_f`` (βF = -ln Z), ``free_energy`` (F = -ln Z/β, score units),
        ``internal_energy`` (U = Σ p E, score units), ``entropy`` (S = -Σ p ln p, nats) and
        ``heat_capacity`` (C = β² Var_p(E), dimensionless).

    Raises:
        MeasureError: a row has no allowed key, or a β is not finite and positive.

    >>> out = row_thermo(torch.zeros(3, 4), torch.tensor([0.5, 2.0]))
    >>> out["entropy"].shape, round(float(out["entropy"][0, 0]), 6), float(out["heat_capacity"].max())
    (torch.Size([2, 3]), 1.386294, 0.0)
    """
    s, allowed = _prepare(scores)
    betas = _check_betas(betas, s.device)
    e0, top = _shifted(s, allowed)
    parts = [_sweep(e0, top, allowed, chunk) for chunk in _chunks(betas, e0.numel())]
    return {q: torch.cat([part[q] for part in parts]) for q in ROW_QUANTITIES}


def thermo_table(
    scores: Float[Tensor, "layer batch head query key"],
    checkpoint: int,
    betas: Float[Tensor, " beta"] | None = None,
) -> pd.DataFrame:
    """The β sweep of every head and its critical point, as a tidy table (``measure="thermo"``).

    Averages are over rows: every prompt and query position of a head whose row has ``n >= 2``
    allowed keys (a one-key row, e.g. position 0 of a causal head, is a frozen system with no
    thermodynamics and is left out).

    Args:
        scores: pre-softmax attention scores ``[layer, batch, head, query, key]``, ``-inf`` at
            masked keys. float32 or float64, any device. Rows are swept in cache-sized slabs
            converted to float64 one at a time, so beyond the scores memory stays at a few MiB.
        checkpoint: training step of the checkpoint the scores come from.
        betas: increasing ``[beta]`` grid of at least 3 points (default: ``beta_grid()``, 0.05 to 20,
            61 points, β = 1 included). Runs of equal steps are swept by multiplications; any other
            grid gets one ``exp`` per β (docs/measures.md).

    Returns:
        A tidy table with these quantities:

        Per ``(layer, head, beta)``, the ``beta`` column holding β: the mean over rows of ``log_z``,
        ``beta_f``, ``free_energy``, ``internal_energy``, ``entropy`` and ``heat_capacity``
        (as in ``row_thermo``).

        Per ``(layer, head)``:

        - ``heat_capacity_max``: the maximum over the grid of the row-averaged ``C̄(β)``, i.e. the
          mean of the rows' heat capacities, taken first, then maximised (not the mean of each
          row's own peak).
        - ``beta_star``: where ``C̄(β)`` peaks: the vertex of the parabola in ``ln β`` through the
          grid maximum and its two neighbours (``peak_beta``), refined by the vertex of the parabola
          through ``C̄`` evaluated exactly at three β a quarter of a grid step apart around it
          (``thermo_peak.refine_peak``: within 1e-3 of the grid-free peak, between the grid maximum's
          neighbours); NaN when the peak is censored. Its ``se``, ``ci_lo`` and ``ci_hi`` come from a
          bootstrap over prompts (each resample pools its prompts' rows into one ``C̄``, on the grid
          and at the stencil, and finds its β* again).
        - ``beta_star_prompt`` (layer, head, index): the β* of each prompt's own ``C̄(β)`` (over its
          valid rows, the grid vertex without refinement; a prompt whose peak is censored has no row), and ``beta_star_chi`` (layer, head),
          the susceptibility of those with ``N_p`` = the prompt's valid rows (docs/measures.md,
          "Uncertainties and susceptibility"). The pooled β* is not their mean.
        - ``beta_star_censored``: 0 for a peak inside the grid, -1 when it lies on the first point
          (the true peak is at or below ``betas[0]``), +1 on the last point (at or above
          ``betas[-1]``). A flat ``C̄`` (below 1e-12 everywhere: every row's scores equal) counts
          as +1, the limit of a vanishing energy gap whose peak β* ~ 1/gap runs off the grid.
        - ``beta_star_bound``: the censoring edge (``betas[0]`` or ``betas[-1]``), NaN for an
          interior peak. Display a censored peak as "<= bound" or ">= bound", never as a number.

        A head without a single row of two or more keys has no rows at all.

    Raises:
        MeasureError: ``scores`` is not 5-d, a row has no allowed key or a NaN or ``+inf`` score,
            scores span more than float64 can square (1e154), or ``betas`` is not an increasing grid
            of at least 3 positive values.
    """
    if scores.ndim != 5:
        raise MeasureError(
            f"scores must be [layer, batch, head, query, key], got shape {tuple(scores.shape)}"
        )
    if scores.shape[-1] == 0:
        raise MeasureError(f"scores need a non-empty key axis, got shape {tuple(scores.shape)}")
    betas = _check_betas(beta_grid() if betas is None else betas, scores.device)
    if betas.numel() < 3 or not bool((betas.diff() > 0).all()):
        raise MeasureError("betas must be an increasing grid of at least 3 points")
    prompt_sums, prompt_count = _table_sums(scores.detach(), betas)  # [layer, batch, head, ...]
    sums, count = prompt_sums.sum(dim=1), prompt_count.sum(dim=1)
    has_rows = count > 0
    sweep = _table_means(sums, count, betas)  # each [layer, head, beta]

    heat = sweep["heat_capacity"]
    heat_max = heat.max(dim=-1).values
    _, censored, edge = peak_beta(heat, betas)
    interior = censored == 0
    # β* between grid points: C̄ evaluated exactly at a small stencil per head (thermo_peak).
    refined = refine_peak(scores.detach(), betas, heat, prompt_count, *_slab_and_buffer(3, scores.device))
    beta_star = refined.beta_star
    spread = beta_star_spread(prompt_sums, prompt_count, betas, refined)
    summary = {
        "beta_star": beta_star,
        "beta_star_censored": censored,
        "beta_star_bound": torch.where(interior, math.nan, edge),
        "heat_capacity_max": heat_max,
    }

    def _kept(quantity: str, values: Tensor, dims: tuple[str, ...], **spread: Tensor) -> pd.DataFrame:
        # Drop the heads that have no row to average (their values would be 0/0).
        keep = has_rows.reshape(*has_rows.shape, *([1] * (values.ndim - 2))).expand_as(values)
        frame = tidy_with_spread(
            "thermo", quantity, values, dims, checkpoint=checkpoint, coords={"beta": betas}, **spread
        )
        return frame[keep.reshape(-1).cpu().numpy()]

    tables = [_kept(q, v, ("layer", "head", "beta")) for q, v in sweep.items()]
    errors = {k: spread[k] for k in ("se", "ci_lo", "ci_hi")}
    tables += [_kept(q, v, _HEAD, **(errors if q == "beta_star" else {})) for q, v in summary.items()]
    per_prompt, fl = spread["prompt"], spread["fluctuations"]
    chi = fluctuation_tables(
        "thermo", "beta_star", per_prompt, _HEAD, fl, checkpoint=checkpoint, max_prompts=PROMPT_ROWS_PER_HEAD
    )
    tables += [t[t["value"].notna()] for t in chi]
    return concat_tables(tables)
