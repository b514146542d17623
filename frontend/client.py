"""How the dashboard reaches the API: ``phasescope.client.Client`` over HTTP, plus a server-side cache.

The dashboard never reads the store itself. A finished analysis is immutable (its id hashes the
request), so the slices it asks for are cached here by ``(api, id, measure, quantity, checkpoint)``;
running analyses are always fetched fresh. Each figure asks for the slice it shows, never the table.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import pandas as pd

from phasescope.client import ApiError, Client

__all__ = ["ApiError", "DashboardClient", "api", "api_base", "configure", "slice_table", "status"]

_CONFIG: dict[str, Any] = {"api_url": None, "token": None}
_CLIENTS: dict[str, DashboardClient] = {}
_CACHE: OrderedDict[tuple[Any, ...], pd.DataFrame] = OrderedDict()
_CACHE_MAX_ROWS = 20_000_000
_LOCK = threading.Lock()


class DashboardClient(Client):
    """The notebook client plus the endpoint only the dashboard needs (attention patterns)."""

    def patterns(
        self, aid: str, checkpoint: int | None = None, layer: int = 0, head: int = 0, prompt: int = 0
    ) -> dict[str, Any]:
        """One stored attention pattern with its tokens; without ``checkpoint``, the index."""
        params: dict[str, Any] = {"layer": layer, "head": head, "prompt": prompt}
        if checkpoint is not None:
            params["checkpoint"] = checkpoint
        return self._call("GET", f"/analyses/{aid}/patterns", params=params).json()


def configure(api_url: str | None = None, token: str | None = None) -> None:
    """Set the API the dashboard talks to (None: the server that serves the page)."""
    _CONFIG["api_url"] = api_url.rstrip("/") if api_url else None
    _CONFIG["token"] = token


def api_base() -> str:
    """The API's base URL: the configured one, else this request's own host (the combined server)."""
    if _CONFIG["api_url"]:
        return str(_CONFIG["api_url"])
    import flask

    if flask.has_request_context():
        return flask.request.host_url.rstrip("/")
    return "http://127.0.0.1:8000"


def api() -> DashboardClient:
    """A client for :func:`api_base`, one per base URL (httpx clients are thread-safe)."""
    base = api_base()
    with _LOCK:
        client = _CLIENTS.get(base)
        if client is None:
            client = _CLIENTS[base] = DashboardClient(base, token=_CONFIG["token"], timeout=120)
    return client


def status(aid: str) -> dict[str, Any]:
    """The analysis's status (the API's words), fetched fresh."""
    return api().status(aid)


def slice_table(
    aid: str,
    measure: str,
    quantity: str | None = None,
    checkpoint: int | None = None,
    *,
    finished: bool = True,
) -> pd.DataFrame:
    """Rows of one measure (and quantity, checkpoint) of an analysis; cached once it is finished."""
    key = (api_base(), aid, measure, quantity, checkpoint)
    if finished:
        with _LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
    try:
        frame = api().results(aid, measure=measure, quantity=quantity, checkpoint=checkpoint)
    except ApiError as exc:
        if exc.status_code != 422 or exc.field != "measure" or quantity is None:
            raise
        # An API that does not yet filter by this measure: filter by quantity there, by measure here.
        frame = api().results(aid, quantity=quantity, checkpoint=checkpoint)
        frame = frame[frame["measure"] == measure].reset_index(drop=True)
    if finished:
        with _LOCK:
            _CACHE[key] = frame
            while len(_CACHE) > 1 and sum(len(f) for f in _CACHE.values()) > _CACHE_MAX_ROWS:
                _CACHE.popitem(last=False)
    return frame
