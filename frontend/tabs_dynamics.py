"""The Dynamics tab: training as a trajectory (``trajectory``, ``trajectory_pca``) and the soft modes of
the loss (``hessian_density``, ``head_llc``), the measures whose registry entry says ``tab="dynamics"``.

``render_dynamics(aid, meta, state, step)`` is registered in ``frontend.tabs.RENDERERS``; the figures
that show one checkpoint are ``PER_CHECKPOINT`` (a slider step redraws those only). The helpers here
(``fetch``, ``layer_rows``, ``tab_measures``, ``missing_note``, ``absent_tab``, ``section``) are the Fields tab's too.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from dash import html

from frontend import client, data
from frontend import figures_dynamics as D
from frontend.components import csv_href, empty_state, figure_card
from frontend.plotting import LABELS, empty_figure
from phasescope.measures import measures

__all__ = [
    "MAX_LINES",
    "PER_CHECKPOINT",
    "absent_tab",
    "fetch",
    "layer_rows",
    "missing_note",
    "render_dynamics",
    "section",
    "tab_measures",
]

MAX_LINES = 64  # more lines than this with "all layers" and a figure shows the last layer (as tabs.py)
PER_CHECKPOINT = {"dynamics-phase-space", "dynamics-pca", "dynamics-hessian-density"}
"""The figures of this tab that show the slider's checkpoint (the others are over training steps)."""

# What each measure of the tab shows, for the note that lists the ones an analysis did not run.
_WHAT = {
    "trajectory": "velocity, kinetic energy, distance from initialisation and phase space",
    "trajectory_pca": "the loss on the trajectory's PCA plane",
    "hessian_density": "the Hessian's eigenvalue density",
    "head_llc": "the per-head LLC phase diagram",
    "residual": "residual-stream norms and block shares",
    "correlation": "attention mass against distance, ⟨r⟩, ξ and the residual C(r)",
    "meanfield": "MLP pre-activations against the mean-field Gaussian",
}


def fetch(
    aid: str, meta: dict[str, Any], measure: str, *quantities: str, checkpoint: int | None = None
) -> pd.DataFrame:
    """The rows of ``measure``'s ``quantities`` (all of them when none is named), one cached slice each."""
    names = quantities or (None,)
    parts = [client.slice_table(aid, measure, q, checkpoint, finished=meta["finished"]) for q in names]
    parts = [p for p in parts if len(p)]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["measure", "checkpoint", "layer", "head", "quantity", "value"])
    )


def _is(column: pd.Series, value: int) -> pd.Series:
    return column.eq(value).fillna(False).astype(bool)


def layer_rows(
    frame: pd.DataFrame,
    meta: dict[str, Any],
    state: dict[str, Any],
    *,
    per: int = 1,
    heads: bool = False,
    keep_unlayered: bool = False,
) -> tuple[pd.DataFrame, str]:
    """The rows of the chosen layer (and head, with ``heads``), and a note when "all" was narrowed.

    Args:
        frame: tidy rows.
        meta: the analysis's meta (``n_layers``, ``n_heads``).
        state: the view state (``layer``, ``head``: an index or "all").
        per: lines each layer draws (6 weight matrices, ``n_heads`` heads); with "all layers" and more
            than ``MAX_LINES`` lines in all, the last layer is shown.
        heads: filter by the head control too.
        keep_unlayered: keep rows with no layer (the embeddings) when every layer is shown.
    """
    layer, note = state["layer"], ""
    if layer == "all" and meta["n_layers"] * per > MAX_LINES:
        layer = meta["n_layers"] - 1
        note = f"{meta['n_layers']} layers: showing layer {layer}; choose a layer above."
    if len(frame) and layer != "all":
        frame = frame[_is(frame["layer"], layer)]
    elif len(frame) and not keep_unlayered:
        frame = frame[frame["layer"].notna()]
    if heads and len(frame) and state["head"] != "all":
        frame = frame[_is(frame["head"], state["head"])]
    return frame, note


def tab_measures(meta: dict[str, Any], tab: str) -> list[str]:
    """The measures on ``tab`` (``Measure.tab``) that this analysis ran, in registry order."""
    return [m.name for m in measures(tab=tab) if m.name in meta["measures"]]


def missing_note(meta: dict[str, Any], tab: str) -> Any:
    """A short note naming the measures of ``tab`` this analysis did not run, and what they would show."""
    missing = [m.name for m in measures(tab=tab) if m.name not in meta["measures"]]
    if not missing:
        return None
    said = "; ".join(f"{_WHAT.get(name, name)} (“{name}”)" for name in missing)
    return html.Div(
        f"Not measured in this analysis: {said}. Start a new analysis with them to see those views.",
        className="muted",
        id=f"{tab}-missing",
    )


def absent_tab(meta: dict[str, Any], tab: str, what: str) -> list[Any]:
    """The whole tab's note when the analysis ran none of its measures."""
    names = ", ".join(f"“{m.name}”" for m in measures(tab=tab)) or "its measures"
    return [
        empty_state(
            f"{what} not measured in this analysis (it ran: {', '.join(meta['measures'])}). "
            f"Start a new analysis with {names} to see it.",
            id=f"{tab}-empty",
        )
    ]


def section(title: str, cards: list[Any], note: str = "") -> list[Any]:
    """A heading, a note (a narrowed selection), and the cards in two columns; nothing without cards."""
    if not cards:
        return []
    said = [html.Div(note, className="muted")] if note else []
    return [html.H3(title, className="section"), *said, html.Div(cards, className="grid2")]


def _trajectory(
    aid: str, meta: dict[str, Any], state: dict[str, Any], step: int, kw: dict[str, Any]
) -> list[Any]:
    n_layers = meta["n_layers"] or 1
    cards, note = [], ""
    for quantity, title in (
        ("velocity", "Velocity ‖Δθ‖/Δt per weight matrix"),
        ("kinetic_energy", "Kinetic energy ½‖Δθ/Δt‖² per weight matrix"),
        ("distance_from_init", "Distance from initialisation ‖θ_t − θ_0‖"),
        ("update_cosine", "Cosine between successive updates"),
    ):
        rows, note = layer_rows(
            fetch(aid, meta, "trajectory", quantity, f"total_{quantity}"),
            meta,
            state,
            per=6,
            keep_unlayered=True,
        )
        # A cosine lies in [−1, 1]: its axis stays linear whatever the value-axis control says.
        scales = {**kw, "yscale": "linear"} if quantity == "update_cosine" else kw
        cards.append(
            figure_card(
                f"dynamics-{quantity.replace('_', '-')}",
                D.matrix_lines_figure(rows, quantity, title=title, n_layers=n_layers, **scales),
                csv_href(aid, measure="trajectory", quantity=quantity, layer=state["layer"]),
            )
        )
    heads, _ = layer_rows(fetch(aid, meta, "trajectory", "head_kinetic_energy"), meta, state, heads=True)
    heatmap = D.heads_heatmap_figure(
        heads,
        title="Kinetic energy per head over training",
        colorbar=LABELS.get("trajectory.head_kinetic_energy", "kinetic energy"),
        xscale=kw["xscale"],
        cursor=step,
        transition=kw["transition"],
    )
    cards.append(
        figure_card(
            "dynamics-head-kinetic",
            heatmap,
            csv_href(aid, measure="trajectory", quantity="head_kinetic_energy"),
        )
    )
    kinetic = fetch(aid, meta, "trajectory", "total_kinetic_energy")
    if "loss" in meta["measures"]:
        phase = D.phase_space_figure(fetch(aid, meta, "loss", "loss"), kinetic, cursor=step)
    else:
        phase = empty_figure("The phase-space view needs the loss: this analysis did not run “loss”.")
    cards.append(
        figure_card(
            "dynamics-phase-space",
            phase,
            csv_href(aid, measure="trajectory", quantity="total_kinetic_energy"),
        )
    )
    return section("Trajectory mechanics", cards, note)


def _pca(aid: str, meta: dict[str, Any], step: int, kw: dict[str, Any]) -> list[Any]:
    surface = fetch(aid, meta, "trajectory_pca", "pca_loss")
    coords = fetch(aid, meta, "trajectory_pca", "pca_coordinate")
    ratios = fetch(aid, meta, "trajectory_pca", "pca_explained_variance_ratio")
    plane = D.pca_plane_figure(surface, coords, ratios, cursor=step)
    faithful = fetch(aid, meta, "trajectory_pca", "pca_path_loss", "pca_checkpoint_loss")
    lines = [
        {
            "name": name,
            "steps": rows["checkpoint"].to_numpy(),
            "values": rows["value"].to_numpy(dtype=float),
            "color": color,
            "dash": dash,
        }
        for quantity, name, color, dash in (
            ("pca_checkpoint_loss", "the checkpoint's own loss", "#1f77b4", None),
            ("pca_path_loss", "loss at its projection on the plane", "#ff7f0e", "dash"),
        )
        for rows in [faithful[faithful["quantity"] == quantity]]
    ]
    along = D.step_lines_figure(
        lines,
        title="The plane's loss against the checkpoints' own",
        ytitle="loss (nats)",
        **kw,
    )
    return section(
        "Trajectory PCA",
        [
            figure_card("dynamics-pca", plane, csv_href(aid, measure="trajectory_pca", quantity="pca_loss")),
            figure_card(
                "dynamics-pca-loss", along, csv_href(aid, measure="trajectory_pca", quantity="pca_path_loss")
            ),
        ],
    )


def _soft_modes(
    aid: str, meta: dict[str, Any], state: dict[str, Any], step: int, kw: dict[str, Any], ran: list[str]
) -> list[Any]:
    cards = []
    if "hessian_density" in ran:
        at_step = fetch(aid, meta, "hessian_density", checkpoint=step)
        cards.append(
            figure_card(
                "dynamics-hessian-density",
                D.hessian_density_figure(at_step, step, state["yscale"]),
                csv_href(aid, measure="hessian_density", checkpoint=step),
            )
        )
        mass = fetch(aid, meta, "hessian_density", "mass_near_zero", "negative_mass")
        lines = [
            {
                "name": name,
                "steps": rows["checkpoint"].to_numpy(),
                "values": rows["value"].to_numpy(dtype=float),
                "color": color,
            }
            for quantity, name, color in (
                ("mass_near_zero", "mass near zero (flat directions)", "#2ca02c"),
                ("negative_mass", "negative mass", "#d62728"),
            )
            for rows in [mass[mass["quantity"] == quantity]]
        ]
        cards.append(
            figure_card(
                "dynamics-soft-mass",
                D.step_lines_figure(
                    lines, title="Soft modes over training", ytitle="fraction of the spectrum", **kw
                ),
                csv_href(aid, measure="hessian_density", quantity="mass_near_zero"),
            )
        )
    if "head_llc" in ran:
        llc, _ = layer_rows(fetch(aid, meta, "head_llc", "head_llc"), meta, state, heads=True)
        cards.append(
            figure_card(
                "dynamics-head-llc",
                D.heads_heatmap_figure(
                    llc,
                    title="Per-head LLC (± chain spread in the hover)",
                    colorbar=LABELS.get("head_llc.head_llc", "LLC"),
                    xscale=kw["xscale"],
                    cursor=step,
                    transition=kw["transition"],
                ),
                csv_href(aid, measure="head_llc", quantity="head_llc"),
            )
        )
        if "heads" in meta["measures"]:
            score, _ = layer_rows(fetch(aid, meta, "heads", "induction_score"), meta, state, heads=True)
            beside = D.heads_heatmap_figure(
                score,
                title="Induction score per head, beside the LLC",
                colorbar=LABELS.get("heads.induction_score", "induction score"),
                xscale=kw["xscale"],
                cursor=step,
                transition=kw["transition"],
            )
        else:
            beside = empty_figure(
                "The induction score beside it needs “heads”, which this analysis did not run."
            )
        cards.append(
            figure_card(
                "dynamics-induction", beside, csv_href(aid, measure="heads", quantity="induction_score")
            )
        )
    return section("Soft modes of the loss", cards)


def render_dynamics(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    """The Dynamics tab's components for the view ``state`` at checkpoint ``step``."""
    ran = tab_measures(meta, "dynamics")
    if not ran:
        return absent_tab(meta, "dynamics", "Training dynamics")
    kw = {
        "xscale": state["xscale"],
        "yscale": state["yscale"],
        "cursor": step,
        "transition": data.transition(aid, meta),
    }
    children: list[Any] = [missing_note(meta, "dynamics")]
    if "trajectory" in ran:
        children += _trajectory(aid, meta, state, step, kw)
    if "trajectory_pca" in ran:
        children += _pca(aid, meta, step, kw)
    children += _soft_modes(aid, meta, state, step, kw, ran)
    return children
