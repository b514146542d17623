"""Every error becomes JSON ``{error, detail, field}`` that says what to change; bad input is never a 500.

What the server knows and the caller need not is logged, not sent: a 500 says only that it happened and
gives a ``request_id`` to find the traceback in the log; the server's own directories in a message
(model roots, the data directory) are replaced by their names (``<data_dir>/models``,
``PHASESCOPE_MODEL_ROOTS[0]``); a Redis failure says that the queue failed, not how.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.security import ContentSecurityPolicy, security_headers
from phasescope.config import Settings
from phasescope.errors import PathNotAllowed, PhasescopeError
from phasescope.responses import ErrorBody

__all__ = ["error_responses", "install_error_handlers", "public_message", "validation_body"]

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


# What each error status means, for the OpenAPI description of every route that can answer it.
_MEANINGS = {
    401: "The write needs the API token (Authorization: Bearer <token>).",
    403: "A local model path outside the configured model roots.",
    404: "No such analysis, model, checkpoint or stored pattern (choices lists the valid ones).",
    413: "The request body is over PHASESCOPE_MAX_BODY_BYTES.",
    422: "The request is malformed or over a limit: field names what to change.",
    429: "Too many writes from this client, or the queue is full: retry_after_s says when to retry.",
    500: "The server failed: request_id finds the traceback in its log.",
    503: "The job queue (Redis) or the model hub cannot be reached.",
    507: "The data directory's disk is (nearly) full.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status it can answer, with the ErrorBody schema.

    500 is added to every route: any of them can fail.
    """
    return {code: {"model": ErrorBody, "description": _MEANINGS[code]} for code in sorted({*codes, 500})}


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


def _server_paths(settings: Settings) -> list[tuple[str, str]]:
    """The server's directories a message may name, each with what to say instead, longest first."""
    named: dict[str, str] = {}
    extra = [Path(r).expanduser() for r in settings.model_roots]
    for i, root in enumerate(extra):
        named[str(root)] = named[str(root.resolve())] = f"PHASESCOPE_MODEL_ROOTS[{i}]"
    for sub in ("zoo", "models", "results", "redis"):
        path = settings.data_dir / sub
        named.setdefault(str(path), f"<data_dir>/{sub}")
        named.setdefault(str(path.resolve()), f"<data_dir>/{sub}")
    named.setdefault(str(settings.data_dir), "<data_dir>")
    named.setdefault(str(settings.data_dir.resolve()), "<data_dir>")
    named.setdefault(str(Path.home()), "~")  # caches and the like: at least not the account's name
    return sorted(((p, n) for p, n in named.items() if p not in ("", "/")), key=lambda pn: -len(pn[0]))


def public_message(message: str, settings: Settings) -> str:
    """``message`` with the server's directories replaced by their names (see the module docstring)."""
    for path, name in _server_paths(settings):
        # Whole path components only: /root is not a prefix of /rootfs.
        message = re.sub(re.escape(path) + r"(?![\w.-])", lambda _, name=name: name, message)
    return message


def _csp(request: Request) -> ContentSecurityPolicy:
    return getattr(request.app.state, "csp", None) or ContentSecurityPolicy()


def _request_id() -> str:
    return uuid.uuid4().hex[:16]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PhasescopeError)
    async def _phasescope(request: Request, exc: PhasescopeError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        body = exc.to_dict()
        if "retry_after_s" in exc.context:  # a rate limit or a full queue: say when to come back
            body["retry_after_s"] = int(exc.context["retry_after_s"])
            headers = {**(headers or {}), "Retry-After": str(body["retry_after_s"])}
        settings = request.app.state.settings
        detail = public_message(str(body.get("detail", "")), settings)
        if isinstance(exc, PathNotAllowed):
            # Where the roots are is the operator's business: the log has them, the caller gets their names.
            log.warning("refused %s %s: %s", request.method, request.url.path, exc.message)
        elif detail != body.get("detail"):
            log.info("%s %s: %s", request.method, request.url.path, exc.message)
        body["detail"] = detail
        return JSONResponse(body, status_code=exc.http_status, headers=headers)

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
        rid = _request_id()
        log.error("request %s: %s %s: Redis failed: %s", rid, request.method, request.url.path, exc)
        body = {
            "error": "service_unavailable",
            "detail": f"the job queue (Redis) failed; try again shortly (request id {rid} in the server's log)",
            "field": None,
            "request_id": rid,
        }
        return JSONResponse(body, status_code=503)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id()
        log.exception("request %s: unhandled error on %s %s", rid, request.method, request.url.path)
        body = {
            "error": "internal_error",
            "detail": f"the server failed on this request; its log has the details under request id {rid}",
            "field": None,
            "request_id": rid,
        }
        # Starlette sends this answer from outside every middleware, so it adds the headers itself.
        headers = {k.decode(): v.decode() for k, v in security_headers(_csp(request), request.url.path)}
        return JSONResponse(body, status_code=500, headers={**headers, "X-Request-ID": rid})

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        # A write the store did not translate (a full disk met outside atomic_write_bytes): the same
        # 507 / 503 answer; any other OSError is a server failure like any other.
        from phasescope.service.storage import raise_storage_error

        try:
            raise_storage_error(exc, "")
        except PhasescopeError as mapped:
            log.warning("%s %s: %s (%s)", request.method, request.url.path, mapped.message, exc)
            return await _phasescope(request, mapped)
        return await _internal(request, exc)
