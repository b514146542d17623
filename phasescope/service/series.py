"""The series job: an analysis's measures of kind ``series``, computed once after its checkpoints.

A series measure (``trajectory_pca``) reads every checkpoint of the analysis at once, so it is no
checkpoint's job. ``phasescope.service.queue`` enqueues one more job per analysis that asks for one:
id ``<analysis id>-series``, the same job function as the checkpoints' jobs called with
``step=None`` and only the series measures, and an RQ dependency on every checkpoint job enqueued
with it (``Dependency(jobs=..., allow_failure=True)``: it runs after them, also when one failed,
since it reads the weights, not their parts). It stores its table as the part ``series``
(``ResultStore.write_series_part``), which ``finalize`` waits for and merges with the others. The
checkpoints' jobs never compute a series measure, and the reuse cache never holds one.

Progress still counts checkpoints; while the series job is queued or running the analysis is
``running`` (the job is listed with ``checkpoint: null``), and when it failed the analysis is
``partial`` with the series job among its errors.
"""

from __future__ import annotations

import math
from typing import Any

import redis
from rq import Queue, Retry
from rq.job import Dependency, Job, JobStatus

from phasescope.config import Settings
from phasescope.measures.registry import get_measure
from phasescope.service.store import ResultStore

__all__ = [
    "ACTIVE",
    "checkpoint_measures",
    "series_job_data",
    "series_job_id",
    "series_measures",
    "series_pending",
    "series_state",
]

ACTIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED}


def series_job_id(aid: str) -> str:
    """The RQ job id of an analysis's series job."""
    return f"{aid}-series"


def series_measures(request: dict[str, Any]) -> list[str]:
    """The requested measures of kind ``series`` (computed by the series job)."""
    return [m for m in request["measures"] if get_measure(m).kind == "series"]


def checkpoint_measures(measures: list[str]) -> list[str]:
    """The measures a checkpoint's job computes: all but the series ones."""
    return [m for m in measures if get_measure(m).kind != "series"]


def series_pending(store: ResultStore, aid: str, request: dict[str, Any]) -> bool:
    """Whether the analysis asks for series measures whose part is not stored yet."""
    return bool(series_measures(request)) and not store.has_series_part(aid)


def series_job_data(
    conn: redis.Redis,
    store: ResultStore,
    aid: str,
    record: dict[str, Any],
    settings: Settings,
    job_function: str,
    after: list[str],
    requeue_failed: bool,
) -> Any | None:
    """The series job to enqueue (``Queue.prepare_data``), or None when none is needed now.

    None when the analysis has no series measure, its part is stored, or its job is alive (or failed
    and ``requeue_failed`` is False).

    Args:
        after: the ids of the checkpoint jobs it must wait for (enqueued in the same batch, or alive).
    """
    request = record["request"]
    measures = series_measures(request)
    if not measures or store.has_series_part(aid):
        return None
    job = Job.fetch_many([series_job_id(aid)], connection=conn)[0]
    if job is not None:
        state = job.get_status(refresh=False)
        if state in ACTIVE:
            return None
        if state in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED) and not requeue_failed:
            return None
        job.delete()
    return Queue.prepare_data(
        job_function,
        kwargs={
            "aid": aid,
            "model": request["model"],
            "step": None,
            "measures": measures,
            "inputs": request["inputs"],
            "params": request["params"],
            "weights": None,
            "compute": measures,
            "dtype": request.get("dtype", "auto"),
        },
        job_id=series_job_id(aid),
        timeout=_timeout(record, settings),
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.result_ttl_s,
        retry=Retry(max=settings.job_retries) if settings.job_retries else None,
        depends_on=Dependency(jobs=after, allow_failure=True) if after else None,
        description=f"{request['model']} series ({','.join(measures)})",
        meta={"analysis": aid, "checkpoint": None, "stage": "queued"},
    )


def _timeout(record: dict[str, Any], settings: Settings) -> int:
    """Seconds the series job may run: a checkpoint job's timeout, scaled from the price of one
    checkpoint's share (``trajectory_pca``: ``(points² + 2)·heavy``, ``phasescope.service.cost``) to
    the job's whole work (``(points² + 2K)·heavy`` for K checkpoints), capped."""
    base = int(record.get("job_timeout_s") or settings.job_timeout_base_s)
    points = int((record["request"].get("params") or {}).get("landscape_points") or 11)
    scale = (points**2 + 2 * len(record["steps"])) / (points**2 + 2)
    return int(min(settings.job_timeout_max_s, max(base, math.ceil(base * scale))))


def series_state(conn: redis.Redis, aid: str) -> tuple[str | None, Job | None]:
    """``("active" | "running" | "failed" | "lost", job)`` of the series job (``"lost"``: no job).

    "running" is a started job, "active" one waiting (queued or deferred behind the checkpoints),
    "failed" a failed, stopped or cancelled one.
    """
    job = Job.fetch_many([series_job_id(aid)], connection=conn)[0]
    if job is None:
        return "lost", None
    state = job.get_status(refresh=False)
    if state == JobStatus.STARTED:
        return "running", job
    if state in ACTIVE:
        return "active", job
    if state == JobStatus.FINISHED:
        return "lost", job  # finished without a part: the store lost it
    return "failed", job
