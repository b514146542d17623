"""Home: the models that can be analysed and the recent analyses, with status and progress."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, dcc, html

from frontend import client
from frontend.components import empty_state, error_state, status_badge

dash.register_page(__name__, path="/", name="Catalog", title="phasescope")


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.Div(
                className="header",
                children=[
                    html.H1("Models and analyses"),
                    dcc.Link("New analysis", href="/new", className="button"),
                ],
            ),
            html.H2("Recent analyses"),
            html.Div(id="home-analyses", children=_analyses()[0]),
            dcc.Interval(id="home-tick", interval=2000),
            html.H2("Models"),
            html.Div(id="home-models", children=_models()),
        ]
    )


def _models() -> Any:
    try:
        body = client.api().models(include_tl=True)
    except client.ApiError as exc:
        return error_state(f"The API could not list models: {exc.message}")
    rows = [
        html.Tr(
            [
                html.Td(
                    dcc.Link(m["model"], href=f"/new?model={m['model']}") if m["available"] else m["model"]
                ),
                html.Td(m["kind"]),
                html.Td("" if m["n_checkpoints"] is None else m["n_checkpoints"]),
                html.Td(m.get("description") or ""),
                html.Td(
                    ""
                    if m["available"]
                    else html.Span(f"not trained: phasescope zoo train {m['model']}", className="muted")
                ),
            ]
        )
        for m in body.get("models", [])
    ]
    head = html.Tr([html.Th(t) for t in ("model", "kind", "checkpoints", "description", "")])
    tl = body.get("transformer_lens", [])
    return html.Div(
        [
            html.Table([html.Thead(head), html.Tbody(rows)], className="simple card")
            if rows
            else empty_state("No local or zoo models yet."),
            html.Details(
                [
                    html.Summary(
                        f"{len(tl)} TransformerLens pretrained names (downloaded on first use; need internet)"
                    ),
                    html.Div(", ".join(tl), className="muted", style={"fontSize": "12px"}),
                ]
            )
            if tl
            else None,
        ]
    )


def _transition(findings: dict[str, Any] | None) -> str:
    """The transition the analysis's findings mark, in a few words (— before it has finished)."""
    if not findings:
        return "—"
    index = findings.get("marked")
    if index is None:
        return "none detected"
    t = findings["transitions"][index]
    return f"≈ step {t['step']:.0f} ({t['quantity']})"


def _analyses() -> tuple[Any, bool]:
    """The table of recent analyses, and whether any of them is still running."""
    try:
        body = client.api().list_analyses(limit=30)
    except client.ApiError as exc:
        return error_state(f"The API could not list analyses: {exc.message}"), False
    items = body.get("items", [])
    if not items:
        return empty_state("No analyses yet: start one from “New analysis”."), False
    rows = []
    for a in items:
        p = a.get("progress", {})
        rows.append(
            html.Tr(
                [
                    html.Td(dcc.Link(a["id"], href=f"/analyses/{a['id']}", className="analysis-link")),
                    html.Td(a.get("model")),
                    html.Td(", ".join(a.get("measures", []))),
                    html.Td(status_badge(a["status"])),
                    html.Td(
                        [
                            html.Progress(value=str(p.get("done", 0)), max=str(max(1, p.get("total", 1)))),
                            f" {p.get('done', 0)}/{p.get('total', 0)}",
                        ]
                    ),
                    html.Td(_transition(a.get("findings")), className="transition"),
                ]
            )
        )
    head = html.Tr(
        [html.Th(t) for t in ("analysis", "model", "measures", "status", "progress", "transition")]
    )
    busy = any(a["status"] in ("queued", "running") for a in items)
    return html.Table([html.Thead(head), html.Tbody(rows)], className="simple card"), busy


@dash.callback(
    Output("home-analyses", "children"),
    Output("home-tick", "disabled"),
    Input("home-tick", "n_intervals"),
    prevent_initial_call=True,
)
def _refresh(_: int) -> tuple[Any, bool]:
    table, busy = _analyses()
    return table, not busy
