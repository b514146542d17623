"""Dependencies shared by the routes: settings, the results store, Redis, the write token."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

import redis
from fastapi import Depends, Header, Request

from phasescope.config import Settings
from phasescope.errors import PhasescopeError, ServiceUnavailable
from phasescope.service.store import ResultStore

__all__ = [
    "JOB_FUNCTION",
    "RedisDep",
    "SettingsDep",
    "StoreDep",
    "Unauthorized",
    "get_redis",
    "get_settings_dep",
    "get_store",
    "optional_redis",
    "require_token",
]


log = logging.getLogger("phasescope.api")

# The function RQ workers run for one checkpoint of an analysis, by dotted name: the API enqueues it
# (phasescope.service.queue.submit takes it as a parameter) without importing it, so the API never
# imports torch, and the library never names the workers (imports point downward only).
JOB_FUNCTION = "workers.jobs.run_job"


class Unauthorized(PhasescopeError):
    http_status = 401
    code = "unauthorized"


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ResultStore:
    return request.app.state.store


def get_redis(request: Request) -> redis.Redis:
    """The app's Redis client, connected on first use (the embedded server starts if needed)."""
    conn = request.app.state.redis
    if conn is None:
        from phasescope.service.redis_conn import connect

        try:
            conn = request.app.state.redis = connect(request.app.state.settings)
        except PhasescopeError:
            raise
        except Exception as exc:
            # The reason names hosts or the embedded server's socket path: the log gets it, not the caller.
            log.warning("Redis cannot be reached: %s", exc)
            raise ServiceUnavailable("the job queue (Redis) cannot be reached; try again shortly") from exc
    return conn


def optional_redis(request: Request) -> redis.Redis | None:
    """Redis when it can be reached, else None (reads of finished analyses need no queue)."""
    try:
        return get_redis(request)
    except ServiceUnavailable:
        return None


def require_token(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    """Write endpoints need ``Authorization: Bearer <token>`` when a token is configured."""
    token = request.app.state.settings.api_token
    if not token:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized(
            "this endpoint needs the API token: send the header 'Authorization: Bearer <token>'",
            field="authorization",
        )


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[ResultStore, Depends(get_store)]
RedisDep = Annotated[redis.Redis | None, Depends(optional_redis)]
