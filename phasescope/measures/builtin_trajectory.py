"""The registry entries of training as a trajectory: per-matrix and per-head velocity, kinetic energy, distance from initialisation, update cosines, and the trajectory's principal-component plane.

Definitions in docs/measures.md, "Training dynamics". ``trajectory`` compares each checkpoint with
its neighbours in the analysis (kind ``cross-checkpoint``); ``trajectory_pca`` reads every checkpoint
at once and runs once per analysis, after the per-checkpoint measures (kind ``series``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from phasescope.measures.registry import Measure, OrderParameter, Quantity, register_measure

__all__ = ["neighbour_steps"]

_ADAPTERS = "phasescope.analysis.adapters_dynamics"
_DOCS = "Training dynamics"
_PER_MATRIX = ("layer", "matrix")
_PER_HEAD = ("layer", "head")
_SCALAR: tuple[str, ...] = ()
_MENUS: tuple[Literal["overview", "compare"], ...] = ("overview", "compare")
_COMPARE: tuple[Literal["overview", "compare"], ...] = ("compare",)
_STEP_OR_PEAK = ("step", "peak")  # a burst of motion rises and falls back
_SPEED = "weight units / step"
_ENERGY = "weight units² / step²"
_WEIGHT = "weight units"


def neighbour_steps(steps: Sequence[int], step: int) -> dict[str, int]:
    """The steps of ``step``'s neighbours in the analysed ``steps``: ``prev``, ``prevprev``, ``init``.

    >>> neighbour_steps([0, 25, 50, 100], 50)
    {'prev': 25, 'prevprev': 0, 'init': 0}
    >>> neighbour_steps([0, 25], 0)
    {'init': 0}
    """
    ordered = sorted(int(s) for s in steps)
    i = ordered.index(int(step))
    out = {"prev": ordered[i - 1]} if i >= 1 else {}
    if i >= 2:
        out["prevprev"] = ordered[i - 2]
    out["init"] = ordered[0]
    return out


register_measure(
    Measure(
        name="trajectory",
        kind="cross-checkpoint",
        compute=f"{_ADAPTERS}:trajectory",
        summary="velocity, kinetic energy, distance from init and update cosine of the weights",
        # Reads up to three more checkpoints' weights and takes differences: no forward pass.
        cost=lambda s, p: 0.1,
        quantities=(
            Quantity("velocity", "velocity ‖Δθ‖/Δt", _SPEED, _PER_MATRIX),
            Quantity("kinetic_energy", "kinetic energy ½‖Δθ/Δt‖²", _ENERGY, _PER_MATRIX),
            Quantity("distance_from_init", "distance from init ‖θ − θ₀‖", _WEIGHT, _PER_MATRIX),
            Quantity("relative_distance_from_init", "relative distance ‖θ − θ₀‖/‖θ₀‖", "", _PER_MATRIX),
            Quantity("update_cosine", "cosine of successive updates", "", _PER_MATRIX),
            Quantity("head_velocity", "head velocity ‖Δθ_h‖/Δt", _SPEED, _PER_HEAD, _MENUS),
            Quantity(
                "head_kinetic_energy",
                "head kinetic energy ½‖Δθ_h/Δt‖²",
                _ENERGY,
                _PER_HEAD,
                _MENUS,
                short="head kinetic energy",
            ),
            Quantity(
                "head_distance_from_init",
                "head distance from init ‖θ_h − θ_h,0‖",
                _WEIGHT,
                _PER_HEAD,
                _MENUS,
                short="head distance from init",
            ),
            Quantity("head_update_cosine", "head cosine of successive updates", "", _PER_HEAD, _MENUS),
            Quantity("total_velocity", "model velocity ‖Δθ‖/Δt", _SPEED, _SCALAR, _COMPARE),
            Quantity(
                "total_kinetic_energy",
                "model kinetic energy ½‖Δθ/Δt‖²",
                _ENERGY,
                _SCALAR,
                _COMPARE,
                short="kinetic energy",
            ),
            Quantity(
                "total_distance_from_init", "model distance from init ‖θ − θ₀‖", _WEIGHT, _SCALAR, _COMPARE
            ),
            Quantity(
                "total_relative_distance_from_init",
                "model relative distance ‖θ − θ₀‖/‖θ₀‖",
                "",
                _SCALAR,
                _COMPARE,
            ),
            Quantity("total_update_cosine", "model cosine of successive updates", "", _SCALAR, _COMPARE),
        ),
        order_parameters=(
            OrderParameter("trajectory", "head_kinetic_energy", kinds=_STEP_OR_PEAK),
            OrderParameter("trajectory", "head_distance_from_init"),
            OrderParameter("trajectory", "total_kinetic_energy", kinds=_STEP_OR_PEAK),
        ),
        tab="dynamics",
        docs=_DOCS,
    )
)

register_measure(
    Measure(
        name="trajectory_pca",
        kind="series",
        compute=f"{_ADAPTERS}:trajectory_pca",
        summary="PCA of the weight trajectory and the loss on its top-two plane (once per analysis)",
        # Once per analysis, spread over its checkpoints: the grid's losses, plus two losses per
        # checkpoint (at its projection and at itself), on the heavy prompts.
        cost=lambda s, p: (p.landscape_points**2 + 2) * s.heavy,
        cost_params=("heavy_prompts", "landscape_points"),
        params=("heavy_prompts", "landscape_points"),
        quantities=(
            Quantity(
                "pca_coordinate", "coordinate on the trajectory's principal component", _WEIGHT, ("index",)
            ),
            Quantity(
                "pca_explained_variance_ratio", "share of the trajectory's variance explained", "", ("index",)
            ),
            Quantity("pca_loss", "loss on the trajectory's principal plane", "nats", ("x", "y")),
            Quantity(
                "pca_path_loss", "loss at the projection on the principal plane", "nats", _SCALAR, _COMPARE
            ),
            Quantity(
                "pca_checkpoint_loss", "loss of the checkpoint (same prompts)", "nats", _SCALAR, _COMPARE
            ),
        ),
        tab="dynamics",
        docs=_DOCS,
    )
)
