"""The training trajectory's principal plane, and the loss on it (docs/measures.md, "Training dynamics").

Stack the K analysed checkpoints' flattened parameters as rows of ``X`` (``K × D``), centre them on
their mean ``θ̄`` (``X_c = X − 1θ̄ᵀ``). The principal directions of the trajectory are the top
eigenvectors of ``X_cᵀX_c`` (``D × D``, far too big), which are ``X_cᵀu_j / √λ_j`` for the top
eigenpairs ``(λ_j, u_j)`` of the ``K × K`` Gram matrix ``G = X_cX_cᵀ`` — an exact PCA, never a
randomised one. ``G`` is a sum over parameter tensors, ``G = Σ_p X_c[p] X_c[p]ᵀ``, so it is
accumulated one tensor at a time: only one tensor of all K checkpoints is ever in memory (``K × D_p``),
and a 160M-parameter model never needs ``K × D``. The directions are built tensor by tensor the
same way. Checkpoint ``k``'s coordinate on component ``j`` is ``√λ_j · u_j[k]``, and
``λ_j / Σ_i λ_i`` is the share of the trajectory's variance that component explains.

The loss is then evaluated on the plane ``θ̄ + a·d₁ + b·d₂`` through the centre (a grid covering every
checkpoint's projection plus a margin), at each checkpoint's projection onto the plane, and at each
checkpoint itself. When the trajectory lies in a plane, each projection is the checkpoint itself, so
the last two agree. Pure torch: tensors in (through a reader function), tensors and a tidy table out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.analysis.inputs import Batch
from phasescope.measures.landscape import batch_loss
from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "GRID_MARGIN",
    "PlanePCA",
    "gram_matrix",
    "plane_grid",
    "plane_point",
    "trajectory_pca",
    "trajectory_pca_table",
]

GRID_MARGIN = 0.25
"""How far the loss grid extends past the outermost projections, as a fraction of their span per axis."""

Reader = Callable[[str], Float[Tensor, "checkpoint ..."]]
"""``read(name)``: parameter ``name`` at every checkpoint, stacked along a new first axis."""


@dataclass(frozen=True)
class PlanePCA:
    """The top two principal components of a trajectory.

    Attributes:
        centre: ``θ̄``, the mean of the checkpoints, by parameter name (float64).
        directions: ``(d₁, d₂)``, unit vectors over all parameters together, by name (float64); zero
            for a component the trajectory does not have (K < 3, or a straight line).
        coordinates: ``[K, 2]``, each checkpoint's projection on ``(d₁, d₂)`` relative to ``θ̄``.
        explained: ``[2]``, ``λ_j / Σλ``: the share of the variance each component explains.
        eigenvalues: ``[K]``, the Gram matrix's eigenvalues, descending.
    """

    centre: dict[str, Tensor]
    directions: tuple[dict[str, Tensor], dict[str, Tensor]]
    coordinates: Float[Tensor, "checkpoint 2"]
    explained: Float[Tensor, " 2"]
    eigenvalues: Float[Tensor, " checkpoint"]


def _centred(stack: Tensor) -> tuple[Tensor, Tensor]:
    """``(X_c [K, D_p], mean [shape])`` of one stacked tensor."""
    flat = stack.reshape(stack.shape[0], -1).double()
    mean = flat.mean(dim=0)
    return flat - mean, mean.reshape(stack.shape[1:])


def gram_matrix(read: Reader, names: Iterable[str]) -> Float[Tensor, "checkpoint checkpoint"]:
    """``G = Σ_p X_c[p] X_c[p]ᵀ``, accumulated one parameter tensor at a time (float64).

    Args:
        read: gives one parameter at every checkpoint, ``[K, *shape]``.
        names: the parameters to include.
    """
    gram = None
    for name in names:
        xc, _ = _centred(read(name))
        part = xc @ xc.T
        gram = part if gram is None else gram + part.to(gram.device)
    if gram is None:
        raise ValueError("no parameters to analyse")
    return gram


def trajectory_pca(read: Reader, names: Sequence[str], *, rel_tol: float = 1e-10) -> PlanePCA:
    """The exact top-two PCA of a parameter trajectory, through its K × K Gram matrix.

    Two passes over the parameters: one accumulates ``G``, the other builds the directions and the
    centre. Signs are fixed so that the last checkpoint lies at a positive ``d₁`` coordinate relative
    to the first, and the largest ``|u₂|`` entry is positive.

    Args:
        read: gives one parameter at every checkpoint, ``[K, *shape]`` (called twice per name).
        names: the parameters (the flattened vector is their concatenation, in this order).
        rel_tol: an eigenvalue at or below ``rel_tol · λ₁`` is no component (its direction is zero).
    """
    gram = gram_matrix(read, names)
    k = gram.shape[0]
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
    top = evals[0] if k else torch.tensor(0.0)
    usable = [j < k and bool(evals[j] > rel_tol * top) and bool(top > 0) for j in range(2)]
    u = torch.zeros(k, 2, dtype=torch.float64, device=gram.device)
    for j in range(2):
        if usable[j]:
            u[:, j] = evecs[:, j]
    # Deterministic signs: the path runs towards +d₁; d₂'s largest entry is positive.
    if usable[0] and u[-1, 0] - u[0, 0] < 0:
        u[:, 0] = -u[:, 0]
    if usable[1] and u[u[:, 1].abs().argmax(), 1] < 0:
        u[:, 1] = -u[:, 1]
    mask = torch.tensor(usable, device=gram.device)
    top2 = torch.cat([evals, evals.new_zeros(2)])[:2]  # K may be 1
    scale = torch.where(mask, top2.sqrt(), 0.0)
    inv = torch.where(scale > 0, 1.0 / scale.clamp_min(1e-300), 0.0)
    centre: dict[str, Tensor] = {}
    d1: dict[str, Tensor] = {}
    d2: dict[str, Tensor] = {}
    for name in names:
        xc, mean = _centred(read(name))
        centre[name] = mean
        dirs = (xc.T @ u.to(xc.device)) * inv.to(xc.device)  # [D_p, 2]: X_cᵀ u_j / √λ_j
        d1[name] = dirs[:, 0].reshape(mean.shape)
        d2[name] = dirs[:, 1].reshape(mean.shape)
    total = evals.sum()
    explained = torch.where(mask & (total > 0), top2 / total.clamp_min(1e-300), 0.0)
    return PlanePCA(centre, (d1, d2), u * scale, explained, evals)


def plane_point(pca: PlanePCA, a: float, b: float) -> dict[str, Tensor]:
    """``θ̄ + a·d₁ + b·d₂`` by parameter name (float64)."""
    d1, d2 = pca.directions
    return {n: c + a * d1[n] + b * d2[n] for n, c in pca.centre.items()}


def plane_grid(
    coordinates: Float[Tensor, "checkpoint 2"], n_points: int, margin: float = GRID_MARGIN
) -> tuple[Tensor, Tensor]:
    """Grid axes covering every projection plus ``margin`` of their span on each side (float64).

    An axis whose projections all coincide (a missing component) spans ``±1`` around them.
    """
    axes = []
    for j in range(2):
        lo, hi = float(coordinates[:, j].min()), float(coordinates[:, j].max())
        span = hi - lo
        pad = margin * span if span > 0 else 1.0
        axes.append(torch.linspace(lo - pad, hi + pad, n_points, dtype=torch.float64))
    return axes[0], axes[1]


def _loss(model: torch.nn.Module, params: Mapping[str, Tensor], batch: Batch) -> float:
    """The model's loss at ``params``, cast to the model's own dtype and device."""
    own = dict(model.named_parameters())
    cast = {n: v.to(own[n].device, own[n].dtype) for n, v in params.items()}
    with torch.no_grad():
        return float(batch_loss(model, cast, batch))


def trajectory_pca_table(
    model: torch.nn.Module,
    batch: Batch,
    steps: Sequence[int],
    read: Reader,
    *,
    checkpoint_params: Callable[[int], Mapping[str, Tensor]] | None = None,
    n_points: int = 11,
    margin: float = GRID_MARGIN,
) -> pd.DataFrame:
    """The trajectory's principal plane and the loss on it, as a tidy table (``measure="trajectory_pca"``).

    Args:
        model: a model of the series (its architecture evaluates every loss; its own weights are
            never changed: every loss is a functional call).
        batch: the prompts, on the model's device.
        steps: the K analysed steps, ascending, in the order ``read`` stacks them.
        read: one parameter at every step, ``[K, *shape]``; every parameter of ``model`` is read.
        checkpoint_params: every parameter at the ``k``-th step (for its own loss); default: ``read``
            of each name, indexed (reads K checkpoints per name: fine for small models only).
        n_points: grid points per axis of the loss plane.
        margin: the grid's margin past the outermost projections (fraction of their span).

    Returns:
        ``pca_coordinate`` (``index`` 0/1, one row per checkpoint and component),
        ``pca_explained_variance_ratio`` (``index``; at the last checkpoint), ``pca_loss`` (``x``, ``y``:
        plane coordinates; at the last checkpoint), ``pca_path_loss`` and ``pca_checkpoint_loss``
        (one per checkpoint: the loss at its projection on the plane, and at itself), in nats.
    """
    names = [n for n, _ in model.named_parameters()]
    pca = trajectory_pca(read, names)
    last = int(steps[-1])
    xs, ys = plane_grid(pca.coordinates, n_points, margin)
    surface = torch.tensor(
        [[_loss(model, plane_point(pca, float(a), float(b)), batch) for b in ys] for a in xs],
        dtype=torch.float64,
    )
    tables = [
        tidy(
            "trajectory_pca",
            "pca_explained_variance_ratio",
            pca.explained,
            ("index",),
            checkpoint=last,
        ),
        tidy("trajectory_pca", "pca_loss", surface, ("x", "y"), checkpoint=last, coords={"x": xs, "y": ys}),
    ]
    for k, step in enumerate(steps):
        a, b = (float(c) for c in pca.coordinates[k])
        own = checkpoint_params(k) if checkpoint_params else {n: read(n)[k] for n in names}
        tables += [
            tidy("trajectory_pca", "pca_coordinate", pca.coordinates[k], ("index",), checkpoint=int(step)),
            tidy(
                "trajectory_pca",
                "pca_path_loss",
                _loss(model, plane_point(pca, a, b), batch),
                checkpoint=int(step),
            ),
            tidy("trajectory_pca", "pca_checkpoint_loss", _loss(model, own, batch), checkpoint=int(step)),
        ]
    return concat_tables(tables)
