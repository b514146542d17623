"""One server for both: the FastAPI app (``/api/v1``, ``/docs``) with the Dash dashboard mounted at ``/``.

``phasescope api`` serves :func:`create_combined_app`. The dashboard calls the API over HTTP through
``phasescope.client``; by default at the URL the browser used (the same server), or at
``PHASESCOPE_DASHBOARD_API_URL`` when the API runs elsewhere (:func:`serve_dashboard`, its own port).
"""

from __future__ import annotations

import os
from typing import Any

from a2wsgi import WSGIMiddleware
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from phasescope.config import Settings, get_settings

__all__ = ["create_combined_app", "create_dashboard_asgi", "serve_dashboard"]


def create_dashboard_asgi(api_url: str | None = None, token: str | None = None) -> Any:
    """The Dash app's Flask server as an ASGI app (a2wsgi runs it in a thread pool)."""
    from frontend.app import create_dash_app

    return WSGIMiddleware(create_dash_app(api_url, token).server, workers=16)


def create_combined_app(settings: Settings | None = None, api_url: str | None = None) -> FastAPI:
    """The API under ``/api/v1`` and the dashboard at ``/``, in one ASGI app.

    Args:
        settings: the API's settings (default: the process's).
        api_url: where the dashboard reaches the API (default ``PHASESCOPE_DASHBOARD_API_URL``, else the
            server's own URL as the browser saw it).
    """
    from backend.main import API_PREFIX, create_app

    settings = settings or get_settings()
    app = create_app(settings)

    # Unknown API paths answer JSON 404 instead of falling through to the dashboard's HTML.
    @app.api_route(API_PREFIX + "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def _unknown_api_path(path: str, request: Request) -> JSONResponse:
        body = {"error": "not_found", "detail": f"no API endpoint {request.method} {request.url.path}", "field": None}
        return JSONResponse(body, status_code=404)

    url = api_url or os.environ.get("PHASESCOPE_DASHBOARD_API_URL") or None
    app.mount("/", create_dashboard_asgi(url, settings.api_token))
    return app


def serve_dashboard(api_url: str, host: str = "127.0.0.1", port: int = 8050, log_level: str = "info") -> None:
    """Serve the dashboard alone on its own port, talking to the API at ``api_url``."""
    import uvicorn

    uvicorn.run(create_dashboard_asgi(api_url, get_settings().api_token), host=host, port=port, log_level=log_level)
