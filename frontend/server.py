"""One server for both: the FastAPI app (``/api/v1``, ``/docs``) with the Dash dashboard mounted at ``/``.

``phasescope api`` serves :func:`create_combined_app`. The dashboard calls the API in the same process
(``frontend.client.InProcessTransport``), or at ``Settings.dashboard_api_url`` when that is set
(:func:`serve_dashboard` runs the dashboard alone, on its own port, against such an API). The address
is never taken from a request, and the dashboard holds no token: writes carry the user's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from a2wsgi import WSGIMiddleware
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from phasescope.config import Settings, get_settings

__all__ = ["create_combined_app", "create_dashboard_asgi", "serve_dashboard"]


class _DashboardMount:
    """The Dash app's Flask server as an ASGI app (a2wsgi runs it in a thread pool).

    It tells the in-process transport which event loop serves requests, so that the Dash callbacks
    (in a2wsgi's threads) can call the API on it.
    """

    def __init__(self, dash_app: Any, transport: Any = None) -> None:
        self.wsgi = WSGIMiddleware(dash_app.server, workers=16)
        self.transport = transport

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.transport is not None:  # the loop of the server running now (a restart brings a new one)
            self.transport.loop = asyncio.get_running_loop()
        await self.wsgi(scope, receive, send)


def create_dashboard_asgi(api_url: str | None = None, app: Any = None) -> Any:
    """The dashboard as an ASGI app, calling the API at ``api_url``, else ``app`` in this process."""
    from frontend import client
    from frontend.app import create_dash_app

    if not api_url and app is None:
        raise ValueError("the dashboard needs the API: an api_url, or the app to run beside")
    dash_app = create_dash_app()
    transport = None if api_url else client.InProcessTransport(app)
    client.configure(api_url=api_url, transport=transport)
    return _DashboardMount(dash_app, transport)


def create_combined_app(settings: Settings | None = None, api_url: str | None = None) -> FastAPI:
    """The API under ``/api/v1`` and the dashboard at ``/``, in one ASGI app.

    Args:
        settings: the API's settings (default: the process's).
        api_url: where the dashboard reaches the API (default ``Settings.dashboard_api_url``, else this
            app, in process).
    """
    from backend.main import API_PREFIX, create_app

    settings = settings or get_settings()
    app = create_app(settings)

    # Unknown API paths answer JSON 404 instead of falling through to the dashboard's HTML.
    @app.api_route(
        API_PREFIX + "/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    def _unknown_api_path(path: str, request: Request) -> JSONResponse:
        body = {
            "error": "not_found",
            "detail": f"no API endpoint {request.method} {request.url.path}",
            "field": None,
        }
        return JSONResponse(body, status_code=404)

    mount = create_dashboard_asgi(api_url or settings.dashboard_api_url, app=app)
    from frontend.app import create_dash_app

    app.state.csp.allow_scripts(create_dash_app().csp_hashes())
    app.mount("/", mount)
    return app


def serve_dashboard(api_url: str, host: str = "127.0.0.1", port: int = 8050, log_level: str = "info") -> None:
    """Serve the dashboard alone on its own port, talking to the API at ``api_url``."""
    import uvicorn

    from backend.security import ContentSecurityPolicy, SecurityMiddleware
    from frontend.app import create_dash_app

    settings = get_settings()
    csp = ContentSecurityPolicy(list(create_dash_app().csp_hashes()))
    app = SecurityMiddleware(create_dashboard_asgi(api_url), settings.max_body_bytes, csp)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
