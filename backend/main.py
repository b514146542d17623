"""The FastAPI app: ``create_app(settings)`` builds it; ``phasescope api`` serves it with uvicorn.

All routes live under ``/api/v1``; the OpenAPI description is at ``/openapi.json`` and ``/docs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from backend.errors import install_error_handlers
from backend.routes import analyses, ensembles, health, models, patterns
from backend.security import ContentSecurityPolicy, SecurityMiddleware
from phasescope import __version__
from phasescope.config import Settings, get_settings
from phasescope.service.store import ResultStore

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: the process's settings)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from phasescope.service.redis_conn import connect
        from phasescope.service.storage import remove_orphan_temp_files

        # Temporary files of writers killed mid-write (old enough that no live writer owns them).
        for root in (settings.store_dir, settings.zoo_dir):
            remove_orphan_temp_files(root)
        try:
            app.state.redis = connect(settings)  # starts the embedded server when REDIS_URL is unset
        except Exception:
            app.state.redis = None  # routes retry, and answer 503 while Redis is away
        yield
        if app.state.redis is not None:
            app.state.redis.close()

    app = FastAPI(
        title="phasescope",
        version=__version__,
        description="Queue analyses of transformer checkpoints, follow them, download their tidy tables.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = ResultStore(settings.store_dir)
    app.state.redis = None
    install_error_handlers(app)
    # Outermost of our middleware: headers on every answer (errors too), bodies bounded before any route.
    # The dashboard (frontend.server) adds the hashes of its inline scripts to app.state.csp.
    app.state.csp = ContentSecurityPolicy()
    app.add_middleware(SecurityMiddleware, max_body_bytes=settings.max_body_bytes, csp=app.state.csp)
    for module in (analyses, models, health, patterns, ensembles):
        app.include_router(module.router, prefix=API_PREFIX)
    return app
