"""The registry entries of soft modes of the loss: the Hessian's spectral density by stochastic Lanczos quadrature, and per-head local learning coefficients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from phasescope.measures.builtin import HVP_UNITS
from phasescope.measures.registry import Measure, OrderParameter, Quantity, WorkSizes, register_measure

if TYPE_CHECKING:
    from phasescope.schemas import MeasureParams

__all__: list[str] = []

_ADAPTERS = "phasescope.analysis.adapters_softmodes"
_SCALAR: tuple[str, ...] = ()
_COMPARE: tuple[Literal["overview", "compare"], ...] = ("compare",)
# Soft modes open up and close again around a transition, as sharpness and the LLC do.
_STEP_OR_PEAK = ("step", "peak")
_EIGEN_UNIT = "nats / unit²"


def _slq_cost(s: WorkSizes, p: MeasureParams) -> float:
    """One gradient graph (forward and backward) plus m·n_v Hessian-vector products."""
    return HVP_UNITS * s.heavy * (p.slq_steps * p.slq_probes + 1)


def _head_llc_cost(s: WorkSizes, p: MeasureParams) -> float:
    """The llc measure's run at head_llc's own sampler size, once per head, priced on the most heads a
    request allows (measured on zoo:induction-2l: one head's run is 0.7–1.05× this per head)."""
    return s.heavy * p.head_llc_max_heads * (1 + 3 * p.head_llc_chains * p.head_llc_draws)


register_measure(
    Measure(
        name="hessian_density",
        kind="landscape",
        compute=f"{_ADAPTERS}:hessian_density",
        summary="Hessian eigenvalue density by stochastic Lanczos quadrature: flat and negative mass",
        cost=_slq_cost,
        cost_params=("heavy_prompts", "slq_steps", "slq_probes"),
        params=("heavy_prompts", "slq_steps", "slq_probes", "landscape_seed"),
        quantities=(
            Quantity("density", "Hessian eigenvalue density", f"per {_EIGEN_UNIT}", ("x",)),
            Quantity(
                "mass_near_zero",
                "Hessian mass near zero (|λ| ≤ 1% of max |λ|)",
                "fraction",
                _SCALAR,
                _COMPARE,
                short="flat Hessian mass",
            ),
            Quantity(
                "negative_mass",
                "Hessian negative mass (λ < −1% of max |λ|)",
                "fraction",
                _SCALAR,
                _COMPARE,
                short="negative Hessian mass",
            ),
            Quantity(
                "trace", "Hessian trace (SLQ)", _EIGEN_UNIT, _SCALAR, _COMPARE, short="SLQ Hessian trace"
            ),
            Quantity("lambda_min", "smallest Hessian eigenvalue (SLQ)", _EIGEN_UNIT, _SCALAR, _COMPARE),
            Quantity("lambda_max", "largest Hessian eigenvalue (SLQ)", _EIGEN_UNIT, _SCALAR, _COMPARE),
        ),
        order_parameters=(
            OrderParameter("hessian_density", "mass_near_zero", kinds=_STEP_OR_PEAK),
            OrderParameter("hessian_density", "negative_mass", kinds=_STEP_OR_PEAK),
        ),
        tab="dynamics",
        docs="Hessian spectral density (soft modes)",
    )
)

register_measure(
    Measure(
        name="head_llc",
        kind="landscape",
        compute=f"{_ADAPTERS}:head_llc",
        summary="local learning coefficient restricted to each head's weights (devinterp, one run per head)",
        cost=_head_llc_cost,
        cost_params=("heavy_prompts", "head_llc_max_heads", "head_llc_chains", "head_llc_draws"),
        params=(
            "heavy_prompts",
            "head_llc_max_heads",
            "head_llc_chains",
            "head_llc_draws",
            "llc_lr",
            "llc_localization",
            "landscape_seed",
        ),
        quantities=(
            Quantity(
                "head_llc",
                "per-head LLC λ̂ (the head's weights sampled)",
                "",
                ("layer", "head"),
                ("overview", "compare"),
                short="head LLC",
            ),
        ),
        order_parameters=(OrderParameter("head_llc", "head_llc", kinds=_STEP_OR_PEAK),),
        tab="dynamics",
        docs="Per-head local learning coefficient",
    )
)
