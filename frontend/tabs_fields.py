"""The Fields tab: the residual stream's flow (``residual``), correlation functions and lengths
(``correlation``) and the mean-field check of MLP pre-activations (``meanfield``), the measures whose
registry entry says ``tab="fields"``.

``render_fields(aid, meta, state, step)`` is registered in ``frontend.tabs.RENDERERS``; the figures
that show one checkpoint are ``PER_CHECKPOINT`` (a slider step redraws those only).
"""

from __future__ import annotations

from typing import Any

from dash import html

from frontend import data
from frontend import figures as F
from frontend import figures_dynamics as D
from frontend import figures_fields as G
from frontend.components import csv_href, empty_state, figure_card
from frontend.plotting import LABELS
from frontend.tabs_dynamics import absent_tab, fetch, layer_rows, missing_note, section, tab_measures

__all__ = ["PER_CHECKPOINT", "render_fields"]

PER_CHECKPOINT = {
    "fields-resid-depth",
    "fields-resid-position",
    "fields-attention-mass",
    "fields-residual-correlation",
    "fields-preact-hist",
}
"""The figures of this tab that show the slider's checkpoint (the others are over training steps)."""


def _residual(
    aid: str, meta: dict[str, Any], state: dict[str, Any], step: int, kw: dict[str, Any]
) -> list[Any]:
    n_layers = meta["n_layers"] or 1
    at_step = fetch(aid, meta, "residual", checkpoint=step)
    per_layer = at_step[at_step["quantity"] != "resid_norm_position"] if len(at_step) else at_step
    positions = at_step[at_step["quantity"] == "resid_norm_position"] if len(at_step) else at_step
    growth, note = layer_rows(fetch(aid, meta, "residual", "resid_growth"), meta, state)
    shares, _ = layer_rows(
        fetch(aid, meta, "residual", "block_share", "attn_share", "mlp_share"), meta, state
    )
    cards = [
        figure_card(
            "fields-resid-depth",
            G.residual_depth_figure(per_layer, step),
            csv_href(aid, measure="residual", checkpoint=step),
        ),
        figure_card(
            "fields-resid-position",
            G.position_heatmap_figure(positions, step),
            csv_href(aid, measure="residual", quantity="resid_norm_position", checkpoint=step),
        ),
        figure_card(
            "fields-resid-growth",
            G.layer_lines_figure(
                growth,
                ("resid_growth",),
                measure="residual",
                title="Residual growth per block",
                n_layers=n_layers,
                **kw,
            ),
            csv_href(aid, measure="residual", quantity="resid_growth"),
        ),
        figure_card(
            "fields-block-share",
            G.layer_lines_figure(
                shares,
                ("block_share", "attn_share", "mlp_share"),
                measure="residual",
                title="Block shares ‖Δx‖/‖x‖ (attention dashed, MLP dotted)",
                n_layers=n_layers,
                ytitle="share of the residual norm ‖Δx‖ / ‖x‖",
                **kw,
            ),
            csv_href(aid, measure="residual", quantity="block_share"),
        ),
    ]
    return section("Residual stream", cards, note)


def _correlation(
    aid: str, meta: dict[str, Any], state: dict[str, Any], step: int, kw: dict[str, Any]
) -> list[Any]:
    n_layers, n_heads = meta["n_layers"] or 1, meta["n_heads"] or 1
    mass, note = layer_rows(
        fetch(aid, meta, "correlation", "attention_mass_distance", checkpoint=step),
        meta,
        state,
        per=n_heads,
        heads=True,
    )
    heatmaps = {"xscale": kw["xscale"], "cursor": step, "transition": kw["transition"]}
    mean, _ = layer_rows(fetch(aid, meta, "correlation", "attention_mean_distance"), meta, state, heads=True)
    xi, _ = layer_rows(
        fetch(aid, meta, "correlation", "attention_correlation_length"), meta, state, heads=True
    )
    corr, _ = layer_rows(
        fetch(aid, meta, "correlation", "residual_correlation", checkpoint=step), meta, state
    )
    length, _ = layer_rows(fetch(aid, meta, "correlation", "residual_correlation_length"), meta, state)
    cards = [
        figure_card(
            "fields-attention-mass",
            # Log y: an exponential fall-off exp(−r/ξ) is a straight line of slope −1/ξ.
            F.curves_figure(
                mass,
                x="index",
                title=f"Attention mass against query–key distance at step {step}",
                xtitle="query–key distance r (tokens)",
                ytitle=LABELS.get("correlation.attention_mass_distance", "attention mass"),
                xscale="linear",
                yscale="log",
                shape=(n_layers, n_heads),
            ),
            csv_href(aid, measure="correlation", quantity="attention_mass_distance", checkpoint=step),
        ),
        figure_card(
            "fields-residual-correlation",
            G.per_layer_figure(
                corr,
                x="index",
                title=f"Residual correlation C(r) at step {step}",
                xtitle="distance r (tokens)",
                ytitle=LABELS.get("correlation.residual_correlation", "C(r)"),
                n_layers=n_layers,
            ),
            csv_href(aid, measure="correlation", quantity="residual_correlation", checkpoint=step),
        ),
        figure_card(
            "fields-mean-distance",
            D.heads_heatmap_figure(
                mean,
                title="Mean attention distance ⟨r⟩ per head",
                colorbar=LABELS.get("correlation.attention_mean_distance", "⟨r⟩"),
                **heatmaps,
            ),
            csv_href(aid, measure="correlation", quantity="attention_mean_distance"),
        ),
        figure_card(
            "fields-correlation-length",
            D.heads_heatmap_figure(
                xi,
                title="Attention correlation length ξ per head",
                colorbar=LABELS.get("correlation.attention_correlation_length", "ξ"),
                **heatmaps,
            ),
            csv_href(aid, measure="correlation", quantity="attention_correlation_length"),
        ),
        figure_card(
            "fields-residual-length",
            G.layer_lines_figure(
                length,
                ("residual_correlation_length",),
                measure="correlation",
                title="Residual correlation length per layer",
                n_layers=n_layers,
                **kw,
            ),
            csv_href(aid, measure="correlation", quantity="residual_correlation_length"),
        ),
    ]
    return section("Correlation functions", cards, note)


def _meanfield(
    aid: str, meta: dict[str, Any], state: dict[str, Any], step: int, kw: dict[str, Any]
) -> list[Any]:
    n_layers = meta["n_layers"] or 1
    at_step, _ = layer_rows(fetch(aid, meta, "meanfield", checkpoint=step), meta, state)
    ks, _ = layer_rows(fetch(aid, meta, "meanfield", "preact_ks", "preact_ks_bound"), meta, state)
    if not len(at_step) and not len(ks):
        # meanfield emits nothing for a model without MLPs (attention-only): say so, not "no data".
        return [
            html.H3("Mean-field check", className="section"),
            empty_state(
                "No MLP pre-activations in this analysis: the model has no MLP blocks (attention-only), "
                "or the chosen layer has none.",
                id="fields-no-mlp",
            ),
        ]
    kurtosis, _ = layer_rows(fetch(aid, meta, "meanfield", "preact_kurtosis"), meta, state)
    active, _ = layer_rows(fetch(aid, meta, "meanfield", "preact_active_fraction"), meta, state)
    cards = [
        figure_card(
            "fields-preact-hist",
            G.preact_hist_figure(at_step, step, n_layers, state["yscale"]),
            csv_href(aid, measure="meanfield", checkpoint=step),
        ),
        figure_card(
            "fields-preact-ks",
            G.layer_lines_figure(
                ks,
                ("preact_ks", "preact_ks_bound"),
                measure="meanfield",
                title="Distance from the Gaussian (KS), its bound dashed",
                n_layers=n_layers,
                **kw,
            ),
            csv_href(aid, measure="meanfield", quantity="preact_ks"),
        ),
        figure_card(
            "fields-preact-kurtosis",
            G.layer_lines_figure(
                kurtosis,
                ("preact_kurtosis",),
                measure="meanfield",
                title="Excess kurtosis of pre-activations",
                n_layers=n_layers,
                **kw,
            ),
            csv_href(aid, measure="meanfield", quantity="preact_kurtosis"),
        ),
        figure_card(
            "fields-preact-active",
            G.layer_lines_figure(
                active,
                ("preact_active_fraction",),
                measure="meanfield",
                title="Active fraction of pre-activations",
                n_layers=n_layers,
                **kw,
            ),
            csv_href(aid, measure="meanfield", quantity="preact_active_fraction"),
        ),
    ]
    return section("Mean-field check", cards)


def render_fields(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    """The Fields tab's components for the view ``state`` at checkpoint ``step``."""
    ran = tab_measures(meta, "fields")
    if not ran:
        return absent_tab(meta, "fields", "Activation fields")
    kw = {
        "xscale": state["xscale"],
        "yscale": state["yscale"],
        "cursor": step,
        "transition": data.transition(aid, meta),
    }
    children: list[Any] = [missing_note(meta, "fields")]
    if "residual" in ran:
        children += _residual(aid, meta, state, step, kw)
    if "correlation" in ran:
        children += _correlation(aid, meta, state, step, kw)
    if "meanfield" in ran:
        children += _meanfield(aid, meta, state, step, kw)
    return children
