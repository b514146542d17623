"""How the dashboard reaches the API: one ``phasescope.service.client.Client``, plus a server-side cache.

The API is the one in this process (an in-process transport: no socket, no address to get wrong), or
the one at ``Settings.dashboard_api_url``. It is never derived from a request (its ``Host`` header is
the caller's to choose), and there is one client for the process, whoever asks.

The dashboard holds no credential. Reads go without one (they are open); a write carries the token the
user typed into the page, kept in their browser session, as the ``Authorization`` header of that one
call (``Client.submit(..., token=...)``).

The dashboard never reads the store itself. A finished analysis is immutable (its id hashes the
request), so the slices it asks for are cached here by ``(api, id, measure, quantity, checkpoint)``;
running analyses are always fetched fresh. Each figure asks for the slice it shows, never the table.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any

import httpx
import pandas as pd

from phasescope.service.client import ApiError, Client

__all__ = [
    "ApiError",
    "DashboardClient",
    "IN_PROCESS",
    "InProcessTransport",
    "api",
    "api_base",
    "configure",
    "slice_table",
    "status",
]

# The in-process API's base URL: a name, not an address (nothing resolves or connects to it).
IN_PROCESS = "http://phasescope.in-process"
_TIMEOUT_S = 120.0
_STATE: dict[str, Any] = {"base": IN_PROCESS, "client": None}
_CACHE: OrderedDict[tuple[Any, ...], pd.DataFrame] = OrderedDict()
_CACHE_MAX_ROWS = 20_000_000
_LOCK = threading.Lock()


class InProcessTransport(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app served by this process.

    Dash callbacks run in a2wsgi's worker threads; the API runs on the server's event loop. Each request
    is scheduled on that loop (``loop`` is set from each dashboard request by the mount that
    :func:`frontend.server.create_combined_app` builds) and waited for. With no server loop (a script, a test), it runs on a
    private one.

    Args:
        app: the ASGI app (the API, with everything it is wrapped in).
        timeout: seconds to wait for one answer.
    """

    def __init__(self, app: Any, timeout: float = _TIMEOUT_S) -> None:
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timeout = timeout

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            response = await self._asgi.handle_async_request(request)
            body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            return response.status_code, response.headers.raw, body

        loop = self.loop
        if loop is not None and loop.is_running():
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is loop:  # waiting here for the loop we are on would never end
                raise RuntimeError("the in-process API cannot be called from its own event loop's thread")
            future = asyncio.run_coroutine_threadsafe(call(), loop)
            try:
                code, headers, body = future.result(self.timeout)
            except TimeoutError:
                future.cancel()  # do not leave the request running on the server's loop
                raise httpx.ReadTimeout(
                    f"the API did not answer within {self.timeout:.0f} s", request=request
                ) from None
        else:
            code, headers, body = asyncio.run(call())
        return httpx.Response(code, headers=headers, content=body, request=request)


class DashboardClient(Client):
    """The notebook client plus what only the dashboard needs: stored attention patterns."""

    def patterns(
        self, aid: str, checkpoint: int | None = None, layer: int = 0, head: int = 0, prompt: int = 0
    ) -> dict[str, Any]:
        """One stored attention pattern with its tokens; without ``checkpoint``, the index."""
        params: dict[str, Any] = {"layer": layer, "head": head, "prompt": prompt}
        if checkpoint is not None:
            params["checkpoint"] = checkpoint
        return self._call("GET", f"/analyses/{aid}/patterns", params=params).json()

    def ensemble(self, analyses: list[str], quantity: str) -> dict[str, Any]:
        """One order parameter across several analyses (seeds): ``GET /ensembles``."""
        params = {"analyses": ",".join(analyses), "quantity": quantity}
        return self._call("GET", "/ensembles", params=params).json()


def configure(api_url: str | None = None, transport: InProcessTransport | None = None) -> DashboardClient:
    """Point the dashboard at the API at ``api_url``, else at the one ``transport`` reaches in process.

    Called once when the server is built; replaces (and closes) the previous client.
    """
    if api_url:
        base, transport = api_url.rstrip("/"), None
    elif transport is not None:
        base = IN_PROCESS
    else:
        raise ValueError("the dashboard needs the API: an api_url, or a transport to the app beside it")
    new = DashboardClient(base, timeout=_TIMEOUT_S, transport=transport)
    with _LOCK:
        old = _STATE["client"]
        _STATE.update(base=base, client=new)
        _CACHE.clear()
    if old is not None:
        old.close()
    return new


def api_base() -> str:
    """The API's base URL (``http://phasescope.in-process`` for the API in this process)."""
    return str(_STATE["base"])


def api() -> DashboardClient:
    """The dashboard's one client (httpx clients are thread-safe)."""
    client = _STATE["client"]
    if client is None:
        raise RuntimeError("the dashboard's API is not configured: build it with frontend.server")
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
    prompts: bool = False,
) -> pd.DataFrame:
    """Rows of one measure (and quantity, checkpoint) of an analysis; cached once it is finished.

    The per-prompt rows (``*_prompt`` quantities, one row per prompt) come only when ``quantity``
    names one or ``prompts`` is set: no default view needs them.
    """
    key = (api_base(), aid, measure, quantity, checkpoint, prompts)
    if finished:
        with _LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
    try:
        frame = api().results(aid, measure=measure, quantity=quantity, checkpoint=checkpoint, prompts=prompts)
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
