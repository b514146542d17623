"""Building blocks shared by the pages: figure cards (PNG/SVG/CSV), empty, loading and error states."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import dash
import plotly.graph_objects as go
from dash import MATCH, Input, Output, dcc, html

from frontend import client

__all__ = ["csv_href", "empty_state", "error_state", "figure_card", "status_badge"]

GRAPH_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"scale": 2}}


def csv_href(aid: str, **filters: Any) -> str:
    """The API URL of a slice of the tidy table as CSV (same origin unless the API runs elsewhere)."""
    root = "" if client.api_base() == client.IN_PROCESS else client.api_base()
    params = {k: v for k, v in filters.items() if v is not None and v != "all"}
    return f"{root}/api/v1/analyses/{aid}/results?{urlencode({**params, 'format': 'csv'})}"


def figure_card(name: str, figure: go.Figure, csv: str | None = None, wide: bool = False) -> html.Div:
    """A graph with its own PNG / SVG download (Plotly's renderer) and a CSV link to its data."""
    tools = [
        html.Button(
            "PNG", id={"type": "fig-png", "name": name}, className="secondary", title="Download as PNG"
        ),
        html.Button(
            "SVG", id={"type": "fig-svg", "name": name}, className="secondary", title="Download as SVG"
        ),
    ]
    if csv:
        tools.append(
            html.A(
                "CSV",
                href=csv,
                className="button secondary",
                title="This figure's data as CSV",
                id={"type": "fig-csv", "name": name},
                target="_blank",
            )
        )
    config = {**GRAPH_CONFIG, "toImageButtonOptions": {"scale": 2, "filename": f"phasescope-{name}"}}
    return html.Div(
        className="card" + (" wide" if wide else ""),
        children=[
            html.Div(tools, className="figtools"),
            dcc.Graph(id={"type": "fig", "name": name}, figure=figure, config=config),
            dcc.Store(id={"type": "fig-dl", "name": name}),
        ],
    )


def empty_state(message: str, id: str | None = None) -> html.Div:
    return html.Div(message, className="empty", **({"id": id} if id else {}))


def error_state(message: str, id: str = "error-message") -> html.Div:
    return html.Div(message, className="error", id=id)


def status_badge(status: str) -> html.Span:
    return html.Span(status, className=f"status status-{status}")


# PNG/SVG through Plotly's own exporter, in the browser: no server-side renderer needed.
for _fmt in ("png", "svg"):
    dash.clientside_callback(
        f"""
        function(n, id) {{
            if (!n) {{ return window.dash_clientside.no_update; }}
            const key = JSON.stringify({{name: id.name, type: "fig"}});
            const holder = document.getElementById(key);
            const gd = holder && holder.querySelector('.js-plotly-plot');
            if (gd) {{ Plotly.downloadImage(gd, {{format: '{_fmt}', filename: 'phasescope-' + id.name, scale: 2}}); }}
            return n;
        }}
        """,
        Output({"type": "fig-dl", "name": MATCH}, "data", allow_duplicate=True),
        Input({"type": f"fig-{_fmt}", "name": MATCH}, "n_clicks"),
        dash.State({"type": f"fig-{_fmt}", "name": MATCH}, "id"),
        prevent_initial_call=True,
    )
