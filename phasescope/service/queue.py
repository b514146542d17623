"""Analyses as RQ jobs: submit one job per checkpoint, follow them, merge their results.

An analysis fans out into one RQ job per (checkpoint, group of measures). Every measure we have reads
the same single forward pass, so all requested measures of one checkpoint form one group and a sweep
over N checkpoints is N jobs, spread over every worker. Jobs are enqueued by the dotted name of the
job function, which the caller of ``submit`` passes and the analysis's record keeps: this module,
and the API that uses it, never import torch, and the library never names the program that runs
its jobs (imports point downward only, docs/architecture.md).

Job ids are ``<analysis id>-<step>``: a second submit of the same request finds the jobs it already
has instead of duplicating them. Measures already computed on the same weights, parameters and inputs
(by any analysis) come from the reuse cache (``phasescope.service.reuse``): a job computes only the others,
and a checkpoint with nothing left to compute gets no job at all.

State lives in two places:

- Redis: RQ's jobs (status, ``meta`` with progress, failures) on the queue ``Settings.queue_name``.
- the store (phasescope.service.store): request.json with the resolved steps, one part per finished job, and
  the merged results. The store is the source of truth: a finished analysis needs no Redis at all, and
  if Redis loses the jobs of an unfinished, uncancelled analysis, the next status read enqueues the
  missing checkpoints again.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

import redis
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from phasescope.config import Settings, get_settings
from phasescope.errors import ServiceUnavailable
from phasescope.models.identity import ResolvedRequest, describe, resolve_request
from phasescope.models.shape import declared_shape
from phasescope.schemas import AnalysisRequest
from phasescope.service.finished import finished_status, stored_shape, write_final
from phasescope.service.reuse import MeasureCache, measure_keys, neighbour_identities, patterns_key
from phasescope.service.series import (
    checkpoint_measures,
    series_job_data,
    series_job_id,
    series_pending,
    series_state,
)
from phasescope.service.storage import ensure_free_space
from phasescope.service.store import ResultStore

__all__ = [
    "cancel",
    "finalize",
    "get_queue",
    "job_id",
    "job_timeout",
    "links",
    "reap_abandoned",
    "status",
    "submit",
]

_ACTIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED}
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def job_id(aid: str, step: int) -> str:
    """The RQ job id of one checkpoint of an analysis."""
    return f"{aid}-{step}"


def get_queue(conn: redis.Redis, settings: Settings | None = None) -> Queue:
    return Queue((settings or get_settings()).queue_name, connection=conn)


def job_timeout(request: AnalysisRequest, settings: Settings | None = None) -> int:
    """Seconds one job of this request may run, from its estimated work (``phasescope.service.cost``), capped."""
    from phasescope.service.cost import job_timeout_s

    return job_timeout_s(request, settings)


def links(aid: str) -> dict[str, str]:
    """Where to find an analysis: its status, its tables, its dashboard page."""
    base = f"/api/v1/analyses/{aid}"
    return {"self": base, "results": f"{base}/results", "dashboard": f"/analyses/{aid}"}


def submit(
    request: AnalysisRequest,
    conn: redis.Redis,
    store: ResultStore,
    settings: Settings | None = None,
    resolved: ResolvedRequest | None = None,
    *,
    job_function: str,
) -> tuple[str, bool]:
    """Validate a request against the model, record it and enqueue its missing jobs.

    Nothing is loaded: checkpoints are checked against the model's listing only, and the weights are
    named by their identity (``phasescope.models.identity``), which is part of the id. Checkpoints whose
    measures are all in the reuse cache (``phasescope.service.reuse``) get their part at once, without a job.

    Args:
        resolved: the request already resolved by the caller (steps, weights, id), so that the id it
            answered with is the one submitted.
        job_function: dotted name of the function RQ workers run for one checkpoint, called with the
            keyword arguments ``aid, model, step, measures, inputs, params, weights, compute, dtype``
            (the API passes its ``JOB_FUNCTION``). Recorded with the analysis, so a status read
            re-enqueues a lost job with the same function.

    Returns:
        ``(analysis id, finished)``: a finished analysis is not recomputed, and one whose every
        checkpoint came from the reuse cache is finished on return.

    Raises:
        ModelNotFound, CheckpointNotFound, PathNotAllowed, InvalidRequest, ModelLoadError: from the
            model, the selection and its files.
        ServiceUnavailable: Redis cannot be reached.
        StorageFull: less than ``Settings.min_free_disk_mb`` MiB free, or the request record did not fit.
    """
    settings = settings or get_settings()
    resolved = resolved or resolve_request(request, settings)
    steps, aid = resolved.steps, resolved.aid
    if store.is_finished(aid):
        return aid, True
    # New work on a nearly full disk would fail at its first write: refuse it now (507).
    ensure_free_space(store.root, settings.min_free_disk_mb)
    if not store.has_request(aid):
        extra = {
            "steps": steps,
            "weights": describe(resolved.weights),
            "created_at": time.time(),
            "job_timeout_s": job_timeout(request, settings),
            "job_function": job_function,
            # The model's dimensions its files declare (None for kinds we would have to download).
            "model_shape": declared_shape(request.model, settings),
        }
        store.save_request(aid, request, extra)
    store.set_cancelled(aid, False)
    try:
        # Two identical POSTs at once must not both enqueue the same checkpoints.
        with conn.lock(f"phasescope:submit:{aid}", timeout=60, blocking_timeout=30):
            _enqueue_missing(conn, store, aid, settings, requeue_failed=True, job_function=job_function)
    except redis.exceptions.LockError as exc:
        raise ServiceUnavailable(f"analysis {aid} is being submitted by another request; retry") from exc
    except _REDIS_DOWN as exc:
        raise ServiceUnavailable(f"the job queue (Redis) cannot be reached: {exc}") from exc
    # Every checkpoint may have come from the reuse cache: then the analysis is finished already.
    return aid, finalize(store, aid, conn)


def _enqueue_missing(
    conn: redis.Redis,
    store: ResultStore,
    aid: str,
    settings: Settings,
    requeue_failed: bool,
    job_function: str,
) -> list[int]:
    """Enqueue a job for every step with neither a stored part nor a live job; returns those steps.

    A step whose requested measures are all in the reuse cache gets its part from there instead; a
    step with some of them gets a job that computes only the others (``compute``). An analysis with
    series measures also gets its series job, after the steps' jobs (``phasescope.service.series``).
    """
    record = store.load_request(aid)
    request = record["request"]
    weights = record.get("weights") or {}  # absent in analyses recorded before weights were named
    cache = MeasureCache(store.root)
    done = set(store.part_steps(aid))
    todo = [s for s in record["steps"] if s not in done]
    jobs = Job.fetch_many([job_id(aid, s) for s in todo], connection=conn)
    queue = get_queue(conn, settings)
    datas, steps, alive = [], [], []
    per_step = checkpoint_measures(request["measures"])
    for step, job in zip(todo, jobs, strict=True):
        if job is not None:
            state = job.get_status(refresh=False)
            if state in _ACTIVE:
                alive.append(job.id)
                continue
            if state in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED) and not requeue_failed:
                continue
            job.delete()  # finished without a part (store wiped) or failed and asked again: run afresh
        identity = weights.get(str(step))
        compute = list(per_step)
        if identity:
            keys = measure_keys(request, step, identity, neighbour_identities(record, step))
            compute = [m for m in compute if m not in cache.has(keys)]
            if not compute and _part_from_cache(
                store, cache, aid, step, keys, patterns_key(request, step, identity)
            ):
                continue
        steps.append(step)
        datas.append(
            Queue.prepare_data(
                job_function,
                kwargs={
                    "aid": aid,
                    "model": request["model"],
                    "step": step,
                    "measures": per_step,
                    "inputs": request["inputs"],
                    "params": request["params"],
                    "weights": identity,
                    "compute": compute,
                    "dtype": request.get("dtype", "auto"),
                },
                job_id=job_id(aid, step),
                timeout=int(record.get("job_timeout_s") or settings.job_timeout_base_s),
                result_ttl=settings.result_ttl_s,
                failure_ttl=settings.result_ttl_s,
                retry=Retry(max=settings.job_retries) if settings.job_retries else None,
                description=f"{request['model']} step {step} ({','.join(request['measures'])})",
                meta={"analysis": aid, "checkpoint": step, "stage": "queued"},
            )
        )
    after = alive + [job_id(aid, s) for s in steps]
    series = series_job_data(conn, store, aid, record, settings, job_function, after, requeue_failed)
    if datas or series is not None:
        queue.enqueue_many([*datas, *([series] if series is not None else [])])
    return steps


def _part_from_cache(
    store: ResultStore, cache: MeasureCache, aid: str, step: int, keys: dict[str, str], pattern_key: str
) -> bool:
    """Write one step's part from the reuse cache; False when an entry vanished meanwhile."""
    table = cache.assemble(keys)
    if table is None:
        return False
    cache.restore_patterns(pattern_key, store.pattern_file(aid, step), store.pattern_tokens_file(aid))
    record = {
        "seconds": 0.0,
        "rows": len(table),
        "finished_at": time.time(),
        "computed": [],
        "reused": sorted(keys),
    }
    store.write_part(aid, step, table, record)
    return True


def reap_abandoned(conn: redis.Redis, settings: Settings | None = None) -> None:
    """Retry (or fail) jobs whose worker stopped sending heartbeats, e.g. after ``kill -9``.

    RQ does this in its workers' maintenance too; doing it on status reads bounds the delay by the
    heartbeat interval instead of the maintenance interval.
    """
    StartedJobRegistry(queue=get_queue(conn, settings)).cleanup()


def _error_line(job: Job) -> str:
    result = job.latest_result()
    text = (getattr(result, "exc_string", None) or "").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "failed (no message recorded)"


def finalize(store: ResultStore, aid: str, conn: redis.Redis | None = None) -> bool:
    """Merge the parts into the final result once every checkpoint has one; True when finished.

    Called by the worker that writes the last part and by status reads. Idempotent and atomic, so two
    processes finalising at once write the same files; the Redis lock only saves the duplicate work.
    """
    if store.is_finished(aid):
        return True
    record = store.load_request(aid)
    if not set(record["steps"]) <= set(store.part_steps(aid)):
        return False
    if series_pending(store, aid, record["request"]):
        return False  # the series job's part is the last one in
    lock = None
    if conn is not None:
        with suppress(*_REDIS_DOWN, redis.exceptions.LockError):
            lock = conn.lock(f"phasescope:finalize:{aid}", timeout=300, blocking_timeout=60)
            if not lock.acquire():
                lock = None
    try:
        if store.is_finished(aid):
            return True
        write_final(store, aid, record)
    finally:
        if lock is not None:
            with suppress(*_REDIS_DOWN, redis.exceptions.LockError):
                lock.release()
    return True


def status(
    store: ResultStore,
    aid: str,
    conn: redis.Redis | None,
    settings: Settings | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Everything a person wants to know about an analysis, from the store and (when reachable) Redis.

    Status is one of ``queued``, ``running``, ``finished``, ``failed`` (no checkpoint succeeded),
    ``partial`` (some did, the rest failed or were cancelled) and ``cancelled``. Every state has the
    same keys (``phasescope.responses.AnalysisStatus``), None where a value is not known yet.

    An analysis with series measures is finished only once its series job's part is in: until then
    that job is counted as queued or listed as running (``checkpoint: null``) or failed.

    Args:
        resume: re-enqueue checkpoints that neither have a part nor a job (Redis was wiped).
    """
    settings = settings or get_settings()
    record = store.load_request(aid)
    request = record["request"]
    steps: list[int] = record["steps"]
    base = {
        "id": aid,
        "model": request["model"],
        "measures": request["measures"],
        "checkpoints": steps,
        "request": request,
        # What was read: the identity of each checkpoint's weights (empty for older analyses).
        "weights": record.get("weights") or {},
        "links": links(aid),
    }
    if store.is_finished(aid) or (conn is not None and finalize(store, aid, conn)):
        return {**base, **finished_status(store, aid, record)}
    done = set(store.part_steps(aid))
    meta = store.part_meta(aid)
    todo = [s for s in steps if s not in done]
    cancelled = store.is_cancelled(aid)
    # Steps waiting for a worker; None stands for the series job (phasescope.service.series).
    queued: list[int | None] = []
    running: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    lost: list[int] = []
    queue_ok = conn is not None
    if conn is not None:
        try:
            reap_abandoned(conn, settings)
            for step, job in zip(
                todo, Job.fetch_many([job_id(aid, s) for s in todo], connection=conn), strict=True
            ):
                state = None if job is None else job.get_status(refresh=False)
                if job is None or state == JobStatus.FINISHED:
                    lost.append(step)  # (a finished job without a part: the store lost it)
                elif state == JobStatus.STARTED:
                    running.append({"checkpoint": step, "job": job.id, **_progress_meta(job)})
                elif state in _ACTIVE:
                    queued.append(step)
                else:
                    failed.append(
                        {
                            "checkpoint": step,
                            "job": job.id,
                            "status": str(state.value),
                            "error": _error_line(job),
                        }
                    )
            series_lost = False
            if series_pending(store, aid, request):
                state, job = series_state(conn, aid)
                if state == "running" and job is not None:
                    running.append({"checkpoint": None, "job": job.id, **_progress_meta(job)})
                elif state == "active":
                    queued.append(None)  # counted with the checkpoints waiting
                elif state == "failed" and job is not None:
                    status_name = str(job.get_status(refresh=False).value)
                    failed.append(
                        {"checkpoint": None, "job": job.id, "status": status_name, "error": _error_line(job)}
                    )
                series_lost = state == "lost"
            # An analysis recorded before its job function was (a re-POST resumes it instead).
            job_function = record.get("job_function")
            if (lost or series_lost) and resume and not cancelled and job_function:
                with suppress(redis.exceptions.LockError):
                    with conn.lock(f"phasescope:submit:{aid}", timeout=60, blocking_timeout=10):
                        queued.extend(
                            _enqueue_missing(
                                conn, store, aid, settings, requeue_failed=False, job_function=job_function
                            )
                        )
                        queued.extend([None] if series_lost else [])
        except _REDIS_DOWN:
            queue_ok = False
    if not queue_ok:
        # Without Redis only the store speaks: parts are done, the rest is waiting for the queue.
        queued = [*todo, *([None] if series_pending(store, aid, request) else [])]
    active = bool(queued or running)
    if active:
        state_name = "running" if running or done or failed else "queued"
    elif cancelled:
        state_name = "cancelled" if not done else "partial"
    else:
        state_name = "partial" if done else "failed"
    total = len(steps)
    created = record.get("created_at")
    return {
        **base,
        "status": state_name,
        "progress": {
            "done": len(done),
            "total": total,
            "fraction": round(len(done) / total, 4) if total else 0.0,
            "current_checkpoint": running[0]["checkpoint"] if running else None,
            "running": running,
            "queued": len(queued),
            "failed": len(failed),
        },
        "timings": {
            "created_at": created,
            "finished_at": None,
            "elapsed_seconds": round(time.time() - created, 3) if created else None,
            "wall_seconds": None,
            "seconds_per_checkpoint": {str(s): m.get("seconds") for s, m in sorted(meta.items())},
        },
        "errors": failed,
        "rows": None,
        "findings": None,
        # Running: from the first stored checkpoint (None before one is stored).
        "shape": stored_shape(
            record, store.root / aid / "parts" / f"{min(done):09d}.parquet" if done else None
        ),
        "queue_reachable": queue_ok,
    }


def _progress_meta(job: Job) -> dict[str, Any]:
    meta = job.get_meta(refresh=False) or {}
    out = {k: meta[k] for k in ("stage", "pid", "started_at") if k in meta}
    out["worker"] = job.worker_name or meta.get("worker")
    return out


def cancel(
    store: ResultStore, aid: str, conn: redis.Redis, settings: Settings | None = None
) -> dict[str, Any]:
    """Cancel an analysis: drop its queued jobs and stop its running ones; finished parts are kept.

    A running job is stopped with RQ's stop-job command; the worker interrupts it before it writes its
    part and RQ records it as ``stopped``. The store's cancelled mark, written
    first, stops a job that a worker takes in between.
    """
    store.load_request(aid)  # NotFound for an unknown id
    if not store.is_finished(aid):
        store.set_cancelled(aid, True)
        record = store.load_request(aid)
        ids = [job_id(aid, s) for s in record["steps"]] + [series_job_id(aid)]
        try:
            for job in Job.fetch_many(ids, connection=conn):
                state = None if job is None else job.get_status(refresh=False)
                if state == JobStatus.STARTED:
                    with suppress(InvalidJobOperation, NoSuchJobError):  # it ended meanwhile
                        send_stop_job_command(conn, job.id)
                elif job is not None and state in _ACTIVE:
                    job.cancel()
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable(f"the job queue (Redis) cannot be reached: {exc}") from exc
    return status(store, aid, conn, settings, resume=False)
