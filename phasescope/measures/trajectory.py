"""Training as mechanics: how fast, how far and how straight the parameters move between checkpoints.

The parameters θ_t at the analysed steps ``t`` are a trajectory; with ``prev`` the previous analysed
step and ``Δt = t − prev`` (in training steps), this module measures, per weight matrix, per head and
for the whole model (docs/measures.md, "Training dynamics"):

- velocity ``v = ‖θ_t − θ_prev‖ / Δt`` (weight units per step),
- kinetic energy ``K = ½ v²`` (weight units² per step²),
- distance from initialisation ``‖θ_t − θ_0‖`` and its relative form ``‖θ_t − θ_0‖ / ‖θ_0‖``,
- update cosine ``cos(θ_t − θ_prev, θ_prev − θ_prevprev)``: 1 on a straight path, about 0 for
  uncorrelated steps, negative when training oscillates.

Every norm is the Frobenius (Euclidean) norm over the group's entries. A group is one matrix of one
layer (TransformerLens names: ``W_Q``, ``W_K``, ``W_V``, ``W_O`` ``[head, ...]``, ``W_in``, ``W_out``, and
``W_E``, ``W_pos``, ``W_U`` without a layer), one head (its slices ``W_Q[h]``, ``W_K[h]``, ``W_V[h]``,
``W_O[h]`` together), or every parameter of the model (biases and LayerNorm scales included). All
sums of squares are taken in float64 and per head first, so ``Σ_h ‖ΔW_Q[h]‖² = ‖ΔW_Q‖²`` exactly.
Pure torch: parameters in (dicts of tensors by TransformerLens name), a tidy table out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from phasescope.measures.tables import concat_tables

__all__ = [
    "HEAD_MATRICES",
    "MATRICES",
    "Motion",
    "matrix_of",
    "motion",
    "trajectory_table",
]

MATRICES = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_E", "W_pos", "W_U")
"""The weight matrices reported one by one, in the table's order."""
HEAD_MATRICES = ("W_Q", "W_K", "W_V", "W_O")
"""The matrices whose leading axis is the head: a head's parameters are its slices of these."""

_LAYERED = re.compile(r"^blocks\.(\d+)\.(?:attn|mlp)\.(W_Q|W_K|W_V|W_O|W_in|W_out)$")
_GLOBAL = {"embed.W_E": "W_E", "pos_embed.W_pos": "W_pos", "unembed.W_U": "W_U"}

Params = Mapping[str, Tensor]


def matrix_of(name: str) -> tuple[int | None, str] | None:
    """``(layer, matrix)`` of a TransformerLens parameter name, or None when it is not one of ``MATRICES``.

    >>> matrix_of("blocks.1.attn.W_Q"), matrix_of("unembed.W_U"), matrix_of("blocks.0.attn.b_Q")
    ((1, 'W_Q'), (None, 'W_U'), None)
    """
    if name in _GLOBAL:
        return None, _GLOBAL[name]
    found = _LAYERED.match(name)
    if found is None:
        return None
    return int(found.group(1)), found.group(2)


@dataclass(frozen=True)
class Motion:
    """The five sums of squares every quantity is made of, for one group of parameters (float64).

    Attributes:
        step2: ``‖θ_t − θ_prev‖²`` (NaN without ``prev``).
        last2: ``‖θ_prev − θ_prevprev‖²`` (NaN without ``prevprev``).
        dot: ``⟨θ_t − θ_prev, θ_prev − θ_prevprev⟩`` (NaN without both).
        dist2: ``‖θ_t − θ_0‖²`` (NaN without ``init``).
        init2: ``‖θ_0‖²`` (NaN without ``init``).
    """

    step2: Tensor
    last2: Tensor
    dot: Tensor
    dist2: Tensor
    init2: Tensor

    def __add__(self, other: Motion) -> Motion:
        return Motion(
            self.step2 + other.step2,
            self.last2 + other.last2,
            self.dot + other.dot,
            self.dist2 + other.dist2,
            self.init2 + other.init2,
        )

    def velocity(self, dt: float) -> Tensor:
        """``‖θ_t − θ_prev‖ / Δt``."""
        return self.step2.sqrt() / dt

    def kinetic_energy(self, dt: float) -> Tensor:
        """``½ ‖θ_t − θ_prev‖² / Δt²``."""
        return 0.5 * self.step2 / dt**2

    def distance(self) -> Tensor:
        """``‖θ_t − θ_0‖``."""
        return self.dist2.sqrt()

    def relative_distance(self) -> Tensor:
        """``‖θ_t − θ_0‖ / ‖θ_0‖`` (NaN where ``θ_0 = 0``)."""
        return torch.where(self.init2 > 0, self.dist2.sqrt() / self.init2.sqrt(), math.nan)

    def update_cosine(self) -> Tensor:
        """Cosine between the update into ``t`` and the one into ``prev`` (NaN where either is zero)."""
        norms = (self.step2 * self.last2).sqrt()
        return torch.where(norms > 0, self.dot / norms, math.nan)


def motion(
    current: Tensor,
    prev: Tensor | None,
    prevprev: Tensor | None,
    init: Tensor | None,
    keep: int = 0,
) -> Motion:
    """The sums of squares of one tensor, summed over all but its first ``keep`` axes.

    Args:
        current: θ_t (any shape).
        prev, prevprev, init: the same tensor at the previous step, the one before, and θ_0 (None
            where that checkpoint does not exist: its sums are NaN).
        keep: leading axes kept (1 for a per-head split of ``W_Q``: ``[head, ...]`` → ``[head]``).

    Returns:
        A ``Motion`` of float64 tensors with ``current.shape[:keep]``.
    """
    t = current.double()
    dims = tuple(range(keep, t.ndim))
    nan = torch.full(t.shape[:keep], math.nan, dtype=torch.float64, device=t.device)

    def sq(x: Tensor) -> Tensor:
        return (x * x).sum(dim=dims) if dims else x * x

    step = None if prev is None else t - prev.to(t.device, torch.float64)
    last = None if prev is None or prevprev is None else (prev.double() - prevprev.double()).to(t.device)
    theta0 = None if init is None else init.to(t.device, torch.float64)
    return Motion(
        step2=nan if step is None else sq(step),
        last2=nan if last is None else sq(last),
        dot=nan if step is None or last is None else (step * last).sum(dim=dims) if dims else step * last,
        dist2=nan if theta0 is None else sq(t - theta0),
        init2=nan if theta0 is None else sq(theta0),
    )


def _quantities(prefix: str, m: Motion, dt: float) -> list[tuple[str, Tensor]]:
    names = ("velocity", "kinetic_energy", "distance_from_init", "update_cosine")
    values = (m.velocity(dt), m.kinetic_energy(dt), m.distance(), m.update_cosine())
    out = [(f"{prefix}{n}", v) for n, v in zip(names, values, strict=True)]
    if prefix != "head_":  # the contract has no per-head relative distance
        out.insert(3, (f"{prefix}relative_distance_from_init", m.relative_distance()))
    return out


def trajectory_table(
    current: Params,
    checkpoint: int,
    *,
    prev: tuple[int, Params] | None = None,
    prevprev: tuple[int, Params] | None = None,
    init: tuple[int, Params] | None = None,
) -> pd.DataFrame:
    """Velocity, kinetic energy, distance from θ_0 and update cosine of one checkpoint (``measure="trajectory"``).

    Args:
        current: θ_t by TransformerLens parameter name (``model.named_parameters()``).
        checkpoint: its step ``t``.
        prev: ``(step, θ)`` of the previous analysed checkpoint, None at the first one.
        prevprev: ``(step, θ)`` of the one before that, None at the first two.
        init: ``(step, θ_0)``, the first analysed checkpoint (θ_t itself at the first one).

    Returns:
        Per matrix (``layer``, ``matrix``; layer <NA> for ``W_E``, ``W_pos``, ``W_U``): ``velocity``,
        ``kinetic_energy``, ``distance_from_init``, ``relative_distance_from_init``, ``update_cosine``.
        Per head (``layer``, ``head``): ``head_velocity``, ``head_kinetic_energy``,
        ``head_distance_from_init``, ``head_update_cosine``. Whole model: ``total_velocity``,
        ``total_kinetic_energy``, ``total_distance_from_init``, ``total_relative_distance_from_init``,
        ``total_update_cosine``. Values are NaN where a neighbour is missing (velocity at the first
        checkpoint, cosine at the first two).

    Raises:
        ValueError: a neighbour lacks a parameter of ``current`` or has another shape.
    """
    if prev is not None and prev[0] >= checkpoint:
        raise ValueError(f"the previous checkpoint {prev[0]} is not before {checkpoint}")
    dt = float(checkpoint - prev[0]) if prev is not None else 1.0
    for role, other in (("prev", prev), ("prevprev", prevprev), ("init", init)):
        if other is None:
            continue
        for name, tensor in current.items():
            if name not in other[1] or tuple(other[1][name].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{role} checkpoint {other[0]} has no parameter {name} of shape {tuple(tensor.shape)}"
                )

    def at(params: tuple[int, Params] | None, name: str) -> Tensor | None:
        return None if params is None else params[1][name]

    total: Motion | None = None
    per_matrix: dict[tuple[int | None, str], Motion] = {}
    per_head: dict[int, Motion] = {}
    for name, tensor in current.items():
        args = (tensor, at(prev, name), at(prevprev, name), at(init, name))
        which = matrix_of(name)
        if which is not None and which[1] in HEAD_MATRICES and tensor.ndim == 3:
            heads = motion(*args, keep=1)  # [head]: each head's slice summed on its own
            whole = Motion(*(x.sum() for x in _fields(heads)))
            layer = int(which[0])  # type: ignore[arg-type]
            per_head[layer] = heads if layer not in per_head else per_head[layer] + heads
        else:
            whole = motion(*args)
        total = whole if total is None else total + whole
        if which is not None:
            per_matrix[which] = whole
    rows: list[dict[str, object]] = []  # built at once: one tidy call per value costs ~5 ms each
    order = sorted(per_matrix, key=lambda k: (k[0] is not None, k[0] or 0, MATRICES.index(k[1])))
    for layer, matrix in order:
        for quantity, value in _quantities("", per_matrix[(layer, matrix)], dt):
            rows.append({"layer": layer, "matrix": matrix, "quantity": quantity, "value": float(value)})
    for layer in sorted(per_head):
        for quantity, values in _quantities("head_", per_head[layer], dt):
            rows.extend(
                {"layer": layer, "head": h, "quantity": quantity, "value": float(v)}
                for h, v in enumerate(values.tolist())
            )
    if total is not None:
        rows.extend({"quantity": q, "value": float(v)} for q, v in _quantities("total_", total, dt))
    if not rows:
        return concat_tables([])
    frame = pd.DataFrame(rows).assign(measure="trajectory", checkpoint=int(checkpoint))
    # One quantity's rows together (the store indexes a table by runs of measure, quantity, checkpoint).
    frame = frame.iloc[np.argsort(pd.factorize(frame["quantity"])[0], kind="stable")].reset_index(drop=True)
    for column in ("layer", "head"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return concat_tables([frame])


def _fields(m: Motion) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return m.step2, m.last2, m.dot, m.dist2, m.init2
