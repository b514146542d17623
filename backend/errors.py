"""Every error becomes JSON ``{error, detail, field}`` that says what to change; bad input is never a 500."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from phasescope.errors import PhasescopeError

__all__ = ["install_error_handlers", "validation_body"]

log = logging.getLogger("phasescope.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}
# Location prefixes pydantic adds that mean nothing to a person (union members, function validators).
_NOISE = ("function-", "list[", "literal[", "tagged-union", "json-or-python")


def _field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if not str(p).startswith(_NOISE)]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or None


def validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Turn pydantic's error list into our body: the first error in words, all of them in ``errors``."""
    items = []
    for err in errors:
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        items.append({"field": _field(tuple(err.get("loc", ()))), "detail": msg})
    first = items[0] if items else {"field": None, "detail": "invalid request"}
    detail = f"{first['field']}: {first['detail']}" if first["field"] else first["detail"]
    return {"error": "invalid_request", "detail": detail, "field": first["field"], "errors": items[:20]}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PhasescopeError)
    async def _phasescope(request: Request, exc: PhasescopeError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(list(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        body = {"error": code, "detail": str(exc.detail), "field": None}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> JSONResponse:
        body = {
            "error": "service_unavailable",
            "detail": f"the job queue (Redis) failed: {exc}",
            "field": None,
        }
        return JSONResponse(body, status_code=503)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {"error": "internal_error", "detail": f"{type(exc).__name__}: {exc}", "field": None}
        return JSONResponse(body, status_code=500)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        # A write the store did not translate (a full disk met outside atomic_write_bytes): the same
        # 507 / 503 answer; any other OSError is a server failure like any other.
        from phasescope.storage import raise_storage_error

        try:
            raise_storage_error(exc, "")
        except PhasescopeError as mapped:
            log.warning("%s %s: %s (%s)", request.method, request.url.path, mapped.message, exc)
            return await _phasescope(request, mapped)
        return await _internal(request, exc)
