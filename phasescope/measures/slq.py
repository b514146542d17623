"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (SLQ): soft modes of the loss.

Definitions, units and the identities the tests check: docs/measures.md, "Hessian spectral density
(soft modes)". The Hessian is never formed: every product is one backward pass through the graph
``phasescope.measures.sharpness.hessian_operator`` keeps (the sharpness measure's machinery).

For each of ``n_v`` Rademacher probes ``v`` (``‖v‖² = D``, the parameter count), ``m`` steps of
Lanczos from ``q₁ = v/√D`` with full reorthogonalisation give a tridiagonal ``T`` (m × m). Its
eigenvalues ``θ_j`` (Ritz values) and the squared first components ``w_j = (e₁ᵀu_j)²`` of its
eigenvectors are the nodes and weights of the m-point Gauss quadrature of the probe's spectral
measure: ``Σ_j w_j θ_j^k = q₁ᵀ H^k q₁`` exactly for ``k ≤ 2m − 1``, an unbiased estimate of
``tr(H^k)/D``. Averaged over probes, the nodes and weights are a discrete estimate of the spectrum's
distribution; broadened by Gaussians of width σ on a grid, its density (Ghorbani, Krishnan & Xiao
2019; PyHessian's ``density`` with ``iter = m``, ``n_v``).

The probes are drawn exactly as ``phasescope.measures.sharpness.hutchinson_trace`` draws its own (one
generator seeded with ``seed``, one ``randint`` per probe), so with the same seed SLQ's trace
``D · Σ_j w_j θ_j = vᵀHv`` is Hutchinson's, probe by probe.

The Lanczos basis is ``m × D`` float64 numbers (24 GB for m = 24 on a 124M-parameter model), kept in
float64 because the quadrature's moments are exact only to the basis's rounding; so it is bounded
instead (``basis_bytes``, ``check_basis_memory``; the service's bound is ``Settings.max_slq_basis_mib``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from phasescope.analysis.inputs import Batch
from phasescope.errors import MeasureError
from phasescope.measures.landscape import batch_loss, model_params
from phasescope.measures.sharpness import HessianOperator, hessian_operator
from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "FLAT_FRACTION",
    "GRID_POINTS",
    "SIGMA_FRACTION",
    "SLQResult",
    "basis_bytes",
    "check_basis_memory",
    "gauss_quadrature",
    "hessian_density_table",
    "lanczos_tridiagonal",
    "rademacher_probes",
    "slq",
    "spectral_density",
]

FLAT_FRACTION = 0.01
"""ε: a Ritz node with ``|θ| ≤ ε · max|θ|`` counts as flat (near zero); one with ``θ < −ε · max|θ|``
as negative. 1% of the spectral radius: a mode that soft is a valley floor at the scale of the
sharpest direction."""

SIGMA_FRACTION = 0.01
"""σ of the Gaussian broadening, as a fraction of the width ``θ_max − θ_min`` of the Ritz values
(PyHessian broadens by a fixed σ² ≈ 1e-5 of a width it rescales to 1; ours is the same idea with σ
readable as a resolution: features closer than ~2σ merge)."""

GRID_POINTS = 201
"""Points of the density's eigenvalue grid, which spans ``[θ_min − 6σ, θ_max + 6σ]`` (step ≈ 0.56σ,
fine enough that the trapezoid sum of every Gaussian is 1 to float rounding)."""

_BREAKDOWN = 1e-12  # relative size of β_j at which the Krylov space is exhausted (Lanczos stops)


@dataclass
class SLQResult:
    """Gauss-quadrature nodes and weights of every probe.

    Attributes:
        nodes: Ritz values ``[probe][j]`` (a probe's array is shorter than ``m`` when its Krylov space
            was exhausted early), ascending; nats / unit² for a loss Hessian.
        weights: ``w_j = (e₁ᵀu_j)²`` ``[probe][j]``, each probe's summing to 1.
        dim: D, the number of parameters.
        n_hvp: Hessian-vector products spent.
    """

    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    dim: int
    n_hvp: int

    def moments(self, k: int) -> np.ndarray:
        """Per probe, ``Σ_j w_j θ_j^k`` (= ``q₁ᵀH^k q₁`` for ``k ≤ 2m − 1``) ``[probe]``."""
        return np.asarray([float(np.sum(w * t**k)) for t, w in zip(self.nodes, self.weights, strict=True)])

    def trace(self) -> tuple[float, float]:
        """``tr H`` estimated as ``D · Σ_j w_j θ_j`` averaged over probes, and its standard error."""
        return _mean_se(self.dim * self.moments(1))

    def mass(self, select: str, eps: float = FLAT_FRACTION) -> tuple[float, float]:
        """The spectral weight of flat (``"flat"``: ``|θ| ≤ ε·s``) or negative (``"negative"``:
        ``θ < −ε·s``) nodes, ``s = max|θ|`` over every probe; the mean over probes and its standard
        error. A fraction of the D eigenvalues."""
        scale = self.radius
        per_probe = []
        for t, w in zip(self.nodes, self.weights, strict=True):
            hit = np.abs(t) <= eps * scale if select == "flat" else t < -eps * scale
            per_probe.append(float(w[hit].sum()))
        return _mean_se(np.asarray(per_probe))

    @property
    def lambda_min(self) -> float:
        """The smallest Ritz value over probes (converges to λ_min from above)."""
        return float(min(t.min() for t in self.nodes))

    @property
    def lambda_max(self) -> float:
        """The largest Ritz value over probes (converges to λ_max from below)."""
        return float(max(t.max() for t in self.nodes))

    @property
    def radius(self) -> float:
        """``max|θ|`` over every node: the scale ε is a fraction of."""
        return max(abs(self.lambda_min), abs(self.lambda_max))


def _mean_se(samples: np.ndarray) -> tuple[float, float]:
    se = float(samples.std(ddof=1) / np.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    return float(samples.mean()), se


def rademacher_probes(dim: int, n: int, seed: int) -> Iterator[Float[Tensor, " dim"]]:
    """``n`` Rademacher vectors ``z ∈ {±1}^dim`` in float64, drawn as ``hutchinson_trace`` draws them.

    Args:
        dim: their length D.
        n: how many.
        seed: seeds one CPU generator shared by all ``n`` (same seed, same probes as Hutchinson's).

    Yields:
        One probe at a time (a probe of a large model is D floats: they are not all kept).
    """
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(torch.float64)


def basis_bytes(dim: int, steps: int) -> int:
    """Bytes of the float64 Lanczos basis of ``steps`` steps on ``dim`` parameters (``lanczos_tridiagonal``)."""
    return min(steps, dim) * dim * 8


def check_basis_memory(dim: int, steps: int, max_bytes: int | None) -> None:
    """Refuse a Lanczos basis larger than ``max_bytes`` (None: no bound), before any work.

    Raises:
        MeasureError: ``steps × dim × 8`` bytes is over the bound; the message says how much it would
            take, the largest ``slq_steps`` that fits and the setting that bounds it (field
            ``params.slq_steps``).
    """
    need = basis_bytes(dim, steps)
    if max_bytes is None or need <= max_bytes:
        return
    fits = max_bytes // (dim * 8)
    advice = (
        f"lower slq_steps to {fits} or fewer"
        if fits >= 2
        else "no slq_steps (at least 2) fits: leave hessian_density out for this model"
    )
    raise MeasureError(
        f"hessian_density keeps a Lanczos basis of slq_steps × parameters float64 numbers: {steps} × "
        f"{dim:,} × 8 bytes = {need / 2**30:.2f} GiB, over the bound of {max_bytes / 2**20:,.0f} MiB "
        f"(the deployment's max_slq_basis_mib): {advice}, or raise the bound where the memory is there",
        field="params.slq_steps",
    )


def lanczos_tridiagonal(
    op: HessianOperator, start: Float[Tensor, " dim"], steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Lanczos steps from ``start`` with full reorthogonalisation, in float64.

    Every new direction is orthogonalised against all earlier ones twice ("twice is enough",
    classical Gram-Schmidt): without it, rounding makes converged Ritz values reappear as spurious
    copies and the weights of the rest wrong. The basis costs ``steps · D · 8`` bytes.

    Args:
        op: the symmetric operator (the Hessian).
        start: the start vector (normalised here).
        steps: m, at most D; fewer are taken when the Krylov space is exhausted (``β_j ≈ 0``).

    Returns:
        ``(alpha [m'], beta [m' − 1])``: the diagonal and off-diagonal of ``T``, ``m' ≤ m``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = op.device
    q = start.to(device, torch.float64)
    q = q / q.norm()
    basis = torch.empty((min(steps, op.dim), op.dim), dtype=torch.float64, device=device)
    alpha: list[float] = []
    beta: list[float] = []
    for j in range(basis.shape[0]):
        basis[j] = q
        w = op(q).double()
        a = float(q @ w)
        alpha.append(a)
        # Three-term recurrence, then reorthogonalise against the whole basis so far (twice).
        w = w - a * q - (beta[-1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(w.norm())
        scale = max(abs(x) for x in alpha) + (max(beta) if beta else 0.0)
        if j == basis.shape[0] - 1 or b <= _BREAKDOWN * max(scale, 1e-300):
            break
        beta.append(b)
        q = w / b
    return np.asarray(alpha), np.asarray(beta)


def gauss_quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the Gauss quadrature a Lanczos tridiagonal defines.

    Args:
        alpha: its diagonal ``[m]``.
        beta: its off-diagonal ``[m − 1]``.

    Returns:
        ``(θ [m] ascending, w [m])``: eigenvalues of T and the squared first components of its unit
        eigenvectors (they sum to 1).
    """
    if len(alpha) == 1:
        return alpha.astype(np.float64), np.ones(1)
    theta, vectors = eigh_tridiagonal(alpha, beta)
    return theta, vectors[0] ** 2


def slq(
    op: HessianOperator, steps: int, probes: int, *, seed: int = 0, max_basis_bytes: int | None = None
) -> SLQResult:
    """Stochastic Lanczos quadrature of the operator's spectrum.

    Args:
        op: the Hessian operator (``phasescope.measures.sharpness.hessian_operator``).
        steps: Lanczos steps m per probe (moments up to order 2m − 1 are exact per probe).
        probes: Rademacher probes n_v (the probe-to-probe spread gives the standard errors).
        seed: seeds the probes (the same as ``hutchinson_trace``'s for the same seed).
        max_basis_bytes: refuse a Lanczos basis larger than this (``check_basis_memory``); None: no bound.

    Returns:
        An ``SLQResult``; ``n_hvp = probes · m'``.

    Raises:
        MeasureError: the basis would be over ``max_basis_bytes``.
    """
    if probes < 1:
        raise ValueError(f"probes must be at least 1, got {probes}")
    check_basis_memory(op.dim, steps, max_basis_bytes)
    start = op.n_calls
    nodes, weights = [], []
    for v in rademacher_probes(op.dim, probes, seed):
        theta, w = gauss_quadrature(*lanczos_tridiagonal(op, v, steps))
        nodes.append(theta)
        weights.append(w)
    return SLQResult(nodes, weights, op.dim, op.n_calls - start)


def spectral_density(
    result: SLQResult, *, sigma: float | None = None, points: int = GRID_POINTS
) -> tuple[np.ndarray, np.ndarray, float]:
    """The Gaussian-broadened density of the nodes, per unit eigenvalue, on a grid.

    ``ρ(x) = (1/n_v) Σ_probes Σ_j w_j · exp(−(x − θ_j)²/2σ²) / (σ√(2π))``, which integrates to 1.

    Args:
        result: the SLQ nodes and weights.
        sigma: the broadening σ (default ``SIGMA_FRACTION`` × the nodes' width, or × their radius
            when every node is the same, or 1 when all are 0).
        points: grid points over ``[θ_min − 5σ, θ_max + 5σ]``.

    Returns:
        ``(grid [points], density [points], σ)``.
    """
    lo, hi = result.lambda_min, result.lambda_max
    if sigma is None:
        width = hi - lo if hi > lo else (result.radius or 1.0)
        sigma = SIGMA_FRACTION * width
    grid = np.linspace(lo - 6 * sigma, hi + 6 * sigma, points)
    density = np.zeros(points)
    for t, w in zip(result.nodes, result.weights, strict=True):
        z = (grid[:, None] - t[None, :]) / sigma  # [grid, node]
        density += (np.exp(-0.5 * z**2) * w[None, :]).sum(axis=1)
    density /= len(result.nodes) * sigma * np.sqrt(2 * np.pi)
    return grid, density, float(sigma)


def hessian_density_table(
    model: torch.nn.Module,
    batch: Batch,
    checkpoint: int,
    *,
    steps: int = 24,
    probes: int = 4,
    seed: int = 0,
    max_basis_bytes: int | None = None,
) -> pd.DataFrame:
    """The Hessian's spectral density and its soft-mode numbers at one checkpoint (``hessian_density``).

    Args:
        model: the model at the checkpoint (not modified).
        batch: the prompts, on the model's device; the loss is their mean next-token cross-entropy.
        checkpoint: the training step.
        steps: Lanczos steps m per probe.
        probes: Rademacher probes n_v.
        seed: seeds the probes.
        max_basis_bytes: the bound on the Lanczos basis (``check_basis_memory``), checked before the
            gradient graph is built; None: no bound.

    Returns:
        The tidy table. Quantities: ``density`` (per unit eigenvalue, ``x`` = eigenvalue in nats /
        unit²), ``mass_near_zero`` and ``negative_mass`` (fractions, ``se`` over probes), ``trace``
        (nats / unit², ``se`` over probes), ``lambda_min`` and ``lambda_max`` (nats / unit²).

    Raises:
        MeasureError: the Lanczos basis would be over ``max_basis_bytes``.
    """
    theta = model_params(model)
    check_basis_memory(sum(p.numel() for p in theta.values()), steps, max_basis_bytes)
    op = hessian_operator(lambda p: batch_loss(model, p, batch), theta)
    res = slq(op, steps, probes, seed=seed, max_basis_bytes=max_basis_bytes)
    grid, density, _ = spectral_density(res)
    tables = [tidy("hessian_density", "density", density, ("x",), checkpoint=checkpoint, coords={"x": grid})]
    for name, (value, se) in (
        ("mass_near_zero", res.mass("flat")),
        ("negative_mass", res.mass("negative")),
        ("trace", res.trace()),
    ):
        tables.append(tidy("hessian_density", name, value, checkpoint=checkpoint).assign(se=se))
    tables.append(tidy("hessian_density", "lambda_min", res.lambda_min, checkpoint=checkpoint))
    tables.append(tidy("hessian_density", "lambda_max", res.lambda_max, checkpoint=checkpoint))
    return concat_tables(tables)
