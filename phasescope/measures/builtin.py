"""The nine built-in measures, registered in ``phasescope.measures.registry``.

Each entry is the one place its measure is described: kind, cost model (formulas explained in
``phasescope.service.cost``), the ``MeasureParams`` it reads, the quantities it emits with labels and
units (definitions in docs/measures.md, the section named by ``docs``), its order parameters, and
its tab. The order of registration is the order menus, help texts and findings list them in.
No torch here: the compute functions (``phasescope.analysis.adapters``) are named, not imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from phasescope.measures.registry import (
    TOKENS_PER_UNIT,
    Measure,
    OrderParameter,
    Quantity,
    WorkSizes,
    register_measure,
)

if TYPE_CHECKING:
    from phasescope.schemas import MeasureParams

__all__ = ["HVP_UNITS"]

HVP_UNITS = 6.0
"""One Hessian-vector product in forward passes (4-8 measured on CPU, float64)."""

_ADAPTERS = "phasescope.analysis.adapters"
_HEAVY = ("heavy_prompts",)
_PER_HEAD = ("layer", "head")
_SCALAR: tuple[str, ...] = ()
_STEP = ("step",)
_STEP_OR_PEAK = ("step", "peak")  # sharpness and the LLC rise and fall back during a transition
_MENUS: tuple[Literal["overview", "compare"], ...] = ("overview", "compare")
# Digest columns (phasescope.phases.digest): the mean of a scalar, the best head, the last layer's.
_MEAN = ("mean", False)
_BEST = ("max", False)


def _op(measure: str, quantity: str, kinds: tuple[str, ...] = _STEP, **where: object) -> OrderParameter:
    return OrderParameter(measure, quantity, tuple(where.items()), kinds)


def _fluctuating(
    name: str, words: str, unit: str, dims: tuple[str, ...], chi_unit: str
) -> tuple[Quantity, Quantity]:
    """An order parameter's per-prompt values and susceptibility (docs/measures.md, "Uncertainties")."""
    return (
        Quantity(f"{name}_prompt", f"{words} of one prompt", unit, (*dims, "index")),
        Quantity(f"{name}_chi", f"susceptibility χ of the {words} over prompts", chi_unit, dims),
    )


def _sharpness_products(p: MeasureParams) -> float:
    """Hessian-vector products of one sharpness run: eigen solver, residual checks, trace probes."""
    k = p.sharpness_k
    solver = max(2 * k + 1, 20) + 4 * k if p.sharpness_method == "lanczos" else 25 * k
    return float(solver + k + p.hutchinson_samples)


def _heads_cost(s: WorkSizes, p: MeasureParams) -> float:
    # Plus the repeated-token probe of text inputs (at most 32 prompts).
    return 0.5 * s.att + min(s.prompts, 32) * s.seq_len / TOKENS_PER_UNIT


# Split losses: tasks with named splits (grokking's train/test) report each one.
_SPLITS = tuple(
    q
    for split in ("train", "test")
    for q in (
        Quantity(f"loss_{split}", f"{split} loss", "nats", _SCALAR, ("compare",), short=f"{split} loss"),
        Quantity(
            f"accuracy_{split}",
            f"{split} accuracy",
            "fraction",
            _SCALAR,
            ("compare",),
            short=f"{split} accuracy",
        ),
        *_fluctuating(f"loss_{split}", f"{split} loss", "nats", _SCALAR, "nats²"),
        *_fluctuating(f"accuracy_{split}", f"{split} accuracy", "fraction", _SCALAR, ""),
    )
)
register_measure(
    Measure(
        name="loss",
        kind="activation",
        compute=f"{_ADAPTERS}:loss",
        summary="next-token loss and accuracy (per split for tasks that have splits)",
        cost=lambda s, p: 0.5 * s.tok,
        quantities=(
            Quantity("loss", "loss", "nats", _SCALAR, ("compare",), as_change=True, digest=_MEAN),
            Quantity("accuracy", "accuracy", "fraction", _SCALAR, ("compare",), digest=_MEAN),
            Quantity("loss_se", "standard error of the loss over prompts", "nats", _SCALAR),
            *_fluctuating("loss", "loss", "nats", _SCALAR, "nats²"),
            *_fluctuating("accuracy", "accuracy", "fraction", _SCALAR, ""),
            *_SPLITS,
        ),
        order_parameters=tuple(
            _op("loss", q) for q in ("loss", "loss_train", "accuracy_train", "loss_test", "accuracy_test")
        ),
        default=True,
        tab="overview",
        reads_logits=True,
        docs="Loss",
    )
)

_MASS = "attention mass, 0–1"
register_measure(
    Measure(
        name="heads",
        kind="activation",
        compute=f"{_ADAPTERS}:heads",
        summary="induction and previous-token scores per head",
        cost=_heads_cost,
        quantities=(
            Quantity("induction_score", "induction score", _MASS, _PER_HEAD, _MENUS, digest=_BEST),
            Quantity("prev_token_score", "previous-token score", _MASS, _PER_HEAD, _MENUS, digest=_BEST),
            *_fluctuating("induction_score", "induction score", _MASS, _PER_HEAD, ""),
            *_fluctuating("prev_token_score", "previous-token score", _MASS, _PER_HEAD, ""),
        ),
        order_parameters=(_op("heads", "induction_score"), _op("heads", "prev_token_score")),
        default=True,
        tab="overview",
        docs="Heads",
    )
)

_ROW = ("layer", "head", "position")
register_measure(
    Measure(
        name="entropy",
        kind="activation",
        compute=f"{_ADAPTERS}:entropy",
        summary="attention entropy per head and query position, k90, Hopfield regime",
        cost=lambda s, p: 0.5 * s.att,
        quantities=(
            Quantity("entropy", "attention entropy S per query position", "nats", _ROW),
            Quantity("entropy_norm", "normalised entropy S / ln n per query position", "", _ROW),
            Quantity("k90", "keys holding 90% of the mass, per query position", "keys", _ROW),
            Quantity(
                "entropy_mean",
                "attention entropy S",
                "nats",
                _PER_HEAD,
                _MENUS,
                short="entropy",
                as_change=True,
                digest=("mean", True),
            ),
            Quantity(
                "entropy_norm_mean", "normalised entropy S / ln n", "", _PER_HEAD, ("overview", "compare")
            ),
            Quantity("k90_mean", "k90 (keys holding 90% of mass)", "", _PER_HEAD, _MENUS),
            Quantity("k90_frac_mean", "k90 / n (fraction of keys)", "", _PER_HEAD),
            Quantity("hopfield_regime", "Hopfield regime (0 fixed, 1 metastable, 2 global)", "", _PER_HEAD),
            *_fluctuating("entropy_mean", "attention entropy S", "nats", _PER_HEAD, "nats²"),
        ),
        order_parameters=(_op("entropy", "entropy_mean"),),
        default=True,
        tab="entropy",
        docs="Entropy",
    )
)

_SWEEP = ("layer", "head", "beta")
register_measure(
    Measure(
        name="thermo",
        kind="activation",
        compute=f"{_ADAPTERS}:thermo",
        summary="temperature sweep of each head: free energy, entropy, heat capacity, β*",
        cost=lambda s, p: 3.0 * s.att * p.n_beta / 61,
        cost_params=("n_beta",),
        params=("beta_min", "beta_max", "n_beta"),
        quantities=(
            Quantity("log_z", "ln Z(β)", "", _SWEEP),
            Quantity("beta_f", "βF(β) = −ln Z", "", _SWEEP),
            Quantity("free_energy", "F(β) = −ln Z / β", "score units", _SWEEP),
            Quantity("internal_energy", "U(β)", "score units", _SWEEP),
            Quantity("entropy", "S(β)", "nats", _SWEEP),
            Quantity("heat_capacity", "C(β)", "nats", _SWEEP),
            Quantity(
                "beta_star",
                "β* (peak of C(β), inverse temperature)",
                "",
                _PER_HEAD,
                _MENUS,
                short="β*",
                digest=("median", True),
            ),
            Quantity("beta_star_censored", "β* censored (1: C(β) peaks at an end of the grid)", ""),
            Quantity("beta_star_bound", "end of the β grid where C(β) peaks (censored heads)", ""),
            Quantity("heat_capacity_max", "max C(β)", "nats", _PER_HEAD, _MENUS),
            *_fluctuating("beta_star", "β*", "", _PER_HEAD, ""),
        ),
        order_parameters=(_op("thermo", "beta_star"),),
        default=True,
        tab="thermo",
        docs="Thermodynamics",
    )
)

_PER_INDEX = ("layer", "head", "index")
_PER_MATRIX = ("layer", "matrix")
register_measure(
    Measure(
        name="spectra",
        kind="activation",
        compute=f"{_ADAPTERS}:spectra",
        summary="singular values of attention matrices, QK/OV circuits and weight ESDs (α, MP edge)",
        cost=lambda s, p: s.att * s.seq_len / 64 + 1.0,
        quantities=(
            Quantity("sigma", "singular value σ_k of the attention matrix", "", _PER_INDEX),
            Quantity("stable_rank", "stable rank ‖A‖²_F / σ₁²", "", _PER_HEAD, _MENUS, digest=("mean", True)),
            *_fluctuating("stable_rank", "stable rank", "", _PER_HEAD, ""),
            Quantity("effective_rank", "effective rank exp H(σ)", "", _PER_HEAD, _MENUS),
            Quantity("gap", "σ₁ − σ₂", "", _PER_HEAD, _MENUS),
            Quantity("sigma_max", "σ₁ of attention matrix", "", _PER_HEAD),
            Quantity("qk_sigma", "singular value of W_QK = W_Q W_Kᵀ", "", _PER_INDEX),
            Quantity("ov_sigma", "singular value of W_OV = W_V W_O", "", _PER_INDEX),
            Quantity(
                "esd_eigenvalue", "eigenvalue of WᵀW / N", "weight units²", ("layer", "matrix", "index")
            ),
            Quantity("mp_lambda_minus", "Marchenko–Pastur lower edge λ₋", "weight units²", _PER_MATRIX),
            Quantity("mp_lambda_plus", "Marchenko–Pastur upper edge λ₊", "weight units²", _PER_MATRIX),
            Quantity("spike_count", "eigenvalues above λ₊", "count", _PER_MATRIX),
            Quantity("esd_alpha", "power-law exponent α of the ESD tail", "", _PER_MATRIX),
            Quantity("esd_alpha_se", "standard error of α", "", _PER_MATRIX),
            Quantity("esd_xmin", "start λ_min of the fitted tail", "weight units²", _PER_MATRIX),
            Quantity("esd_n_tail", "eigenvalues in the fitted tail", "count", _PER_MATRIX),
        ),
        order_parameters=(_op("spectra", "stable_rank"),),
        default=True,
        tab="spectra",
        docs="Spectra",
    )
)

register_measure(
    Measure(
        name="energies",
        kind="activation",
        compute=f"{_ADAPTERS}:energies",
        summary="histograms of attention energies E = −s per head",
        cost=lambda s, p: s.att,
        params=("energy_bins",),
        quantities=(
            Quantity("energy_hist", "attention energies per bin", "count", _PER_INDEX),
            Quantity("energy_below", "energies below the histogram's range", "count", _PER_HEAD),
            Quantity("energy_above", "energies above the histogram's range", "count", _PER_HEAD),
            Quantity("energy_mean", "mean attention energy ⟨E⟩", "score units", _PER_HEAD),
            Quantity("energy_std", "spread of attention energies", "score units", _PER_HEAD),
            Quantity("k90_mean", "k90 (keys holding 90% of mass)", "", _PER_HEAD),
            Quantity("k90_frac_mean", "k90 / n (fraction of keys)", "", _PER_HEAD),
            Quantity("hopfield_regime", "Hopfield regime (0 fixed, 1 metastable, 2 global)", "", _PER_HEAD),
        ),
        tab="landscape",
        docs="Attention energies",
    )
)

_SURFACE = _HEAVY + ("landscape_dims", "landscape_points", "landscape_radius", "landscape_seed")
register_measure(
    Measure(
        name="landscape",
        kind="landscape",
        compute=f"{_ADAPTERS}:landscape",
        summary="loss surface on a line or plane of filter-normalised directions",
        cost=lambda s, p: float(p.landscape_points**p.landscape_dims) * s.heavy,
        cost_params=("heavy_prompts", "landscape_dims", "landscape_points"),
        params=_SURFACE,
        quantities=(
            Quantity("loss_surface", "loss on filter-normalised directions", "nats", ("x", "y")),
            Quantity("loss_interpolation", "loss on the line to another checkpoint", "nats", ("x",)),
        ),
        tab="landscape",
        docs="Loss-surface slices",
    )
)

register_measure(
    Measure(
        name="sharpness",
        kind="landscape",
        compute=f"{_ADAPTERS}:sharpness",
        summary="top Hessian eigenvalues and Hessian trace of the loss",
        cost=lambda s, p: HVP_UNITS * s.heavy * _sharpness_products(p),
        cost_params=("heavy_prompts", "sharpness_k", "sharpness_method", "hutchinson_samples"),
        params=("heavy_prompts", "sharpness_k", "sharpness_method", "hutchinson_samples", "landscape_seed"),
        quantities=(
            Quantity(
                "hessian_eigenvalue", "Hessian eigenvalue", "nats / unit²", ("index",), short="sharpness"
            ),
            Quantity("lanczos_residual", "relative residual ‖Hv − λv‖ / |λ| (Lanczos)", "", ("index",)),
            Quantity("power_residual", "relative residual ‖Hv − λv‖ / |λ| (power)", "", ("index",)),
            Quantity("hessian_converged", "eigenvalue converged (1) or not (0)", "", ("index",)),
            Quantity("hessian_trace", "Hessian trace", "nats / unit²", _SCALAR, short="Hessian trace"),
            Quantity("hessian_trace_se", "standard error of the Hessian trace", "nats / unit²", _SCALAR),
            Quantity("n_hvp", "Hessian-vector products", "count", _SCALAR),
        ),
        order_parameters=(_op("sharpness", "hessian_eigenvalue", _STEP_OR_PEAK, index=0),),
        tab="landscape",
        docs="Sharpness",
    )
)

register_measure(
    Measure(
        name="llc",
        kind="landscape",
        compute=f"{_ADAPTERS}:llc",
        summary="local learning coefficient by SGLD sampling (devinterp)",
        cost=lambda s, p: s.heavy * (1 + 3 * p.llc_chains * p.llc_draws),
        cost_params=("heavy_prompts", "llc_chains", "llc_draws"),
        params=("heavy_prompts", "llc_chains", "llc_draws", "llc_lr", "llc_localization", "landscape_seed"),
        quantities=(
            Quantity("llc_mean", "LLC λ̂", "", _SCALAR, short="LLC"),
            Quantity("llc_std", "spread of λ̂ over chains", "", _SCALAR),
            Quantity("llc_chain", "LLC λ̂ of one chain", "", ("index",)),
            Quantity("llc_init_loss", "loss at the checkpoint", "nats", _SCALAR, as_change=True),
            Quantity("sgld_loss", "SGLD minibatch loss", "nats", ("index", "x")),
        ),
        order_parameters=(_op("llc", "llc_mean", _STEP_OR_PEAK),),
        tab="landscape",
        docs="Local learning coefficient",
    )
)

# The measures of training dynamics, soft modes and activation fields, each group in its own module.
from phasescope.measures import builtin_fields, builtin_softmodes, builtin_trajectory  # noqa: E402, F401
