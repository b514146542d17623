"""The fast path of the entropy and thermo tables: attention rows in cache-sized slabs, three sums per β.

For every attention row (one query position of one head of one prompt) and every β of a grid, the
tables need three sums over the row's allowed keys of the Boltzmann weights of the energies above the
row's ground state (docs/measures.md, "How the tables are computed"):

    e_j = max_k s_k - s_j >= 0,   w_j = exp(-β e_j) in (0, 1],
    Z' = Σ_j w_j,   A = Σ_j w_j e_j,   B = Σ_j w_j e_j²

(``Z'`` is ``Z exp(-β max s)`` and lies in ``[1, n]``). Every quantity of the tables follows from
these: ``<e> = A/Z'``, ``Var(e) = B/Z' - <e>²``, ``S = β<e> + ln Z'`` and ``ln Z = β max s + ln Z'``.

Three things make this fast, each with the error bound docs/measures.md states and the tests check
against the exact forms of ``row_thermo``/``row_entropy``:

- **Query blocks.** A causal row ``i`` sees keys ``j <= i`` only: rows are taken in blocks of 16
  queries over the keys any row of the block may see, which skips most of the masked triangle.
- **Multiplications for exponentials.** On a run of equally spaced β (``beta_grid`` makes its grid of
  such runs) ``exp(-(β + Δ) e) = exp(-β e) · exp(-Δ e)``: one ``exp`` per run and per slab, then one
  multiplication per β. A grid without such runs gets one ``exp`` per β, as before.
- **One matrix product for the three sums.** The weights of a slab's rows at several β are reduced
  against ``[1, e, e²]`` in one batched matrix product instead of three passes per β.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from phasescope.errors import MeasureError

__all__ = [
    "QUERY_BLOCK",
    "Slab",
    "boltzmann_sums",
    "query_blocks",
    "slabs",
    "sweep_plan",
    "variance_sums",
    "weights_buffer",
]

QUERY_BLOCK = 16
"""Queries per block (see ``query_blocks``)."""

# exp below -708 leaves the normal float64 range (denormals, then 0), which CPUs compute 4-7x slower.
# Such a weight is under 3.4e-308 against Z' >= 1: clamping the exponent there changes no sum by more
# than that per key (times e or e² in A and B).
EXP_FLOOR = -708.0
# Equally spaced grid points: each within this many float64 epsilons (relative) of β_a + iΔ.
_UNIFORM_EPS = 8
# A multiplication chain is restarted by a direct exp after this many steps, so the rounding it
# accumulates (about 1.5 ε per step, docs/measures.md) stays below 1e-13 on any grid.
_CHAIN_MAX = 64


def query_blocks(seen: Bool[Tensor, "query key"]) -> list[tuple[int, int, int]]:
    """``(q0, q1, keys)`` query blocks, each with the number of leading keys any of its rows may attend to.

    Args:
        seen: whether any row at this query position allows this key.

    A causal row ``i`` only sees keys ``j <= i``: blocks of ``QUERY_BLOCK`` queries over their own key
    extent skip most of the masked upper triangle (for 128 tokens, 45% of the work). Any other mask
    (bidirectional: none) gives full-width blocks; results do not depend on the blocking.
    """
    n_query = seen.shape[0]
    blocks = []
    for q0 in range(0, n_query, QUERY_BLOCK):
        q1 = min(q0 + QUERY_BLOCK, n_query)
        keys = seen[q0:q1].any(dim=0).nonzero()
        blocks.append((q0, q1, int(keys.max()) + 1 if keys.numel() else 1))
    return blocks


@dataclass
class Slab:
    """Rows ``r0:r1`` x queries ``q0:q1`` of the scores, over the block's first ``e.shape[-1]`` keys.

    Attributes:
        r0, r1, q0, q1: where the slab's rows sit in the ``[rows, query]`` grid of rows.
        e: ``[(r1-r0)·(q1-q0), keys]`` float64 energies above each row's ground state, 0 at masked keys.
        allowed: same shape, the keys whose score is not ``-inf``.
        top: ``[(r1-r0)·(q1-q0)]`` float64 maximum score of each row.
    """

    r0: int
    r1: int
    q0: int
    q1: int
    e: Float[Tensor, "row key"]
    allowed: Bool[Tensor, "row key"]
    top: Float[Tensor, " row"]


def slabs(scores: Float[Tensor, "rows query key"], elements: int) -> Iterator[Slab]:
    """The rows of ``scores`` in slabs of about ``elements`` scores, query block by query block.

    ``scores`` may be float32 or float64 (each slab is converted to float64, so no full float64 copy
    is made). Raises ``MeasureError`` for a row without an allowed key or with a NaN or ``+inf`` score.
    """
    n_rows, n_query, _ = scores.shape
    seen = (~torch.isneginf(scores)).any(dim=0)  # [query, key]
    for q0, q1, n_k in query_blocks(seen):
        group = max(1, elements // ((q1 - q0) * n_k))
        for r0 in range(0, n_rows, group):
            r1 = min(r0 + group, n_rows)
            s = scores[r0:r1, q0:q1, :n_k].to(torch.float64).reshape(-1, n_k)
            allowed = ~torch.isneginf(s)
            top = s.amax(dim=-1)
            if not bool(top.isfinite().all()):
                raise MeasureError(
                    "every row needs at least one key whose score is not -inf, and no NaN or +inf score"
                )
            e = torch.where(allowed, top.unsqueeze(-1) - s, 0.0)
            yield Slab(r0, r1, q0, q1, e, allowed, top)


def _uniform(betas: np.ndarray, a: int, b: int) -> bool:
    """Whether ``betas[a..b]`` are ``β_a + iΔ`` to ``_UNIFORM_EPS`` relative epsilons."""
    delta = (betas[b] - betas[a]) / (b - a)
    run = betas[a : b + 1]
    ideal = betas[a] + delta * np.arange(b - a + 1)
    return bool(np.all(np.abs(ideal - run) <= _UNIFORM_EPS * np.finfo(np.float64).eps * run))


def sweep_plan(betas: Sequence[float]) -> list[tuple[str, float]]:
    """How the weights at each β of an increasing grid are made, in order.

    ``("exp", β)``: directly, ``exp(-β e)``. ``("mul", Δ)``: the previous β's weights times
    ``exp(-Δ e)``, where the previous point is ``β - Δ``. A run of two or more equal steps is
    chained (one ``exp`` for its rate, then multiplications); a lone step is an ``exp``, exact. A
    chain longer than ``_CHAIN_MAX`` is restarted with an ``exp``.

    >>> sweep_plan([0.5, 1.0, 1.5, 2.0, 3.5])
    [('exp', 0.5), ('mul', 0.5), ('mul', 0.5), ('mul', 0.5), ('exp', 3.5)]
    """
    grid = np.asarray(betas, dtype=np.float64)
    plan: list[tuple[str, float]] = [("exp", float(grid[0]))]
    a, chained = 0, 0
    while a < len(grid) - 1:
        b = a + 1
        while b + 1 < len(grid) and _uniform(grid, a, b + 1):
            b += 1
        delta = float((grid[b] - grid[a]) / (b - a))
        for j in range(a + 1, b + 1):
            if b - a >= 2 and chained < _CHAIN_MAX:
                plan.append(("mul", delta))
                chained += 1
            else:
                plan.append(("exp", float(grid[j])))
                chained = 0
        a = b
    return plan


def weights_buffer(slab_elements: int, n_beta: int, buffer_elements: int, device: torch.device) -> Tensor:
    """A flat float64 buffer for ``boltzmann_sums``: the weights of a slab at up to this many β."""
    per_chunk = max(1, min(n_beta, buffer_elements // slab_elements))
    return torch.empty((per_chunk + 1) * slab_elements, dtype=torch.float64, device=device)


def boltzmann_sums(
    e: Float[Tensor, "row key"],
    keep: Float[Tensor, "row key"],
    plan: list[tuple[str, float]],
    buffer: Float[Tensor, " n"],
) -> Float[Tensor, "row 3 beta"]:
    """``Z'``, ``A`` and ``B`` of every row at every β of ``plan`` (see the module docstring).

    Args:
        e: energies above each row's ground state (>= 0, 0 at masked keys), float64, contiguous.
        keep: 1.0 at allowed keys, 0.0 at masked ones.
        plan: from ``sweep_plan``.
        buffer: from ``weights_buffer`` (its size sets how many β share one matrix product).

    Returns:
        ``[row, 3, beta]``: ``Σ w``, ``Σ w e``, ``Σ w e²`` over allowed keys, ``w = exp(-β e)``.
    """
    n_rows, n_key = e.shape
    size = n_rows * n_key
    if buffer.numel() < 2 * size:  # a slab larger than the buffer was sized for (one long row block)
        buffer = torch.empty(2 * size, dtype=e.dtype, device=e.device)
    per_chunk = max(1, min(len(plan), buffer.numel() // size - 1))
    w = buffer[: per_chunk * size].view(per_chunk, n_rows, n_key)  # each β's weights contiguous
    rate = buffer[per_chunk * size : (per_chunk + 1) * size].view(n_rows, n_key)
    # [1, e, e²] against the weights: masked keys (e = 0, weight 1) count in none of the three sums.
    e3 = torch.stack((keep, e, e * e), dim=1)  # [row, 3, key]
    out = torch.empty(n_rows, 3, len(plan), dtype=e.dtype, device=e.device)
    top_e = float(e.max())  # the clamp below is only needed where some exponent passes EXP_FLOOR
    delta, prev = None, None
    for j, (kind, value) in enumerate(plan):
        slot = j % per_chunk
        cur = w[slot]
        if kind == "exp":
            _exp_minus(e, value, cur, top_e)
        else:
            if value != delta:
                _exp_minus(e, value, rate, top_e)
                delta = value
            torch.mul(prev, rate, out=cur)
        prev = cur
        if slot == per_chunk - 1 or j == len(plan) - 1:
            out[:, :, j - slot : j + 1] = torch.bmm(e3, w[: slot + 1].permute(1, 2, 0))
    return out


def _exp_minus(e: Tensor, value: float, out: Tensor, top_e: float) -> None:
    """``out = exp(max(-value·e, EXP_FLOOR))``; ``top_e`` is ``max e``."""
    torch.mul(e, -value, out=out)
    if -value * top_e < EXP_FLOOR:
        out.clamp_min_(EXP_FLOOR)
    out.exp_()


def variance_sums(
    rows: Float[Tensor, "prompt query key"], betas: Sequence[float], slab_elements: int, buffer: Tensor
) -> Float[Tensor, "prompt beta"]:
    """``Σ Var_row(e)`` over each prompt's rows with ``n >= 2`` allowed keys, at each of a few β.

    The same sums as the thermo table's sweep (``Var(e) = B/Z' - (A/Z')²`` per row, ``C = β²·Var``),
    for one head's rows at β of its own: the β* refinement evaluates ``C̄`` exactly here, between grid
    points (docs/measures.md, "Thermodynamics"). ``betas`` increasing; three equally spaced ones cost
    two ``exp`` and two multiplications per score (``sweep_plan``, the same chains as the sweep's).

    Args:
        rows: one head's scores ``[prompt, query, key]``, ``-inf`` at masked keys, float32 or float64.
        betas: increasing inverse temperatures.
        slab_elements: scores per slab (as the sweep's).
        buffer: float64 scratch for ``len(betas) + 1`` slabs (a larger one is made if it is smaller).

    Returns:
        ``[prompt, beta]`` float64 sums on the scores' device.
    """
    plan = sweep_plan(betas)
    out = torch.zeros(rows.shape[0], len(plan), dtype=torch.float64, device=rows.device)
    for slab in slabs(rows, slab_elements):
        g, q = slab.r1 - slab.r0, slab.q1 - slab.q0
        e = slab.e
        size = e.numel()
        if buffer.numel() < (len(plan) + 1) * size:
            buffer = torch.empty((len(plan) + 1) * size, dtype=e.dtype, device=e.device)
        w = buffer[: len(plan) * size].view(len(plan), *e.shape)
        rate = buffer[len(plan) * size : (len(plan) + 1) * size].view_as(e)
        top_e, delta = float(e.max()), None
        for j, (kind, value) in enumerate(plan):
            if kind == "exp":
                _exp_minus(e, value, w[j], top_e)
            else:
                if value != delta:
                    _exp_minus(e, value, rate, top_e)
                    delta = value
                torch.mul(w[j - 1], rate, out=w[j])
        # Three reductions per β, not boltzmann_sums' product with [1, e, e²]: for a few β, building
        # that interleaved [row, 3, key] operand costs more than the product saves.
        z = (w * slab.allowed.to(e.dtype)).sum(dim=-1)  # [β, g·q]
        w.mul_(e)
        mean_e = w.sum(dim=-1) / z
        var = w.mul_(e).sum(dim=-1) / z - mean_e * mean_e
        valid = slab.allowed.sum(dim=-1) >= 2  # one-key rows have no thermodynamics
        out[slab.r0 : slab.r1] += torch.where(valid, var, 0.0).view(-1, g, q).sum(dim=-1).T
    return out
