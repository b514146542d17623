"""Sharpness: the top Hessian eigenvalues of the loss and its trace, from Hessian-vector products.

The Hessian is never formed. ``hessian_operator`` runs one forward and one backward pass with
``create_graph=True`` and keeps that graph: every Hessian-vector product ``Hv = ∇(∇L·v)`` is then
one more backward pass through it. On top of that operator:

- ``lanczos_top``: ``scipy.sparse.linalg.eigsh`` (implicitly restarted Lanczos, ARPACK) on a
  ``LinearOperator``: the ``k`` largest (algebraic, ``which="LA"``) eigenvalues. Sharpness is the
  largest algebraic eigenvalue; a negative one means the point is a saddle along that direction.
- ``power_top``: power iteration with deflation (each converged pair ``λ vvᵀ`` subtracted). It finds
  the eigenvalues of largest *magnitude* (``which="LM"`` in eigsh's terms); at a trained checkpoint
  those are the positive top ones, but near initialisation a large negative one can come first.
- ``hutchinson_trace``: ``tr H = E[zᵀHz]`` for Rademacher ``z``, with its standard error.

Every routine reports its convergence: the residual ``‖Hv − λv‖`` of each eigenpair (relative to
``|λ|``), whether it met the tolerance, and how many Hessian-vector products it took.
Units: eigenvalues and trace are nats per (parameter unit)², the loss being the mean next-token
cross-entropy over ``Batch.target_mask`` (``phasescope.measures.landscape.batch_loss``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor

from phasescope.analysis.inputs import Batch
from phasescope.measures.landscape import batch_loss, model_params
from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "EigenResult",
    "HessianOperator",
    "TraceResult",
    "hessian_operator",
    "hutchinson_trace",
    "lanczos_top",
    "power_top",
    "sharpness_table",
]

Vector = Float[Tensor, " n_params"]


@dataclass
class HessianOperator:
    """Hessian-vector products ``v ↦ Hv`` on the flattened parameters, counting its calls.

    Attributes:
        matvec: the product, on a float tensor ``[dim]`` (any dtype: it is cast to the parameters').
        dim: number of parameters.
        dtype: the parameters' dtype; products come back in it.
        device: the parameters' device.
        n_calls: Hessian-vector products evaluated so far.
    """

    matvec: Callable[[Tensor], Tensor]
    dim: int
    dtype: torch.dtype
    device: torch.device
    n_calls: int = 0

    def __call__(self, v: Vector) -> Vector:
        self.n_calls += 1
        return self.matvec(v.to(self.device, self.dtype)).detach()


@dataclass
class EigenResult:
    """Top Hessian eigenpairs and how well they converged.

    Attributes:
        values: eigenvalues, largest first (float64).
        vectors: unit eigenvectors ``[k, dim]`` on the operator's device.
        residuals: ``‖Hv − λv‖ / max(|λ|, 1e-12)`` per pair.
        converged: per pair, whether the residual met the requested tolerance.
        n_hvp: Hessian-vector products used, residual checks included.
        method: ``"lanczos"`` or ``"power"``.
    """

    values: np.ndarray
    vectors: Tensor
    residuals: np.ndarray
    converged: np.ndarray
    n_hvp: int
    method: str


@dataclass
class TraceResult:
    """Hutchinson's estimate of ``tr H``.

    Attributes:
        trace: the mean of ``zᵀHz`` over probes.
        se: its standard error (sample std / √n); NaN with a single probe.
        samples: every probe's ``zᵀHz``.
        n_hvp: Hessian-vector products used (one per probe).
    """

    trace: float
    se: float
    samples: np.ndarray = field(repr=False)
    n_hvp: int = 0


def hessian_operator(
    loss_fn: Callable[[dict[str, Tensor]], Tensor], params: dict[str, Tensor]
) -> HessianOperator:
    """Hessian-vector products of ``loss_fn`` at ``params``, reusing one double-backward graph.

    Args:
        loss_fn: maps parameters by name to a scalar loss (e.g. ``lambda p: batch_loss(model, p, batch)``).
        params: the point, by name; not modified.

    Returns:
        A ``HessianOperator`` on the parameters flattened in ``params``' order.
    """
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad():
        loss = loss_fn(leaves)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
    # A parameter the loss does not reach has zero gradient and zero Hessian rows.
    flat_grad = torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, leaves.values(), strict=True)
        ]
    )
    inputs = list(leaves.values())
    first = inputs[0]

    def matvec(v: Tensor) -> Tensor:
        # d(g·v)/dθ = Hv; the graph of g is kept so every product is one backward pass.
        hv = torch.autograd.grad(flat_grad, inputs, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.cat(
            [
                (h if h is not None else torch.zeros_like(p)).reshape(-1)
                for h, p in zip(hv, inputs, strict=True)
            ]
        )

    return HessianOperator(matvec, flat_grad.numel(), first.dtype, first.device)


def _residuals(op: HessianOperator, values: np.ndarray, vectors: Tensor) -> np.ndarray:
    out = []
    for lam, v in zip(values, vectors, strict=True):
        r = op(v).double() - float(lam) * v.double()
        out.append(float(r.norm()) / max(abs(float(lam)), 1e-12))
    return np.asarray(out)


def lanczos_top(
    op: HessianOperator,
    k: int = 1,
    *,
    tol: float = 1e-6,
    maxiter: int | None = None,
    which: str = "LA",
    seed: int = 0,
) -> EigenResult:
    """The ``k`` top eigenvalues by implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``).

    Args:
        op: the Hessian operator.
        k: how many eigenvalues (must be < ``op.dim``).
        tol: ARPACK's relative accuracy goal; also the residual threshold for ``converged``.
        maxiter: ARPACK restarts allowed (default ``10 * dim``, eigsh's own); when they run out the
            pairs found so far are returned, flagged unconverged.
        which: ``"LA"`` largest algebraic (sharpness), ``"LM"`` largest magnitude (as power iteration).
        seed: seeds the start vector, so the run is reproducible.

    Returns:
        An ``EigenResult`` with eigenvalues in decreasing order (by value for ``LA``, by magnitude for
        ``LM``).
    """
    if not 0 < k < op.dim:
        raise ValueError(f"k must be in [1, {op.dim - 1}], got {k}")
    start = op.n_calls
    v0 = np.random.default_rng(seed).standard_normal(op.dim)
    linop = LinearOperator(
        (op.dim, op.dim),
        matvec=lambda x: op(torch.from_numpy(np.asarray(x).ravel())).double().cpu().numpy(),
        dtype=np.float64,
    )
    try:
        values, vectors = eigsh(linop, k=k, which=which, tol=tol, maxiter=maxiter, v0=v0)
    except ArpackNoConvergence as exc:
        values, vectors = exc.eigenvalues, exc.eigenvectors
    key = values if which == "LA" else np.abs(values)
    order = np.argsort(-key)
    values = np.asarray(values[order], dtype=np.float64)
    vecs = torch.from_numpy(np.ascontiguousarray(vectors[:, order].T)).to(op.device, torch.float64)
    residuals = _residuals(op, values, vecs)
    # ARPACK's tol bounds the Ritz estimate; our residual check is looser by a small factor so that
    # float rounding of an exactly converged pair is not flagged.
    converged = residuals <= max(tol, 1e-12) * 10
    return EigenResult(values, vecs, residuals, converged, op.n_calls - start, "lanczos")


def power_top(
    op: HessianOperator, k: int = 1, *, tol: float = 1e-8, maxiter: int = 1000, seed: int = 0
) -> EigenResult:
    """The ``k`` largest-magnitude eigenvalues by power iteration with deflation.

    Each pair is iterated on ``H − Σ λ_j v_j v_jᵀ`` (the pairs already found) until the Rayleigh
    quotient changes by less than ``tol`` relative between iterations, or ``maxiter`` products.

    Args:
        op: the Hessian operator.
        k: how many eigenvalues.
        tol: relative change of the Rayleigh quotient that ends an iteration.
        maxiter: most products per eigenvalue.
        seed: seeds the start vectors.

    Returns:
        An ``EigenResult``, ``converged`` meaning the Rayleigh quotient settled within ``maxiter``.
        Its residuals are the undeflated ``‖Hv − λv‖ / |λ|`` (one more product per pair).
    """
    gen = torch.Generator().manual_seed(seed)
    start = op.n_calls
    values: list[float] = []
    vectors: list[Tensor] = []
    settled: list[bool] = []
    for _ in range(k):
        v = torch.randn(op.dim, generator=gen, dtype=torch.float64).to(op.device)
        v /= v.norm()
        lam, done = 0.0, False
        for it in range(maxiter):
            w = op(v).double()
            for lj, vj in zip(values, vectors, strict=True):
                w -= lj * (vj @ v) * vj  # deflate: the found pairs no longer dominate
            new = float(v @ w)
            norm = w.norm()
            if norm == 0:
                lam, done = 0.0, True
                break
            v = w / norm
            if it > 0 and abs(new - lam) <= tol * max(abs(new), 1e-12):
                lam, done = new, True
                break
            lam = new
        values.append(lam)
        vectors.append(v)
        settled.append(done)
    vals = np.asarray(values)
    vecs = torch.stack(vectors)
    residuals = _residuals(op, vals, vecs)
    return EigenResult(vals, vecs, residuals, np.asarray(settled), op.n_calls - start, "power")


def hutchinson_trace(op: HessianOperator, n_samples: int = 32, *, seed: int = 0) -> TraceResult:
    """Hutchinson's trace estimate ``tr H ≈ mean_z zᵀHz`` with Rademacher probes ``z ∈ {±1}ⁿ``.

    Args:
        op: the Hessian operator.
        n_samples: number of probes; the standard error falls as ``1/√n_samples``.
        seed: seeds the probes.

    Returns:
        A ``TraceResult`` (Rademacher probes have the least variance among i.i.d. probes:
        ``Var zᵀHz = 2 Σ_{i≠j} H_ij²``).
    """
    gen = torch.Generator().manual_seed(seed)
    start = op.n_calls
    samples = []
    for _ in range(n_samples):
        z = (torch.randint(0, 2, (op.dim,), generator=gen) * 2 - 1).to(op.device, torch.float64)
        samples.append(float(z @ op(z).double()))
    arr = np.asarray(samples)
    se = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return TraceResult(float(arr.mean()), se, arr, op.n_calls - start)


def sharpness_table(
    model: torch.nn.Module,
    batch: Batch,
    checkpoint: int,
    *,
    k: int = 3,
    method: str = "lanczos",
    tol: float = 1e-4,
    maxiter: int | None = None,
    n_trace: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """Top Hessian eigenvalues and trace of the loss at one checkpoint (``measure="sharpness"``).

    Args:
        model: the model at the checkpoint (not modified; buffers never differentiated).
        batch: the prompts, on the model's device; the loss is taken over all of them at once.
        checkpoint: the training step.
        k: number of top eigenvalues.
        method: ``"lanczos"`` (largest algebraic) or ``"power"`` (largest magnitude, deflation).
        tol: relative tolerance of the eigen solver.
        maxiter: ARPACK restarts (Lanczos) or products per eigenvalue (power; default 1000).
        n_trace: Hutchinson probes (0 to skip the trace).
        seed: seeds start vectors and probes.

    Returns:
        Quantities: ``hessian_eigenvalue`` and ``<method>_residual`` (relative residual
        ``‖Hv − λv‖/|λ|``) and ``hessian_converged`` (1/0) per ``index`` (0 = largest);
        ``hessian_trace`` and ``hessian_trace_se``; ``n_hvp`` (Hessian-vector products spent, all
        included).
    """
    theta = model_params(model)
    op = hessian_operator(lambda p: batch_loss(model, p, batch), theta)
    if method == "lanczos":
        eig = lanczos_top(op, k, tol=tol, maxiter=maxiter, seed=seed)
    elif method == "power":
        eig = power_top(op, k, tol=tol, maxiter=maxiter or 1000, seed=seed)
    else:
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    tables = [
        tidy("sharpness", "hessian_eigenvalue", eig.values, ("index",), checkpoint=checkpoint),
        tidy("sharpness", f"{method}_residual", eig.residuals, ("index",), checkpoint=checkpoint),
        tidy(
            "sharpness", "hessian_converged", eig.converged.astype(float), ("index",), checkpoint=checkpoint
        ),
    ]
    if n_trace > 0:
        tr = hutchinson_trace(op, n_trace, seed=seed)
        tables.append(tidy("sharpness", "hessian_trace", tr.trace, checkpoint=checkpoint))
        tables.append(tidy("sharpness", "hessian_trace_se", tr.se, checkpoint=checkpoint))
    tables.append(tidy("sharpness", "n_hvp", float(op.n_calls), checkpoint=checkpoint))
    return concat_tables(tables)
