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
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from phasescope.errors import MeasureError
from phasescope.measures.entropy import _prepare
from phasescope.measures.tables import concat_tables, tidy

__all__ = ["ROW_QUANTITIES", "beta_grid", "row_thermo", "thermo_table"]

ROW_QUANTITIES = ("log_z", "beta_f", "free_energy", "internal_energy", "entropy", "heat_capacity")
"""The quantities ``row_thermo`` returns, and ``thermo_table`` averages per (layer, head, beta)."""

# Bound on the elements of one [beta, ..., key] intermediate (float64: 256 MiB). The sweep runs over
# chunks of β sized to this; a single β over a larger score tensor is still done in one piece.
_CHUNK_ELEMENTS = 2**25
# thermo_table sweeps its rows in slabs of this many elements (float64: 2 MiB, cache-sized on a CPU;
# larger on an accelerator, where each kernel launch costs more than its memory traffic) and in
# blocks of this many queries (see _query_blocks).
_SLAB_ELEMENTS = 2**18
_SLAB_ELEMENTS_ACCEL = 2**24
_QUERY_BLOCK = 16
# A row-averaged heat capacity below this everywhere on the grid is flat: all energies of every row
# are (numerically) degenerate. That is the vanishing-gap limit, whose peak β* ~ 1/gap runs off the
# top of the grid, so it is reported as censored above.
_FLAT_C = 1e-12


def beta_grid(beta_min: float = 0.05, beta_max: float = 20.0, n: int = 61) -> Float[Tensor, " beta"]:
    """Log-spaced inverse temperatures, float64 on the CPU.

    Args:
        beta_min: first point (> 0, dimensionless: β = 1 is the model's own temperature).
        beta_max: last point (> ``beta_min``).
        n: number of points (>= 2).

    Returns:
        ``[n]`` increasing values with the exact endpoints. A point within 1e-9 of β = 1 in ``ln β``
        is set to exactly 1.0, so a range symmetric around 1 in log (``beta_min * beta_max == 1``)
        with odd ``n`` contains the model's own β exactly.

    >>> grid = beta_grid()
    >>> len(grid), float(grid[30])
    (61, 1.0)
    """
    if not (0 < beta_min < beta_max) or not math.isfinite(beta_max) or n < 2:
        raise MeasureError(f"need 0 < beta_min < beta_max < inf and n >= 2, got {beta_min}, {beta_max}, {n}")
    log_grid = torch.linspace(math.log(beta_min), math.log(beta_max), n, dtype=torch.float64)
    grid = log_grid.exp()
    grid[0], grid[-1] = beta_min, beta_max
    return torch.where(log_grid.abs() < 1e-9, torch.ones_like(grid), grid)


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


def _query_blocks(allowed: Bool[Tensor, "rows query key"]) -> list[tuple[int, int, int]]:
    """``(q0, q1, keys)`` query blocks, each with the number of leading keys any of its rows may attend to.

    A causal row ``i`` only sees keys ``j <= i``: sweeping blocks of ``_QUERY_BLOCK`` queries over
    their own key extent skips most of the masked upper triangle (for 128 tokens, 45% of the work).
    Any other mask (bidirectional: none) gives full-width blocks; the results do not depend on it.
    """
    n_query = allowed.shape[-2]
    seen = allowed.reshape(-1, n_query, allowed.shape[-1]).any(dim=0)  # [query, key]
    blocks = []
    for q0 in range(0, n_query, _QUERY_BLOCK):
        q1 = min(q0 + _QUERY_BLOCK, n_query)
        keys = seen[q0:q1].any(dim=0).nonzero()
        blocks.append((q0, q1, int(keys.max()) + 1 if keys.numel() else 1))
    return blocks


def _table_sums(
    e0: Float[Tensor, "layer batch head query key"],
    top: Float[Tensor, "layer batch head query"],
    allowed: Bool[Tensor, "layer batch head query key"],
    valid: Bool[Tensor, "layer batch head query"],
    betas: Float[Tensor, " beta"],
) -> Float[Tensor, "4 layer head beta"]:
    """Sums over valid rows of ``ln Z``, ``U``, ``S`` and ``Var(E)``, per (layer, head, β); no autograd.

    The rows are swept in slabs of ``_SLAB_ELEMENTS`` (a few MB, so every per-β pass over a slab stays
    in cache instead of streaming the whole score tensor from memory once per pass and per β), over
    each query block's key extent only (``_query_blocks``), in two preallocated slab buffers. Per β a
    slab costs one ``exp`` and six cheap passes; the sums over keys are ``vecdot``s and ``p`` is never
    normalised in place (the row sums are divided by ``Z'`` instead).
    """
    n_layers, n_batch, n_heads, n_query, n_key = e0.shape
    n_rows = n_layers * n_batch * n_heads
    e_all = e0.reshape(n_rows, n_query, n_key)  # (L·B·H, Q, K): views, no copy
    masked_all = ~allowed.reshape(n_rows, n_query, n_key)
    top_all = top.reshape(n_rows, n_query)
    weight_all = valid.reshape(n_rows, n_query).to(e0.dtype)  # 1 for rows that enter the averages
    slab_elements = _SLAB_ELEMENTS if e0.device.type == "cpu" else _SLAB_ELEMENTS_ACCEL
    sums = torch.zeros(4, n_rows, betas.numel(), dtype=e0.dtype, device=e0.device)
    for q0, q1, n_k in _query_blocks(allowed):
        group = max(1, slab_elements // ((q1 - q0) * n_k))
        for r0 in range(0, n_rows, group):
            r1 = min(r0 + group, n_rows)
            e = e_all[r0:r1, q0:q1, :n_k].contiguous()  # (g, q, k) energies above the row's ground state
            masked = masked_all[r0:r1, q0:q1, :n_k]
            # Multiplying by 0/1 is cheaper than masked_fill_ on a CPU.
            keep = (~masked).to(e.dtype) if bool(masked.any()) else None
            top_s, weight = top_all[r0:r1, q0:q1], weight_all[r0:r1, q0:q1]
            w, t = torch.empty_like(e), torch.empty_like(e)
            for j, beta in enumerate(betas.tolist()):
                torch.mul(e, -beta, out=w)
                # Boltzmann weights exp(-β e) in (0, 1], 1 at the ground state. Below -708 exp leaves
                # the normal range (denormals, then 0), which CPUs compute 4-7x slower; such a weight
                # is under 3.4e-308 against Z' >= 1, so clamping it to exp(-708) changes no sum by
                # more than that per key.
                w.clamp_min_(-708.0).exp_()
                if keep is not None:
                    w.mul_(keep)
                z = w.sum(dim=-1)  # Z' = Z exp(-β max s), in [1, n]
                mean_e = torch.linalg.vecdot(w, e).div_(z)  # <e> >= 0
                torch.sub(e, mean_e.unsqueeze(-1), out=t).square_()  # centred: two-pass variance
                var = torch.linalg.vecdot(w, t).div_(z)
                log_zp = z.log_()
                # -Σ p ln p with ln p = -β e - ln Z': with energies above the ground state both
                # terms are >= 0, so this sum does not cancel (β(U - F) in raw scores would).
                entropy = mean_e * beta + log_zp
                sums[0, r0:r1, j] += torch.linalg.vecdot(top_s * beta + log_zp, weight)
                sums[1, r0:r1, j] += torch.linalg.vecdot(mean_e - top_s, weight)
                sums[2, r0:r1, j] += torch.linalg.vecdot(entropy, weight)
                sums[3, r0:r1, j] += torch.linalg.vecdot(var, weight)
    return sums.reshape(4, n_layers, n_batch, n_heads, -1).sum(dim=2)  # (4, L, H, β)


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
            masked keys. float32 or float64, any device. Rows are swept in cache-sized slabs, so memory
            stays near one copy of the scores in float64 (GPT-2 small, 16 prompts x 128 tokens:
            about 300 MB) plus the boolean mask.
        checkpoint: training step of the checkpoint the scores come from.
        betas: increasing ``[beta]`` grid of at least 3 points (default: ``beta_grid()``, 0.05 to 20,
            61 points, β = 1 included).

    Returns:
        A tidy table with these quantities:

        Per ``(layer, head, beta)``, the ``beta`` column holding β: the mean over rows of ``log_z``,
        ``beta_f``, ``free_energy``, ``internal_energy``, ``entropy`` and ``heat_capacity``
        (as in ``row_thermo``).

        Per ``(layer, head)``:

        - ``heat_capacity_max``: the maximum over the grid of the row-averaged ``C̄(β)``, i.e. the
          mean of the rows' heat capacities, taken first, then maximised (not the mean of each
          row's own peak).
        - ``beta_star``: the grid β at which ``C̄(β)`` peaks; NaN when the peak is censored.
        - ``beta_star_censored``: 0 for a peak inside the grid, -1 when it lies on the first point
          (the true peak is at or below ``betas[0]``), +1 on the last point (at or above
          ``betas[-1]``). A flat ``C̄`` (below 1e-12 everywhere: every row's scores equal) counts
          as +1, the limit of a vanishing energy gap whose peak β* ~ 1/gap runs off the grid.
        - ``beta_star_bound``: the censoring edge (``betas[0]`` or ``betas[-1]``), NaN for an
          interior peak. Display a censored peak as "<= bound" or ">= bound", never as a number.

        A head without a single row of two or more keys has no rows at all.

    Raises:
        MeasureError: ``scores`` is not 5-d, a row has no allowed key, or ``betas`` is not an
            increasing grid of at least 3 positive values.
    """
    if scores.ndim != 5:
        raise MeasureError(
            f"scores must be [layer, batch, head, query, key], got shape {tuple(scores.shape)}"
        )
    s, allowed = _prepare(scores.detach())
    betas = _check_betas(beta_grid() if betas is None else betas, s.device)
    if betas.numel() < 3 or not bool((betas.diff() > 0).all()):
        raise MeasureError("betas must be an increasing grid of at least 3 points")
    valid = allowed.sum(dim=-1) >= 2  # [layer, batch, head, query]
    count = valid.sum(dim=(1, 3))  # [layer, head]
    has_rows = count > 0
    e0, top = _shifted(s, allowed)
    del s
    log_z, internal, entropy, var = _table_sums(e0, top, allowed, valid, betas) / count.clamp(
        min=1
    ).unsqueeze(-1)
    sweep = _quantities(log_z, betas, internal, entropy, var)  # each [layer, head, beta]

    heat = sweep["heat_capacity"]
    heat_max = heat.max(dim=-1).values
    last = betas.numel() - 1
    idx = torch.where(heat_max < _FLAT_C, last, heat.argmax(dim=-1))  # argmax: first of ties
    censored = torch.where(idx == 0, -1.0, torch.where(idx == last, 1.0, 0.0))
    interior = censored == 0
    summary = {
        "beta_star": torch.where(interior, betas[idx], math.nan),
        "beta_star_censored": censored,
        "beta_star_bound": torch.where(interior, math.nan, betas[idx]),
        "heat_capacity_max": heat_max,
    }

    def _kept(quantity: str, values: Tensor, dims: tuple[str, ...]) -> pd.DataFrame:
        # Drop the heads that have no row to average (their values would be 0/0).
        keep = has_rows.reshape(*has_rows.shape, *([1] * (values.ndim - 2))).expand_as(values)
        frame = tidy("thermo", quantity, values, dims, checkpoint=checkpoint, coords={"beta": betas})
        return frame[keep.reshape(-1).cpu().numpy()]

    tables = [_kept(q, v, ("layer", "head", "beta")) for q, v in sweep.items()]
    tables += [_kept(q, v, ("layer", "head")) for q, v in summary.items()]
    return concat_tables(tables)
