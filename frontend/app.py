"""The Dash app: a navigation bar over the registered pages (``frontend/pages/``).

``create_dash_app`` builds it once per process (Dash pages register into a process-wide registry);
``frontend.server`` mounts its Flask server in FastAPI so one URL serves the API and the dashboard.
"""

from __future__ import annotations

from pathlib import Path

import dash
from dash import dcc, html

from frontend import client

__all__ = ["create_dash_app"]

_APP: dash.Dash | None = None


def _navbar() -> html.Nav:
    links = [("Catalog", "/"), ("New analysis", "/new"), ("Compare", "/compare")]
    return html.Nav(
        className="navbar",
        children=[
            dcc.Link("phasescope", href="/", className="brand"),
            *[dcc.Link(text, href=href, className="navlink") for text, href in links],
            html.A("API", href="/docs", className="navlink right", target="_blank"),
        ],
    )


def create_dash_app(api_url: str | None = None, token: str | None = None) -> dash.Dash:
    """The dashboard (built once per process; later calls only reconfigure the API it talks to).

    Args:
        api_url: the API's base URL; None = the server that serves the page (the combined app).
        token: the API write token, sent when submitting analyses.
    """
    global _APP
    client.configure(api_url, token)
    if _APP is None:
        here = Path(__file__).parent
        app = dash.Dash(
            __name__,
            use_pages=True,
            pages_folder=str(here / "pages"),
            assets_folder=str(here / "assets"),
            suppress_callback_exceptions=True,
            title="phasescope",
            update_title=None,
        )
        app.layout = html.Div([_navbar(), html.Main(dash.page_container, className="page")])
        _APP = app
    return _APP
