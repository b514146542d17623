"""The write-rate dependency of POST and DELETE routes (the buckets are ``phasescope.service.ratelimit``)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Header, Request

from backend.deps import optional_redis
from phasescope.service.ratelimit import TokenBuckets, client_key

__all__ = ["limit_writes"]


def limit_writes(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    """Take one write from the client's bucket, or answer 429 with ``Retry-After``.

    Runs after ``require_token``: a write is counted against its token only when the server has one
    and the token matches it, else against the peer's address, so made-up tokens buy no new buckets.
    """
    app = request.app
    buckets = getattr(app.state, "write_buckets", None)
    if buckets is None:
        buckets = app.state.write_buckets = TokenBuckets(app.state.settings)
    token = app.state.settings.api_token
    scheme, _, given = (authorization or "").partition(" ")
    checked = bool(token) and scheme.lower() == "bearer"
    checked = checked and secrets.compare_digest(given.strip().encode(), str(token).encode())
    key = client_key(given.strip() if checked else None, request.client.host if request.client else None)
    buckets.take(key, optional_redis(request))
