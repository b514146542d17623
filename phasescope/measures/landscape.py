"""Loss-surface slices around a checkpoint: ``L(θ + a·d₁ + b·d₂)`` on a grid (Li et al. 2018).

The directions are random, filter-normalised and seeded: each *filter* of a direction is rescaled to
the norm of the matching filter of θ, so the slice does not depend on the arbitrary scale of a layer
(a head whose W_Q is doubled and W_K halved computes the same function). In TransformerLens layout a
weight is ``[in, out]`` (with a leading ``head`` axis for attention), and a filter is the unit of such
a rescaling symmetry:

- ``W_Q``, ``W_K``, ``W_V`` (``[head, d_model, d_head]``), ``W_in``, ``W_gate``, ``W_U``: one filter
  per output column, i.e. per ``(head, d_head)`` index (the QKᵀ symmetry rescales a column of
  ``W_Q[h]`` against the same column of ``W_K[h]``); the norm runs over the input axis (``-2``).
- ``W_O`` (``[head, d_head, d_model]``), ``W_out``, ``W_E``, ``W_pos``: one filter per row, i.e. per
  ``(head, d_head)`` index of ``W_O`` — the row a value dimension writes to the residual stream, which
  the OV symmetry rescales against column ``d_head`` of ``W_V[h]``; the norm runs over axis ``-1``.
- Any other matrix (e.g. a plain ``nn.Linear`` weight, ``[out, in]``): per row.
- Biases (names ``b``, ``b_*``, ``bias``) and every 1-d parameter (LayerNorm scales): zero.

Buffers (TransformerLens's causal ``mask`` and ``IGNORE``) are never touched: every perturbed loss is
a ``torch.func.functional_call`` with the perturbed parameters only, so the model itself never
changes. The loss is the mean next-token cross-entropy over ``Batch.target_mask``, exactly as in
``phasescope.measures.loss``.

Directions are drawn on the CPU from a ``torch.Generator`` seeded with ``seed``, in float64, and only
then moved to the model's device and dtype: the same seed gives the same plane on any machine, so a
share link reproduces the slice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from torch.func import functional_call, vmap

from phasescope.analysis.inputs import Batch
from phasescope.measures.loss import token_losses
from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "batch_loss",
    "filter_axis",
    "filter_norms",
    "interpolation_slice",
    "landscape_table",
    "loss_slice",
    "model_params",
    "random_direction",
]

Params = dict[str, Tensor]

# Weights whose filters are output columns (norm over the input axis -2) in TransformerLens layout.
_COLUMN_FILTERS = ("W_Q", "W_K", "W_V", "W_in", "W_gate", "W_U")


def model_params(model: torch.nn.Module) -> Params:
    """The model's parameters by name, detached (the point θ the slices are centred on)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def batch_loss(model: torch.nn.Module, params: Mapping[str, Tensor], batch: Batch) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy (nats) of ``model`` with ``params`` swapped in, over the masked targets.

    Args:
        model: a HookedTransformer (any module whose ``forward(tokens, return_type="logits")`` gives
            ``[batch, seq, vocab]`` logits).
        params: parameters by name (a subset is fine: the rest are the model's own); buffers are
            always the model's own.
        batch: tokens and target mask, on the model's device.

    Returns:
        A scalar in float64, differentiable with respect to ``params``.
    """
    logits = functional_call(model, dict(params), (batch.tokens,), {"return_type": "logits"})
    nll, _ = token_losses(logits, batch.tokens)
    mask = batch.target_mask.to(nll.dtype)
    return (nll * mask).sum() / mask.sum()


def filter_axis(name: str, param: Tensor) -> int | None:
    """The axis a filter's norm runs over for parameter ``name``, or None for a zeroed parameter."""
    leaf = name.rsplit(".", 1)[-1]
    if param.ndim < 2 or leaf in ("b", "bias") or leaf.startswith("b_"):
        return None
    return -2 if leaf in _COLUMN_FILTERS else -1


def filter_norms(name: str, tensor: Tensor) -> Tensor | None:
    """Norms of every filter of ``tensor`` (shaped to broadcast back onto it), or None if zeroed."""
    axis = filter_axis(name, tensor)
    if axis is None:
        return None
    return torch.linalg.vector_norm(tensor, dim=axis, keepdim=True)


def random_direction(
    params: Mapping[str, Tensor], seed: int, generator: torch.Generator | None = None
) -> Params:
    """A random Gaussian direction, filter-normalised to ``params`` (Li et al. 2018).

    Args:
        params: the point θ, by name (``model_params(model)``).
        seed: seeds a CPU generator, so a direction is the same on every device.
        generator: draw from this generator instead (to draw several directions in sequence).

    Returns:
        A direction with the names, shapes, dtypes and devices of ``params``; zero on biases and
        1-d parameters; every filter's norm equals the norm of the same filter of θ.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    direction: Params = {}
    # Draw every parameter, even the zeroed ones, so that adding a parameter kind to the zero list
    # would not shift the random stream of the others.
    for name, theta in params.items():
        d = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        t64 = theta.detach().to("cpu", torch.float64)
        norms_theta = filter_norms(name, t64)
        if norms_theta is None:
            d = torch.zeros_like(d)
        else:
            d = d * (norms_theta / filter_norms(name, d).clamp_min(1e-30))  # type: ignore[operator]
        direction[name] = d.to(theta.device, theta.dtype)
    return direction


def _losses_at(
    model: torch.nn.Module,
    batch: Batch,
    theta: Params,
    dirs: list[Params],
    coeffs: Float[Tensor, "point n_dirs"],
    batched: bool,
    chunk_size: int | None,
) -> Float[Tensor, " point"]:
    """``L(θ + Σ_i c_i d_i)`` for every row ``c`` of ``coeffs``: one vmapped call or a plain loop."""
    coeffs = coeffs.to(next(iter(theta.values())).device)

    def at(c: Tensor) -> Tensor:
        # The perturbed parameters are built inside the mapped function, so only chunk_size copies of
        # the model's weights exist at once (never one per grid point).
        params = {n: theta[n] + sum(c[i] * d[n] for i, d in enumerate(dirs)) for n in theta}
        return batch_loss(model, params, batch)

    with torch.no_grad():
        if not batched:
            return torch.stack([at(c) for c in coeffs])
        return vmap(at, chunk_size=chunk_size)(coeffs)


def _grid(coords: list[Tensor]) -> Float[Tensor, "point n_dirs"]:
    """Every grid point's coefficients, in C order over the axes (matches ``reshape``)."""
    mesh = torch.meshgrid(*coords, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def loss_slice(
    model: torch.nn.Module,
    batch: Batch,
    *,
    n_dims: int = 2,
    n_points: int = 11,
    radius: float = 1.0,
    seed: int = 0,
    batched: bool = True,
    chunk_size: int | None = None,
) -> tuple[Float[Tensor, " point"], Float[Tensor, "*grid"]]:
    """The loss on a 1-d line or 2-d plane of filter-normalised random directions around θ.

    Args:
        model: the model at the checkpoint; its parameters are the centre θ and are not modified.
        batch: the prompts, on the model's device.
        n_dims: 1 (``L(θ + a·d₁)``) or 2 (``L(θ + a·d₁ + b·d₂)``).
        n_points: grid points per axis; odd puts a point exactly at θ.
        radius: the grid spans ``[-radius, radius]`` in units of the filter-normalised direction
            (radius 1 moves every filter by its own norm).
        seed: seeds the directions (d₁ then d₂ from one generator).
        batched: evaluate all grid points by ``torch.func.vmap`` over stacked parameters (True), or
            one forward pass per point (False); both give the same numbers.
        chunk_size: with ``batched``, at most this many grid points per vectorised call (memory).

    Returns:
        ``(coords, losses)``: the grid coordinates along each axis ``[n_points]`` and the mean loss
        (nats, float64) with shape ``[n_points]`` or ``[n_points, n_points]`` (``[a, b]``).
    """
    if n_dims not in (1, 2):
        raise ValueError(f"n_dims must be 1 or 2, got {n_dims}")
    theta = model_params(model)
    gen = torch.Generator().manual_seed(seed)
    dirs = [random_direction(theta, seed, generator=gen) for _ in range(n_dims)]
    coords = torch.linspace(-radius, radius, n_points, dtype=torch.float64)
    losses = _losses_at(model, batch, theta, dirs, _grid([coords] * n_dims), batched, chunk_size)
    return coords, losses.reshape((n_points,) * n_dims)


def interpolation_slice(
    model: torch.nn.Module,
    other: Mapping[str, Tensor],
    batch: Batch,
    *,
    n_points: int = 21,
    margin: float = 0.0,
    batched: bool = True,
    chunk_size: int | None = None,
) -> tuple[Float[Tensor, " point"], Float[Tensor, " point"]]:
    """The loss along the straight line from θ (the model) to another checkpoint's parameters.

    Args:
        model: the model at the first checkpoint (α = 0); not modified.
        other: parameters of the second checkpoint (α = 1), by name, same shapes.
        batch: the prompts, on the model's device.
        n_points: points on ``α ∈ [-margin, 1 + margin]``.
        margin: how far to extend the line beyond both ends, as a fraction of its length.
        batched: vmapped (True) or plain-loop (False) evaluation.
        chunk_size: with ``batched``, at most this many points per vectorised call.

    Returns:
        ``(alphas [n_points], losses [n_points])`` in nats (float64).
    """
    theta = model_params(model)
    missing = set(theta) ^ set(other)
    if missing:
        raise ValueError(f"the two checkpoints' parameters differ in names: {sorted(missing)[:5]}")
    delta = {n: other[n].to(theta[n].device, theta[n].dtype) - theta[n] for n in theta}
    alphas = torch.linspace(-margin, 1 + margin, n_points, dtype=torch.float64)
    return alphas, _losses_at(model, batch, theta, [delta], _grid([alphas]), batched, chunk_size)


def landscape_table(
    model: torch.nn.Module,
    batch: Batch,
    checkpoint: int,
    *,
    other: Mapping[str, Tensor] | None = None,
    **slice_kwargs: Any,
) -> pd.DataFrame:
    """Loss-surface slice of one checkpoint as a tidy table (``measure="landscape"``).

    Args:
        model: the model at the checkpoint.
        batch: the prompts, on the model's device.
        checkpoint: its training step.
        other: when given, the parameters of a second checkpoint: also emit the line between them.
        **slice_kwargs: passed to ``loss_slice`` (``n_dims``, ``n_points``, ``radius``, ``seed``,
            ``batched``, ``chunk_size``).

    Returns:
        Quantities:

        - ``loss_surface`` (nats) at coordinates ``x`` (and ``y`` for a plane), in units of the
          filter-normalised directions; ``(0, 0)`` is the checkpoint itself.
        - ``loss_interpolation`` (nats) at ``x = α``, with ``other``: α = 0 is this checkpoint and
          α = 1 the other.
    """
    coords, losses = loss_slice(model, batch, **slice_kwargs)
    dims = ("x", "y")[: losses.ndim]
    tables = [
        tidy(
            "landscape",
            "loss_surface",
            losses,
            dims,
            checkpoint=checkpoint,
            coords=dict.fromkeys(dims, coords),
        )
    ]
    if other is not None:
        keep = {k: v for k, v in slice_kwargs.items() if k in ("batched", "chunk_size")}
        alphas, line = interpolation_slice(model, other, batch, **keep)
        tables.append(
            tidy("landscape", "loss_interpolation", line, ("x",), checkpoint=checkpoint, coords={"x": alphas})
        )
    return concat_tables(tables)
