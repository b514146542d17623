"""Compare: two analyses (two models, or two seeds) overlaid on one checkpoint axis; state in the URL."""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, dcc, html

from frontend import client
from frontend import figures as F
from frontend.components import error_state, figure_card
from phasescope.measures import quantities

dash.register_page(__name__, path="/compare", name="Compare", title="Compare · phasescope")

AGGREGATES = ("max", "mean", "min")


def _analysis_options() -> list[dict[str, str]]:
    items = client.api().list_analyses(limit=200).get("items", [])
    return [{"label": f"{a['model']} · {a['id'][:8]} · {a['status']}", "value": a["id"]} for a in items]


def compare_quantities() -> dict[str, bool]:
    """What the comparison offers (registry quantities offered to ``"compare"``), each with whether it
    is per head (then aggregated over heads), read when the page renders."""
    return {key: "head" in quantity.dims for key, quantity in quantities(offered="compare")}


def layout(
    a: str | None = None,
    b: str | None = None,
    quantity: str = "loss.loss",
    layer: str = "all",
    agg: str = "max",
    xscale: str = "log",
    yscale: str = "linear",
    **_: Any,
) -> html.Div:
    try:
        options = _analysis_options()
    except client.ApiError as exc:
        return html.Div([html.H1("Compare analyses"), error_state(exc.message)])
    ids = [o["value"] for o in options]
    a = a if a in ids else (ids[0] if ids else None)
    b = b if b in ids else (ids[1] if len(ids) > 1 else None)
    offered = compare_quantities()
    return html.Div(
        [
            html.H1("Compare analyses"),
            html.Div(
                className="controls",
                children=[
                    html.Div(
                        [html.Label("Analysis A"), dcc.Dropdown(id="cmp-a", options=options, value=a)],
                        className="control wide",
                    ),
                    html.Div(
                        [html.Label("Analysis B"), dcc.Dropdown(id="cmp-b", options=options, value=b)],
                        className="control wide",
                    ),
                    html.Div(
                        [
                            html.Label("Quantity"),
                            dcc.Dropdown(
                                id="cmp-quantity",
                                clearable=False,
                                options=[{"label": F.LABELS.get(q, q), "value": q} for q in offered],
                                value=quantity if quantity in offered else "loss.loss",
                            ),
                        ],
                        className="control wide",
                    ),
                    html.Div(
                        [
                            html.Label("Layer"),
                            dcc.Input(
                                id="cmp-layer", value=str(layer), debounce=True, style={"width": "60px"}
                            ),
                        ],
                        className="control",
                    ),
                    html.Div(
                        [
                            html.Label("Over heads"),
                            dcc.RadioItems(
                                id="cmp-agg",
                                options=list(AGGREGATES),
                                value=agg if agg in AGGREGATES else "max",
                                inline=True,
                            ),
                        ],
                        className="control",
                    ),
                    html.Div(
                        [
                            html.Label("Step axis"),
                            dcc.RadioItems(
                                id="cmp-xscale",
                                options=["log", "linear"],
                                value=xscale if xscale in ("log", "linear") else "log",
                                inline=True,
                            ),
                        ],
                        className="control",
                    ),
                    html.Div(
                        [
                            html.Label("Value axis"),
                            dcc.RadioItems(
                                id="cmp-yscale",
                                options=["linear", "log"],
                                value=yscale if yscale in ("log", "linear") else "linear",
                                inline=True,
                            ),
                        ],
                        className="control",
                    ),
                ],
            ),
            html.Div(id="cmp-content"),
            dcc.Location(id="cmp-url", refresh=False),
        ]
    )


def _series(aid: str, quantity: str, layer: str, agg: str) -> tuple[str, pd.DataFrame] | str:
    state = client.status(aid)
    measure, q = quantity.split(".")
    label = f"{state['model']} · {aid[:8]}"
    if measure not in state["measures"]:
        return f"{label} did not measure {measure}"
    frame = client.slice_table(aid, measure, q, finished=state["status"] == "finished")
    if layer not in ("", "all") and frame["layer"].notna().any():
        frame = frame[frame["layer"] == int(layer)]
    return label, _aggregate(frame, agg)


def _aggregate(frame: pd.DataFrame, agg: str) -> pd.DataFrame:
    """One value per checkpoint: ``agg`` over the heads. The max and the min are one head's row, so
    they keep that row's interval (se, ci_lo, ci_hi); a mean over heads has none (its heads share
    the prompts: their errors are not independent)."""
    spread = [c for c in ("se", "ci_lo", "ci_hi") if c in frame.columns]
    if agg in ("max", "min") and spread and len(frame):
        frame = frame.dropna(subset=["value"])
        grouped = frame.groupby("checkpoint")["value"]
        rows = frame.loc[grouped.idxmax() if agg == "max" else grouped.idxmin()]
        return rows[["checkpoint", "value", *spread]].reset_index(drop=True)
    return frame.groupby("checkpoint", as_index=False)["value"].agg(agg)


@dash.callback(
    Output("cmp-content", "children"),
    Input("cmp-a", "value"),
    Input("cmp-b", "value"),
    Input("cmp-quantity", "value"),
    Input("cmp-layer", "value"),
    Input("cmp-agg", "value"),
    Input("cmp-xscale", "value"),
    Input("cmp-yscale", "value"),
)
def _compare(
    a: str | None, b: str | None, quantity: str, layer: str, agg: str, xscale: str, yscale: str
) -> Any:
    series, problems = {}, []
    for aid in (a, b):
        if not aid:
            continue
        try:
            got = _series(aid, quantity, str(layer or "all"), agg)
        except (client.ApiError, ValueError) as exc:
            got = str(getattr(exc, "message", exc))
        if isinstance(got, str):
            problems.append(got)
        else:
            label, frame = got
            series[label if label not in series else label + " (B)"] = frame
    per_head = compare_quantities().get(quantity, True)
    title = F.LABELS.get(quantity, quantity) + (f", {agg} over heads" if per_head else "")
    fig = F.compare_figure(series, title, xscale=xscale, yscale=yscale)
    return [*[error_state(p) for p in problems], figure_card("compare", fig)]


# The compare view's state lives in the URL too.
dash.clientside_callback(
    """
    function(a, b, quantity, layer, agg, xscale, yscale) {
        const p = new URLSearchParams();
        const s = {a: a, b: b, quantity: quantity, layer: layer, agg: agg, xscale: xscale, yscale: yscale};
        for (const k in s) { if (s[k] !== null && s[k] !== undefined && s[k] !== "") { p.set(k, String(s[k])); } }
        window.history.replaceState(window.history.state, "", window.location.pathname + "?" + p.toString());
        return window.dash_clientside.no_update;
    }
    """,
    Output("cmp-url", "search"),
    Input("cmp-a", "value"),
    Input("cmp-b", "value"),
    Input("cmp-quantity", "value"),
    Input("cmp-layer", "value"),
    Input("cmp-agg", "value"),
    Input("cmp-xscale", "value"),
    Input("cmp-yscale", "value"),
)
