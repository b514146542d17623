"""The analysis view's tabs: each ``render_<tab>(aid, meta, state, step)`` returns the tab's components.

Each figure fetches only the slice it shows (one quantity, or one checkpoint) through
``frontend.client``, which caches finished analyses' slices on the server.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from dash import html

from frontend import client, data, tabs_dynamics, tabs_fields
from frontend import figures as F
from frontend import figures_measures as M
from frontend.components import csv_href, empty_state, error_state, figure_card
from frontend.figures_chi import order_chi_figure
from frontend.findings_view import findings_table
from phasescope.measures import measures, quantities

__all__ = ["PER_CHECKPOINT", "RENDERERS", "pick_layer_heads"]

MAX_LINES = 64  # more (layer, head) lines than this and "all layers" shows the last layer only


def _slice(
    aid: str, meta: dict[str, Any], measure: str, quantity: str | None = None, checkpoint: int | None = None
) -> pd.DataFrame:
    return client.slice_table(aid, measure, quantity, checkpoint, finished=meta["finished"])


def pick_layer_heads(
    frame: pd.DataFrame, meta: dict[str, Any], state: dict[str, Any]
) -> tuple[pd.DataFrame, str]:
    """Rows of the chosen layer/head ("all" = every one), and a note when the selection was narrowed."""
    note = ""
    layer, head = state["layer"], state["head"]
    if layer == "all" and head == "all" and meta["n_layers"] * meta["n_heads"] > MAX_LINES:
        layer = meta["n_layers"] - 1
        note = f"{meta['n_layers']} layers × {meta['n_heads']} heads: showing layer {layer}; choose a layer above."
    if layer != "all" and "layer" in frame:
        frame = frame[frame["layer"] == layer]
    if head != "all" and "head" in frame:
        frame = frame[frame["head"] == head]
    return frame, note


def _shape(meta: dict[str, Any]) -> tuple[int, int]:
    return meta["n_layers"] or 1, meta["n_heads"] or 1


def _note(text: str) -> Any:
    return html.Div(text, className="muted") if text else None


def _absent(meta: dict[str, Any], measure: str, what: str) -> Any:
    if measure in meta["measures"]:
        return None
    return empty_state(
        f"{what} not measured in this analysis (it ran: {', '.join(meta['measures'])}). "
        f"Start a new analysis with “{measure}” to see it."
    )


def render_overview(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    options = meta["options"]
    quantity = state["quantity"] if state["quantity"] in options else (options[0] if options else None)
    loss = _slice(aid, meta, "loss") if "loss" in meta["measures"] else None
    order = pd.DataFrame(columns=["checkpoint", "layer", "head", "value"])
    note = ""
    if quantity:
        measure, q = quantity.split(".")
        order, note = pick_layer_heads(_slice(aid, meta, measure, q), meta, state)
    transition = data.transition(aid, meta)
    fig = F.overview_figure(
        order, loss, quantity or "", transition=transition, cursor=step, xscale=state["xscale"]
    )
    fig.update_layout(
        title={"text": f"Phase diagram: {F.LABELS.get(quantity or '', quantity or 'no per-head measure')}"}
    )
    if transition and transition.get("step") is not None:
        said = f"{transition['label']}, marked in red ({transition['method']})."
    elif transition:
        said = f"No transition detected ({transition['method']})."
    else:
        said = "No transition marked: the analysis's findings come when it has finished."
    if transition and transition.get("summary"):
        said += f" Summary: {transition['summary']}."
    children: list[Any] = [
        html.Div(said, id="transition-note", className="kv"),
        _note(note),
        figure_card(
            "overview",
            fig,
            csv_href(
                aid,
                measure=quantity.split(".")[0] if quantity else "loss",
                quantity=quantity.split(".")[1] if quantity else None,
            ),
        ),
    ]
    # m(t) with its band above its susceptibility χ(t) (frontend/figures_chi.py): the χ rows are
    # fetched by quantity, and only when the registry declares them.
    kw = {
        "findings": meta.get("findings"),
        "transition": transition,
        "cursor": step,
        "xscale": state["xscale"],
        "yscale": state["yscale"],
        "shape": _shape(meta),
    }
    if quantity and len(order):
        measure, q = quantity.split(".")
        chi = None
        if f"{measure}.{q}_chi" in dict(quantities(measures_run=[measure])):
            chi, _ = pick_layer_heads(_slice(aid, meta, measure, f"{q}_chi"), meta, state)
        children.append(
            figure_card(
                "order-chi",
                order_chi_figure(order, chi, quantity, **kw),
                csv_href(aid, measure=measure, quantity=f"{q}_chi" if chi is not None else q),
            )
        )
    if loss is not None and (loss["quantity"] == "loss_chi").any():
        rows = loss[loss["quantity"] == "loss"]
        chi = loss[loss["quantity"] == "loss_chi"]
        children.append(
            figure_card(
                "loss-chi",
                order_chi_figure(rows, chi, "loss.loss", **kw),
                csv_href(aid, measure="loss", quantity="loss_chi"),
            )
        )
    children.append(findings_table(meta.get("findings")))
    return children


def render_entropy(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    absent = _absent(meta, "entropy", "Attention entropy")
    if absent:
        return [absent]
    shape, kw = _shape(meta), {"xscale": state["xscale"], "yscale": state["yscale"], "cursor": step}
    cards, note = [], ""
    for quantity, title in (
        ("entropy_mean", "Entropy per head"),
        ("entropy_norm_mean", "Normalised entropy per head"),
        ("k90_mean", "k90 per head"),
    ):
        frame, note = pick_layer_heads(_slice(aid, meta, "entropy", quantity), meta, state)
        label = F.LABELS[f"entropy.{quantity}"]
        cards.append(
            figure_card(
                f"entropy-{quantity}",
                F.curves_figure(frame, title=title, ytitle=label, shape=shape, **kw),
                csv_href(aid, measure="entropy", quantity=quantity, layer=state["layer"], head=state["head"]),
            )
        )
    profile, _ = pick_layer_heads(_slice(aid, meta, "entropy", "entropy", step), meta, state)
    cards.insert(
        2,
        figure_card(
            "entropy-profile",
            F.profile_figure(profile, step, shape, state["yscale"]),
            csv_href(aid, measure="entropy", quantity="entropy", checkpoint=step),
        ),
    )
    return [_note(note), html.Div(cards, className="grid2")]


def render_thermo(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    absent = _absent(meta, "thermo", "Thermodynamics")
    if absent:
        return [absent]
    at_step, note = pick_layer_heads(_slice(aid, meta, "thermo", checkpoint=step), meta, state)
    sweep = at_step[at_step["beta"].notna()] if "beta" in at_step else at_step.iloc[0:0]
    stars_now = at_step[at_step["quantity"].str.startswith("beta_star")]
    stars = pd.concat(
        [_slice(aid, meta, "thermo", q) for q in ("beta_star", "beta_star_censored", "beta_star_bound")]
    )
    stars, _ = pick_layer_heads(stars, meta, state)
    shape = _shape(meta)
    return [
        _note(note),
        figure_card(
            "thermo-sweep",
            M.thermo_figure(sweep, stars_now, shape, step, state["beta"], state["yscale"]),
            csv_href(aid, measure="thermo", checkpoint=step, layer=state["layer"], head=state["head"]),
        ),
        figure_card(
            "thermo-beta-star",
            M.beta_star_figure(
                stars, shape, xscale=state["xscale"], cursor=step, transition=data.transition(aid, meta)
            ),
            csv_href(aid, measure="thermo", quantity="beta_star"),
        ),
    ]


def render_spectra(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    absent = _absent(meta, "spectra", "Spectra")
    if absent:
        return [absent]
    kw = {"xscale": "linear", "yscale": state["yscale"], "shape": _shape(meta)}
    at_step = _slice(aid, meta, "spectra", checkpoint=step)
    heads, note = pick_layer_heads(at_step[at_step["head"].notna()], meta, state)
    cards = []
    for quantity, title in (
        ("sigma", "Singular values of attention matrices A"),
        ("qk_sigma", "Singular values of W_QK"),
        ("ov_sigma", "Singular values of W_OV"),
    ):
        frame = heads[heads["quantity"] == quantity]
        cards.append(
            figure_card(
                f"spectra-{quantity}",
                F.curves_figure(
                    frame, x="index", title=f"{title} at step {step}", xtitle="index k", ytitle="σ_k", **kw
                ),
                csv_href(aid, measure="spectra", quantity=quantity, checkpoint=step),
            )
        )
    weights = at_step[at_step["matrix"].notna()] if "matrix" in at_step else at_step.iloc[0:0]
    matrices = sorted(weights["matrix"].unique()) if len(weights) else []
    matrix = state["matrix"] if state["matrix"] in matrices else (matrices[0] if matrices else None)
    if matrix:
        rows = weights[weights["matrix"] == matrix]
        if rows["layer"].notna().any():
            layer = state["layer"] if state["layer"] != "all" else int(rows["layer"].min())
            rows = rows[rows["layer"] == layer]
            where = f"{matrix}, layer {layer}"
        else:
            where = matrix
        eigs = rows[rows["quantity"] == "esd_eigenvalue"].sort_values("index")["value"].to_numpy()
        scalars = {
            q: float(v) for q, v in rows[rows["index"].isna()].groupby("quantity")["value"].first().items()
        }
        cards.append(
            figure_card(
                "spectra-esd",
                M.esd_figure(eigs, scalars, f"ESD of {where} at step {step}"),
                csv_href(aid, measure="spectra", quantity="esd_eigenvalue", checkpoint=step),
            )
        )
    alpha = pd.concat([_slice(aid, meta, "spectra", q) for q in ("esd_alpha", "esd_alpha_se")])
    if matrix and len(alpha):
        alpha = alpha[alpha["matrix"] == matrix] if state["matrix"] else alpha
    cards.append(
        figure_card(
            "spectra-alpha",
            M.alpha_figure(alpha, xscale=state["xscale"], cursor=step),
            csv_href(aid, measure="spectra", quantity="esd_alpha"),
        )
    )
    return [_note(note), html.Div(cards, className="grid2")]


def render_landscape(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    # The measures the registry puts on this tab (Measure.tab).
    present = [m.name for m in measures(tab="landscape") if m.name in meta["measures"]]
    if not present:
        return [
            empty_state(
                "Energy landscape not measured in this analysis: loss surfaces (landscape), sharpness, "
                "the local learning coefficient (llc) and attention-energy histograms (energies) appear "
                "here for analyses that ran those measures.",
                id="landscape-empty",
            )
        ]
    kw = {"xscale": state["xscale"], "yscale": state["yscale"], "cursor": step}
    cards: list[Any] = []
    if "landscape" in present:
        surface = _slice(aid, meta, "landscape", "loss_surface", step)
        cards.append(
            figure_card(
                "landscape-surface",
                M.surface_figure(surface, step)
                if len(surface)
                else F.empty_figure(f"no loss surface at step {step}"),
                csv_href(aid, quantity="loss_surface", checkpoint=step),
            )
        )
    if "sharpness" in present:
        eig = _slice(aid, meta, "sharpness", "hessian_eigenvalue")
        top = eig.groupby("checkpoint", as_index=False)["value"].max().assign(layer=pd.NA, head=pd.NA)
        cards.append(
            figure_card(
                "landscape-sharpness",
                F.curves_figure(
                    top,
                    title="Sharpness: top Hessian eigenvalue",
                    ytitle="λ_max of the Hessian (nats / unit²)",
                    **kw,
                ),
                csv_href(aid, quantity="hessian_eigenvalue"),
            )
        )
    if "llc" in present:
        llc = _slice(aid, meta, "llc", "llc_mean")
        std = _slice(aid, meta, "llc", "llc_std").set_index("checkpoint")["value"]
        cards.append(
            figure_card(
                "landscape-llc",
                F.curves_figure(
                    llc,
                    title="Local learning coefficient (± chain spread)",
                    ytitle=F.LABELS.get("llc.llc_mean", "LLC"),
                    error=llc["checkpoint"].map(std),
                    **kw,
                ),
                csv_href(aid, quantity="llc_mean"),
            )
        )
    if "energies" in present:
        hist, note = pick_layer_heads(_slice(aid, meta, "energies", "energy_hist", step), meta, state)
        cards.append(
            figure_card(
                "landscape-energies",
                F.curves_figure(
                    hist,
                    x="x",
                    title=f"Attention energies E = −s per head at step {step}",
                    xtitle="energy E (score units)",
                    ytitle="count of (query, key) entries",
                    xscale="linear",
                    yscale=state["yscale"],
                    shape=_shape(meta),
                ),
                csv_href(aid, quantity="energy_hist", checkpoint=step),
            )
        )
    return [html.Div(cards, className="grid2")]


def render_patterns(aid: str, meta: dict[str, Any], state: dict[str, Any], step: int) -> list[Any]:
    try:
        index = client.api().patterns(aid)
    except client.ApiError as exc:
        return [error_state(exc.message)]
    kept = index.get("checkpoints", [])
    if not kept:
        return [
            empty_state(
                "No attention patterns were kept for this analysis (it ran before workers stored them)."
            )
        ]
    at = min(kept, key=lambda s: abs(s - step))
    layer = state["layer"] if state["layer"] != "all" else index["n_layers"] - 1
    head = state["head"] if state["head"] != "all" else 0
    prompt = min(state["prompt"], index["n_prompts"] - 1)
    try:
        body = client.api().patterns(aid, checkpoint=at, layer=int(layer), head=int(head), prompt=int(prompt))
    except client.ApiError as exc:
        return [error_state(exc.message)]
    title = f"Attention pattern L{layer}H{head}, prompt {prompt}, step {at}"
    note = (
        "" if at == step else f"Patterns are kept at {len(kept)} checkpoints; showing the nearest, step {at}."
    )
    return [_note(note), figure_card("pattern", F.pattern_figure(body["pattern"], body["tokens"], title))]


# The figures (figure_card names) that show one checkpoint, per tab: a slider step redraws these only;
# the others are lines over training steps whose cursor moves in the browser (assets/slider.js). The
# patterns tab is redrawn whole (its note names the nearest kept checkpoint).
PER_CHECKPOINT = {
    "entropy": {"entropy-profile"},
    "thermo": {"thermo-sweep"},
    "spectra": {"spectra-sigma", "spectra-qk_sigma", "spectra-ov_sigma", "spectra-esd"},
    "landscape": {"landscape-surface", "landscape-energies"},
    "dynamics": tabs_dynamics.PER_CHECKPOINT,
    "fields": tabs_fields.PER_CHECKPOINT,
    "patterns": {"pattern"},
}

RENDERERS = {
    "overview": render_overview,
    "entropy": render_entropy,
    "thermo": render_thermo,
    "spectra": render_spectra,
    "landscape": render_landscape,
    "dynamics": tabs_dynamics.render_dynamics,  # issue 15's tabs, in their own modules
    "fields": tabs_fields.render_fields,
    "patterns": render_patterns,
}
