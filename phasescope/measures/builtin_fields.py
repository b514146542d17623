"""The registry entries of activation fields: residual-stream flow, correlation functions, the mean-field check of MLP pre-activations.

Activation measures of the "fields" tab, off by default: each names the extra hooks it reads
(``Measure.hooks``), which the shared forward pass captures only when one of them is requested, so
the default measures pay nothing for them. Cost models are in work units (one forward pass of
16 × 64 tokens, ``phasescope.service.cost``), measured against the forward pass (docs/measures.md,
"Activation fields"). Definitions: the same section. No torch here.
"""

from __future__ import annotations

from typing import Literal

from phasescope.measures.registry import Measure, OrderParameter, Quantity, register_measure

__all__: list[str] = []

_ADAPTERS = "phasescope.analysis.adapters_fields"
_DOCS = "Activation fields"
_LAYER = ("layer",)
_PER_HEAD = ("layer", "head")
_COMPARE: tuple[Literal["overview", "compare"], ...] = ("compare",)
_MENUS: tuple[Literal["overview", "compare"], ...] = ("overview", "compare")
_NORM = "residual units"
# The hook suffixes, as phasescope.analysis.adapters_fields declares them (kept here as strings so
# the registry imports no torch).
_OUTPUTS = ("hook_resid_post", "hook_normalized_resid_post")

register_measure(
    Measure(
        name="residual",
        kind="activation",
        compute=f"{_ADAPTERS}:residual",
        summary="residual-stream norm before and after each block, its growth and each block's share",
        # Five [batch, pos, d_model] float64 copies per layer and their norms: measured 0.32 of the
        # forward pass (4-layer GPT-2-small shape, 16 × 64 tokens, one CPU thread).
        cost=lambda s, p: 0.3 * s.tok,
        quantities=(
            Quantity("resid_norm_pre", "residual norm entering the block ⟨‖x_pre‖⟩", _NORM, _LAYER, _COMPARE),
            Quantity(
                "resid_norm_post", "residual norm leaving the block ⟨‖x_post‖⟩", _NORM, _LAYER, _COMPARE
            ),
            Quantity(
                "resid_growth",
                "residual growth ⟨‖x_post‖⟩ / ⟨‖x_pre‖⟩",
                "",
                _LAYER,
                _COMPARE,
                short="residual growth",
            ),
            Quantity("block_share", "block share ⟨‖Δx‖ / ‖x_pre‖⟩", "", _LAYER, _COMPARE),
            Quantity("attn_share", "attention share ⟨‖attn_out‖ / ‖x_pre‖⟩", "", _LAYER, _COMPARE),
            Quantity("mlp_share", "MLP share ⟨‖mlp_out‖ / ‖x_mid‖⟩", "", _LAYER, _COMPARE),
            Quantity(
                "resid_norm_position",
                "residual norm leaving the block, per position",
                _NORM,
                ("layer", "position"),
            ),
        ),
        order_parameters=(OrderParameter("residual", "resid_growth"),),
        tab="fields",
        hooks=("hook_resid_pre", "hook_resid_mid", "hook_attn_out", "hook_mlp_out", *_OUTPUTS),
        docs=_DOCS,
    )
)

register_measure(
    Measure(
        name="correlation",
        kind="activation",
        compute=f"{_ADAPTERS}:correlation",
        summary="attention mass against query-key distance, its mean and correlation length; residual C(r)",
        # One scatter of the patterns and one pos × pos Gram per layer: measured 0.16 of the forward
        # pass at 16 × 64 tokens; the patterns' part grows with the attention elements.
        cost=lambda s, p: 0.1 * s.att + 0.1 * s.tok,
        quantities=(
            Quantity(
                "attention_mass_distance",
                "attention mass at query–key distance r",
                "",
                ("layer", "head", "index"),
            ),
            Quantity(
                "attention_mean_distance",
                "mean attention distance ⟨r⟩",
                "tokens",
                _PER_HEAD,
                _MENUS,
                short="mean attention distance",
            ),
            Quantity(
                "attention_correlation_length",
                "attention correlation length ξ",
                "tokens",
                _PER_HEAD,
                _MENUS,
                short="attention ξ",
            ),
            Quantity("residual_correlation", "residual correlation C(r)", "", ("layer", "index")),
            Quantity(
                "residual_correlation_length", "residual correlation length", "tokens", _LAYER, _COMPARE
            ),
        ),
        order_parameters=(
            OrderParameter("correlation", "attention_mean_distance"),
            OrderParameter("correlation", "attention_correlation_length"),
        ),
        tab="fields",
        hooks=_OUTPUTS,
        docs=_DOCS,
    )
)

register_measure(
    Measure(
        name="meanfield",
        kind="activation",
        compute=f"{_ADAPTERS}:meanfield",
        summary="MLP pre-activations against the Gaussian of mean-field theory: histogram, moments, KS",
        # The pre-activations' moments and histogram, and one sort of at most 2^18 of them per layer:
        # measured 0.59 of the forward pass (d_mlp = 4 d_model).
        cost=lambda s, p: 0.6 * s.tok,
        quantities=(
            Quantity("preact_hist", "pre-activation density", "1 / preact unit", ("layer", "index")),
            Quantity("preact_mean", "pre-activation mean", "preact units", _LAYER, _COMPARE),
            Quantity("preact_std", "pre-activation standard deviation", "preact units", _LAYER, _COMPARE),
            Quantity("preact_skew", "pre-activation skewness", "", _LAYER, _COMPARE),
            Quantity("preact_kurtosis", "pre-activation excess kurtosis", "", _LAYER, _COMPARE),
            Quantity(
                "preact_active_fraction", "active fraction (pre-activation > 0)", "fraction", _LAYER, _COMPARE
            ),
            Quantity(
                "preact_ks",
                "KS distance from the Gaussian of the same mean and variance",
                "",
                _LAYER,
                _COMPARE,
                short="pre-activation KS distance",
            ),
            Quantity("preact_ks_bound", "KS bound 1.63 / √neurons (1% level)", "", _LAYER, _COMPARE),
        ),
        order_parameters=(OrderParameter("meanfield", "preact_ks"),),
        tab="fields",
        hooks=("mlp.hook_pre",),
        docs=_DOCS,
    )
)
