"""Security headers and the request-body limit, as one ASGI middleware around the API and the dashboard.

Every response gets a Content-Security-Policy, ``X-Frame-Options: DENY``, ``X-Content-Type-Options:
nosniff``, ``Referrer-Policy`` and ``Cross-Origin-Opener-Policy``. A request whose body is over
``Settings.max_body_bytes`` is answered 413 with a JSON error before any route (or Dash callback)
reads it: by its ``Content-Length`` when it has one, else by counting the bytes as they arrive.

Why the dashboard's policy is what it is (checked in a real Chromium, tests/e2e/test_dashboard_security.py):

* ``script-src 'self' 'sha256-…'``: Dash's page runs inline scripts (``new DashRenderer(...)``, one per
  clientside callback, the page-title callback of its page router); ``Dash.csp_hashes()`` gives their
  hashes, so no ``'unsafe-inline'`` for scripts. Its JSON config block (``type="application/json"``) is
  data, not a script.
* ``'unsafe-eval'``: WebGL traces (``Scattergl``, which the figures switch to above
  ``frontend.figures.WEBGL_POINTS`` points) draw through regl, which compiles its draw calls with
  ``Function``; Dash serves plotly's full bundle, not its "strict" one. The 2-D figures render without it.
* ``style-src 'self' 'unsafe-inline'``: without it Chromium reports ``style-src-elem`` violations:
  Dash's components and plotly.js inject ``<style>`` elements while they draw. Styles run no code.
* ``img-src data: blob:``: plotly's mode bar icons and "download as png".

``/docs`` and ``/redoc`` (FastAPI's pages) load Swagger UI / ReDoc from cdn.jsdelivr.net and start it
with an inline script, so they get their own, looser policy; they show only the OpenAPI description.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ContentSecurityPolicy", "SecurityMiddleware", "security_headers", "too_large_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DOCS_PATHS = ("/docs", "/redoc")
_DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_STATIC_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Analysis ids in our URLs are not secrets (reads are open), but other sites need not see them.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class ContentSecurityPolicy:
    """The policy of every page but the API docs; inline scripts are allowed one by one, by hash.

    Args:
        script_hashes: CSP source expressions such as ``'sha256-…'`` (``Dash.csp_hashes()``).
    """

    def __init__(self, script_hashes: list[str] | None = None) -> None:
        self.script_hashes: list[str] = list(script_hashes or [])

    def allow_scripts(self, hashes: list[str]) -> None:
        """Allow these inline scripts (by hash) from now on."""
        self.script_hashes.extend(h for h in hashes if h not in self.script_hashes)

    def header(self) -> str:
        """The ``Content-Security-Policy`` header value."""
        scripts = " ".join(["'self'", *self.script_hashes, "'unsafe-eval'"])
        return (
            f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )


def too_large_body(size: int | None, limit: int) -> bytes:
    """The JSON body of a 413: how big the request was (when known) and the setting that bounds it."""
    sent = f"a {size:,}-byte" if size is not None else "a"
    detail = (
        f"{sent} request body is over the limit of {limit:,} bytes (PHASESCOPE_MAX_BODY_BYTES): "
        "send fewer or shorter texts"
    )
    return json.dumps({"error": "too_large", "detail": detail, "field": None}).encode()


class _BodyTooLarge(Exception):
    """Raised into the app when a body without Content-Length grows over the limit."""


def security_headers(csp: ContentSecurityPolicy, path: str) -> list[tuple[bytes, bytes]]:
    """The headers every response to ``path`` carries (the 500 handler adds them itself: Starlette
    sends its answer from outside every middleware)."""
    docs = path.rstrip("/") in _DOCS_PATHS or path.startswith("/docs/")
    policy = _DOCS_POLICY if docs else csp.header()
    return [(b"content-security-policy", policy.encode()), *_STATIC_HEADERS]


class SecurityMiddleware:
    """Adds the security headers to every HTTP response and enforces the body limit.

    Args:
        app: the ASGI app to wrap (the API, or the API with the dashboard mounted).
        max_body_bytes: the largest request body accepted, in bytes.
        csp: the policy of every path but ``/docs`` and ``/redoc``.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, csp: ContentSecurityPolicy) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.csp = csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(self.csp, scope.get("path", ""))
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, extra, too_large_body(declared, limit))
            return

        received = 0
        overflow = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if overflow:
                # The app failed on the body we cut off: whatever it answers, the answer is 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_413(send, extra, too_large_body(None, limit))
                return
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in names)]
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not overflow:  # _BodyTooLarge, or what the app made of it
                raise
        if overflow and not started:
            await _send_413(send, extra, too_large_body(None, limit))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, extra: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    # The body was not read: ask the client to close so its unread bytes do not become the next request.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
