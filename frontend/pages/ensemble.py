"""Ensemble: one order parameter over several analyses (the seeds of a zoo recipe), its collapse and
the per-seed steps; state in the URL (``/ensemble?analyses=<id>,<id>&quantity=loss.loss``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import dash
from dash import Input, Output, dcc, html

from frontend import client
from frontend import figures_ensemble as FE
from frontend.components import error_state, figure_card
from frontend.plotting import LABELS
from phasescope.measures.registry import order_parameters

dash.register_page(__name__, path="/ensemble", name="Ensemble", title="Ensemble · phasescope")

MAX_ANALYSES = 16


def _finished_options() -> list[dict[str, str]]:
    items = client.api().list_analyses(limit=200).get("items", [])
    return [
        {"label": f"{a['model']} · {a['id'][:8]}", "value": a["id"]}
        for a in items
        if a["status"] == "finished"
    ]


def _quantity_options() -> list[dict[str, str]]:
    return [
        {"label": f"{LABELS.get(op.key, op.key)} ({op.key})", "value": op.key} for op in order_parameters()
    ]


def layout(
    analyses: str | None = None, quantity: str = "loss.loss", xscale: str = "log", **_: Any
) -> html.Div:
    try:
        options = _finished_options()
    except client.ApiError as exc:
        return html.Div([html.H1("Seed ensemble"), error_state(exc.message)])
    known = {o["value"] for o in options}
    chosen = [a for a in (analyses or "").split(",") if a in known][:MAX_ANALYSES]
    quantities = _quantity_options()
    keys = {q["value"] for q in quantities}
    return html.Div(
        [
            html.H1("Seed ensemble"),
            html.P(
                "Analyses of the same recipe with different seeds: does each change phase at the same "
                "step, and do the transitions share one shape? (docs/measures.md, “Seed ensembles”)",
                className="hint",
            ),
            html.Div(
                className="controls",
                children=[
                    html.Div(
                        [
                            html.Label("Analyses (2–16, one per seed)"),
                            dcc.Dropdown(id="ens-analyses", options=options, value=chosen, multi=True),
                        ],
                        className="control wide",
                    ),
                    html.Div(
                        [
                            html.Label("Order parameter"),
                            dcc.Dropdown(
                                id="ens-quantity",
                                clearable=False,
                                options=quantities,
                                value=quantity if quantity in keys else "loss.loss",
                            ),
                        ],
                        className="control wide",
                    ),
                    html.Div(
                        [
                            html.Label("Step axis"),
                            dcc.RadioItems(
                                id="ens-xscale",
                                options=["log", "linear"],
                                value=xscale if xscale in ("log", "linear") else "log",
                                inline=True,
                            ),
                        ],
                        className="control",
                    ),
                ],
            ),
            html.Div(id="ens-content"),
            dcc.Location(id="ens-url", refresh=False),
        ]
    )


def _csv_href(analyses: list[str], quantity: str) -> str:
    query = urlencode({"analyses": ",".join(analyses), "quantity": quantity, "format": "csv"})
    return f"/api/v1/ensembles?{query}"


@dash.callback(
    Output("ens-content", "children"),
    Input("ens-analyses", "value"),
    Input("ens-quantity", "value"),
    Input("ens-xscale", "value"),
)
def _ensemble(analyses: list[str] | None, quantity: str, xscale: str) -> Any:
    analyses = list(analyses or [])
    if len(analyses) < 2:
        return error_state("choose at least two finished analyses (one per seed) to compare", id="ens-hint")
    try:
        body = client.api().ensemble(analyses, quantity)
    except client.ApiError as exc:
        return error_state(exc.message)
    names = {a["value"]: a["label"].split(" · ")[0] for a in _finished_options()}
    cards: list[Any] = []
    for layer in body["layers"]:
        tag = "" if layer["layer"] is None else f"-L{layer['layer']}"
        heading = "" if layer["layer"] is None else f"Layer {layer['layer']}"
        csv = _csv_href(analyses, quantity)
        cards += [html.H2(heading)] if heading else []
        cards += [
            figure_card(f"ensemble-collapse{tag}", FE.collapse_figure(layer, names, quantity), csv=csv),
            figure_card(f"ensemble-steps{tag}", FE.steps_figure(layer, names), csv=csv),
            figure_card(f"ensemble-raw{tag}", FE.raw_figure(layer, names, quantity, xscale), csv=csv),
        ]
        missing = [s for s in layer["seeds"] if not s["detected"]]
        if missing:
            cards.append(
                error_state(
                    "; ".join(f"{names.get(s['id'], s['id'][:8])}: {s['reason']}" for s in missing),
                    id=f"ens-missing{tag}",
                )
            )
    return cards


# The ensemble view's state lives in the URL too.
dash.clientside_callback(
    """
    function(analyses, quantity, xscale) {
        const p = new URLSearchParams();
        if (analyses && analyses.length) { p.set("analyses", analyses.join(",")); }
        if (quantity) { p.set("quantity", quantity); }
        if (xscale) { p.set("xscale", xscale); }
        window.history.replaceState(window.history.state, "", window.location.pathname + "?" + p.toString());
        return window.dash_clientside.no_update;
    }
    """,
    Output("ens-url", "search"),
    Input("ens-analyses", "value"),
    Input("ens-quantity", "value"),
    Input("ens-xscale", "value"),
)
