"""Analyses: submit, follow, list, cancel, and download their tables."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from backend.deps import JOB_FUNCTION, RedisDep, SettingsDep, StoreDep, get_redis, require_token
from backend.errors import error_responses
from backend.ratelimit import limit_writes
from phasescope.errors import InvalidRequest, NotFound, ServiceUnavailable
from phasescope.measures import measure_names
from phasescope.responses import AnalysisList, AnalysisStatus, ResultsPage
from phasescope.schemas import ANALYSIS_ID_PATTERN, AnalysisRequest
from phasescope.service import queue as jobs

__all__ = ["router"]

router = APIRouter(prefix="/analyses", tags=["analyses"])

AnalysisId = Annotated[
    str,
    Path(pattern=ANALYSIS_ID_PATTERN, description="Analysis id: 24 hex digits, as POST /analyses returned."),
]
_TEXT = Annotated[str | None, Query(max_length=100)]
# How long a client may use a finished result without asking again (then it revalidates: a 304).
FINISHED_MAX_AGE_S = 86_400
# Finished results' response bodies kept by the API process (see _ResponseCache).
RESPONSE_CACHE_BYTES = 256 * 2**20
_INDEX = Annotated[int | None, Query(ge=0, le=10**9)]
# Writes: the token first (a refused token takes no one's bucket), then the client's write rate.
_WRITE = [Depends(require_token), Depends(limit_writes)]
# A status read finalises or re-enqueues through Redis: it can answer 503 when Redis fails mid-read.
_READ_ERRORS = error_responses(404, 422, 503)


@router.post(
    "",
    operation_id="create_analysis",
    status_code=202,
    dependencies=_WRITE,
    response_model=AnalysisStatus,
    responses={
        200: {
            "model": AnalysisStatus,
            "description": "Finished already: the same request on the same weights.",
        },
        202: {"description": "Queued (or already queued or running); Location is its status."},
        **error_responses(401, 403, 404, 413, 422, 429, 503, 507),
    },
)
def create_analysis(
    body: AnalysisRequest, store: StoreDep, settings: SettingsDep, conn: RedisDep, response: Response
) -> dict[str, Any]:
    """Queue an analysis (202), or return it at once when the same request on the same weights has finished (200)."""
    from phasescope.models.identity import resolve_request
    from phasescope.service.cost import check_request
    from phasescope.service.ratelimit import check_queue_room
    from phasescope.service.shape_limits import check_shape_limits

    # Validate model and checkpoints before needing the queue, so bad input is a 4xx even without Redis.
    # The id names the weights too: new weights under the same request are a new analysis.
    resolved = resolve_request(body, settings)
    aid = resolved.aid
    if not store.is_finished(aid):
        # Bounded work: the estimate against the ceilings (422 naming the parameter), then room on the queue.
        check_request(body, len(resolved.steps), settings)
        check_shape_limits(body, settings)  # limits on the model's heads, where its files declare them
        if conn is None:
            raise ServiceUnavailable("the job queue (Redis) cannot be reached; try again shortly")
        check_queue_room(conn, len(set(resolved.steps) - set(store.part_steps(aid))), settings)
        aid, _ = jobs.submit(body, conn, store, settings, resolved=resolved, job_function=JOB_FUNCTION)
    state = jobs.status(store, aid, conn, settings)
    response.status_code = 200 if state["status"] == "finished" else 202
    response.headers["Location"] = state["links"]["self"]
    return state


@router.get("", operation_id="list_analyses", response_model=AnalysisList, responses=error_responses(422))
def list_analyses(
    store: StoreDep,
    settings: SettingsDep,
    conn: RedisDep,
    offset: Annotated[int, Query(ge=0, le=10**6, description="Analyses to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=200, description="Analyses per page.")] = 20,
) -> dict[str, Any]:
    """Recent analyses, most recently touched first, paginated."""
    limit = min(limit, settings.max_page_size)
    ids = store.list_ids()
    items = []
    for aid in ids[offset : offset + limit]:
        try:
            state = jobs.status(store, aid, conn, settings, resume=False)
        except NotFound:
            continue  # deleted or half-written between listing and reading
        for key in ("request", "checkpoints", "weights"):  # GET /analyses/{id} has them
            state.pop(key, None)
        items.append(state)
    nxt = offset + limit
    return {
        "items": items,
        "offset": offset,
        "limit": limit,
        "total": len(ids),
        "next": f"/api/v1/analyses?offset={nxt}&limit={limit}" if nxt < len(ids) else None,
    }


@router.get(
    "/{analysis_id}", operation_id="get_analysis", response_model=AnalysisStatus, responses=_READ_ERRORS
)
def get_analysis(
    analysis_id: AnalysisId, store: StoreDep, settings: SettingsDep, conn: RedisDep
) -> dict[str, Any]:
    """Status, progress, timings, errors per job, findings, model shape and links of one analysis."""
    return jobs.status(store, analysis_id, conn, settings)


@router.delete(
    "/{analysis_id}",
    operation_id="cancel_analysis",
    dependencies=_WRITE,
    response_model=AnalysisStatus,
    responses=error_responses(401, 404, 413, 422, 429, 503),
)
def cancel_analysis(
    analysis_id: AnalysisId, store: StoreDep, settings: SettingsDep, conn: Annotated[Any, Depends(get_redis)]
) -> dict[str, Any]:
    """Cancel an analysis: its queued jobs are dropped, its running ones stopped; finished checkpoints are kept."""
    return jobs.cancel(store, analysis_id, conn, settings)


def _filtered(frame: Any, filters: dict[str, Any]) -> Any:
    """Rows matching every given ``column == value`` (None: no filter), with a fresh index."""
    mask = None
    for column, value in filters.items():
        if value is None or column not in frame.columns:
            continue
        match = frame[column].eq(value)
        if hasattr(match, "fillna"):
            match = match.fillna(False).astype(bool)
        mask = match if mask is None else mask & match
    return (frame if mask is None else frame[mask]).reset_index(drop=True)


def _columnar_json(aid: str, frame: Any, complete: bool) -> bytes:
    import json

    cols = [f'"{c}":{frame[c].to_json(orient="values", double_precision=15)}' for c in frame.columns]
    head = json.dumps({"id": aid, "complete": complete, "rows": len(frame), "columns": list(frame.columns)})
    return (head[:-1] + ',"data":{' + ",".join(cols) + "}}").encode()


@router.get(
    "/{analysis_id}/results",
    operation_id="get_results",
    response_model=ResultsPage,
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "The tidy table: columnar JSON (format=json), CSV or Parquet. "
            "X-Phasescope-Complete says whether more rows will come.",
        },
        304: {"description": "Not modified: If-None-Match names this finished result's ETag (no body)."},
        **_READ_ERRORS,
    },
)
def get_results(
    analysis_id: AnalysisId,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    conn: RedisDep,
    measure: Annotated[str | None, Query(max_length=40, description="One measure, e.g. heads.")] = None,
    quantity: _TEXT = None,
    layer: _INDEX = None,
    head: _INDEX = None,
    checkpoint: _INDEX = None,
    prompts: Annotated[
        bool,
        Query(
            description="false: leave out the per-prompt rows (quantities ending _prompt) "
            "unless quantity names one."
        ),
    ] = True,
    format: Annotated[
        Literal["json", "csv", "parquet"], Query(description="json (columnar), csv or parquet.")
    ] = "json",
) -> Response:
    """The tidy results table with its se, ci_lo, ci_hi columns, filtered; partial while the analysis runs."""
    record = store.load_request(analysis_id)
    complete = store.is_finished(analysis_id) or (
        conn is not None and jobs.finalize(store, analysis_id, conn)
    )
    if measure is not None and measure not in measure_names():
        raise InvalidRequest(f"unknown measure {measure!r}", field="measure", choices=list(measure_names()))
    if measure is not None and measure not in record["request"]["measures"]:
        raise InvalidRequest(
            f"analysis {analysis_id} did not measure {measure!r}",
            field="measure",
            choices=record["request"]["measures"],
        )
    filters = {"layer": layer, "head": head}
    headers = {"X-Phasescope-Complete": "true" if complete else "false", "Cache-Control": "no-store"}
    path = store.results_path(analysis_id) if complete else None
    if path is not None:
        # A finished result never changes (docs/api.md, "Caching"): clients may keep it and revalidate
        # with If-None-Match, answered here before any table is read. A running one is never cached.
        query = (measure, quantity, layer, head, checkpoint, prompts, format)
        headers.update(_finished_cache_headers(analysis_id, path, query))
        if _etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=304, headers=headers)
    if (
        format == "parquet"
        and path is not None
        and prompts
        and all(v is None for v in (measure, quantity, checkpoint, *filters.values()))
        and _has_uncertainty_columns(path)
    ):
        # The whole finished table: the stored file is already this response.
        headers["Content-Disposition"] = f'attachment; filename="{analysis_id}.parquet"'
        return Response(path.read_bytes(), media_type="application/vnd.apache.parquet", headers=headers)
    if format == "parquet":
        headers["Content-Disposition"] = f'attachment; filename="{analysis_id}.parquet"'
    media = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}.get(format, "application/json")
    cached = _RESPONSES.get(headers["ETag"]) if path is not None else None
    if cached is not None:
        return Response(cached, media_type=media, headers=headers)
    from phasescope.service.store import with_uncertainty

    # Every answer has the uncertainty columns (NaN where a row has none, or the result predates them).
    frame = with_uncertainty(
        _filtered(
            store.results(
                analysis_id, measure=measure, quantity=quantity, checkpoint=checkpoint, prompts=prompts
            ),
            filters,
        )
    )
    if format == "csv":
        body = frame.to_csv(index=False).encode()
    elif format == "parquet":
        from phasescope.service.store import table_to_parquet_bytes

        body = table_to_parquet_bytes(frame) if len(frame) else _empty_parquet(frame)
    else:
        body = _columnar_json(analysis_id, frame, complete)
    if path is not None:
        _RESPONSES.put(headers["ETag"], body)
    return Response(body, media_type=media, headers=headers)


class _ResponseCache:
    """Bodies of finished results by ETag, least recently used first out, bounded by bytes.

    A finished result never changes and its tag names the file, the query and the server's version,
    so a body kept here is the answer to any request with that tag: the dashboard and notebooks ask
    for the same slices over and over (one quantity of a 26M-row table: ~150 ms to gather and encode,
    ~1 ms from here).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, tag: str) -> bytes | None:
        with self._lock:
            body = self._bodies.get(tag)
            if body is not None:
                self._bodies.move_to_end(tag)
            return body

    def put(self, tag: str, body: bytes) -> None:
        if len(body) > self.max_bytes // 8:  # a bulk download is not worth evicting many slices for
            return
        with self._lock:
            if tag in self._bodies:
                return
            self._bodies[tag] = body
            self._size += len(body)
            while self._size > self.max_bytes:
                _, old = self._bodies.popitem(last=False)
                self._size -= len(old)


_RESPONSES = _ResponseCache(RESPONSE_CACHE_BYTES)


def _finished_cache_headers(aid: str, path: Any, query: tuple[Any, ...]) -> dict[str, str]:
    """ETag and Cache-Control of a finished result: the tag names the stored file (its inode, time
    and size: a recomputed result is a new file), the query and the server's version."""
    import hashlib

    from phasescope import __version__

    stat = path.stat()
    key = f"{aid}|{stat.st_ino}|{stat.st_mtime_ns}|{stat.st_size}|{query!r}|{__version__}"
    return {
        "ETag": '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"',
        "Cache-Control": f"public, max-age={FINISHED_MAX_AGE_S}",
    }


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (a list, weak tags and ``*`` included, RFC 9110)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _has_uncertainty_columns(path: Any) -> bool:
    """Whether a stored Parquet file has the ``se``, ``ci_lo``, ``ci_hi`` columns (a result stored
    before they existed has not: it is sent through the table, which adds them as NaN)."""
    import pyarrow.parquet as pq

    from phasescope.measures.tables import UNCERTAINTY_COLUMNS

    names = set(pq.read_schema(path).names)
    return all(c in names for c in UNCERTAINTY_COLUMNS)


def _empty_parquet(frame: Any) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
