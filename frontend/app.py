"""The Dash app: a navigation bar over the registered pages (``frontend/pages/``).

``create_dash_app`` builds it once per process (Dash pages register into a process-wide registry);
``frontend.server`` mounts its Flask server in FastAPI so one URL serves the API and the dashboard,
and points ``frontend.client`` at the API.
"""

from __future__ import annotations

from pathlib import Path

import dash
from dash import dcc, html

__all__ = ["create_dash_app"]

_APP: dash.Dash | None = None


def _navbar() -> html.Nav:
    links = [("Catalog", "/"), ("New analysis", "/new"), ("Compare", "/compare"), ("Ensemble", "/ensemble")]
    return html.Nav(
        className="navbar",
        children=[
            dcc.Link("phasescope", href="/", className="brand"),
            *[dcc.Link(text, href=href, className="navlink") for text, href in links],
            html.A("API", href="/docs", className="navlink right", target="_blank"),
        ],
    )


def _warm_up() -> None:
    """Build one figure of each kind now: plotly imports its validators lazily (about a second), and
    that second belongs to the server's start, not to the first person's first page."""
    import pandas as pd

    from frontend import figures

    order = pd.DataFrame(
        {"checkpoint": [1, 2, 3], "layer": [0, 0, 0], "head": [0, 0, 0], "value": [0.1, 0.5, 0.9]}
    )
    loss = pd.DataFrame({"checkpoint": [1, 2, 3], "quantity": "loss", "value": [3.0, 2.0, 1.0]})
    figures.overview_figure(
        order, loss, "heads.induction_score", transition={"step": 2}, cursor=3
    ).to_plotly_json()
    figures.pattern_figure([[1.0, 0.0], [0.5, 0.5]], ["a", "b"], "warm-up").to_plotly_json()


def create_dash_app() -> dash.Dash:
    """The dashboard (built once per process). ``frontend.server`` points it at the API."""
    global _APP
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
        # The user's API token for writes, kept in this browser tab's sessionStorage (pages/new.py): the
        # server never holds one, so a request without it cannot write.
        token = dcc.Store(id="auth-token", storage_type="session")
        app.layout = html.Div([_navbar(), token, html.Main(dash.page_container, className="page")])
        # Dash finishes its set-up on the first request it serves: the page router registers a page-title
        # callback there, as an inline script. Serve one now, so that the inline scripts (and so the CSP
        # hashes frontend.server allows) are complete before the first person's request.
        app.server.test_client().get("/_dash-dependencies")
        _APP = app
        _warm_up()
    return _APP
