"""The job function RQ workers run: one analysis's measures on one checkpoint.

Enqueued by dotted name (``backend.deps.JOB_FUNCTION``, passed to ``phasescope.service.queue.submit``),
so the API never imports it. The worker process runs jobs in itself (no fork per job), so the
module-level model cache keeps the architecture of a series between its checkpoints and only swaps
weights.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from typing import Any

import redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from phasescope.config import get_settings
from phasescope.errors import PhasescopeError, ServiceUnavailable
from phasescope.service.store import ResultStore
from workers import stop

__all__ = ["model_cache", "run_job"]

log = logging.getLogger("phasescope.service.queue")
# OSErrors that a later attempt may not meet (a busy or briefly unreachable resource). Everything
# else (no space, quota, read-only, permissions, missing files) fails at once: retrying wastes a run.
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EAGAIN",
        "EBUSY",
        "EINTR",
        "ETIMEDOUT",
        "ECONNRESET",
        "ECONNREFUSED",
        "ECONNABORTED",
        "EPIPE",
        "ENETDOWN",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "ESTALE",
        "ENOMEM",
    )
    if hasattr(errno, name)
)
_CACHE: Any = None
_BATCHES: dict[str, Any] = {}
# model string -> (step, weights identity, series manifest digest) of what this process last loaded.
_LOADED: dict[str, tuple[int, str | None, str | None]] = {}


def model_cache() -> Any:
    """This process's ModelCache (created on first use, on the configured device)."""
    global _CACHE
    if _CACHE is None:
        from phasescope.analysis.run import pick_device
        from phasescope.models.loading import ModelCache

        settings = get_settings()
        _CACHE = ModelCache(device=pick_device(settings.device), prefetch=settings.prefetch_checkpoints)
    return _CACHE


def _stage(job: Any, stage: str, **extra: Any) -> None:
    """Report progress in the job's meta, best-effort: Redis may be restarting, and a report that
    cannot be sent must never cost the computation (the store, not Redis, holds the results)."""
    if job is None:
        return
    job.meta.update({"stage": stage, **extra})
    try:
        job.save_meta()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        log.warning("job %s: progress %r not reported (Redis unavailable: %s)", job.id, stage, exc)


def _worth_retrying(exc: BaseException) -> bool:
    """Whether running the same job again can succeed: Redis or a network share was away, memory
    was short. A worker killed outright never gets here; RQ retries its abandoned job directly."""
    if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: the worker stops, not the job
        return True
    if isinstance(exc, ServiceUnavailable):  # Redis, the hub: they come back
        return True
    if isinstance(exc, (PhasescopeError, JobTimeoutException)):
        return False  # our own verdict on these inputs (StorageFull included), or a job too long
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, MemoryError)):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch's CUDA out-of-memory: other jobs may finish
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    return False  # a bug or bad data: the same inputs fail the same way


def _load_checked(
    model: str, step: int, weights: str | None, settings: Any, dtype: str = "auto"
) -> tuple[Any, str]:
    """The model at ``step``, refused when its files are not the ones the analysis was submitted with.

    The identity is checked before and after the load (a file replaced mid-load is caught too), and a
    model kept in memory from files that changed since is dropped, so a result never mixes weights.

    Returns:
        The loaded model and a scope for the prompt cache (changes when the series' manifest does).
    """
    from phasescope.models.identity import series_digest, verify_step_identity
    from phasescope.models.loading import parse_model_spec

    ref = parse_model_spec(model, settings)
    if weights:
        verify_step_identity(model, step, weights, settings)
    digest = series_digest(ref, settings)
    seen = _LOADED.get(model)
    if seen is not None and (seen[2] != digest or (seen[0] == step and seen[1] != weights)):
        model_cache().discard(model)
    loaded = model_cache().get(model, step, settings, dtype=dtype)
    if weights:
        verify_step_identity(model, step, weights, settings)
    _LOADED[model] = (step, weights, digest)
    return loaded, digest or (weights if ref.kind == "hf" else "") or ""


# How many of an analysis's later steps one prefetch decision looks at (one Redis round trip).
_PREFETCH_LOOKAHEAD = 32


def _prefetch_next(job: Any, store: ResultStore, aid: str, model: str, step: int) -> int | None:
    """Start reading the weights of the analysis's next step still queued; returns that step.

    The queue hands jobs out in order, so the first later step whose job is still queued (not taken
    by another worker) is the one a worker takes next; if that is this worker, its weights are in
    memory already. If another worker takes it, the read is dropped when this worker loads anything
    else (``phasescope.models.prefetch``): one checkpoint's reading wasted at most. Best effort: a
    failure here never costs the job.
    """
    if job is None or model_cache().prefetcher is None:
        return None
    from rq.job import Job, JobStatus

    from phasescope.service.queue import job_id

    try:
        steps = list(store.load_request(aid)["steps"])
        done = set(store.part_steps(aid))
        later = [s for s in steps[steps.index(step) + 1 :] if s not in done][:_PREFETCH_LOOKAHEAD]
        jobs = Job.fetch_many([job_id(aid, s) for s in later], connection=job.connection)
        for later_step, later_job in zip(later, jobs, strict=True):
            if later_job is not None and later_job.get_status(refresh=False) == JobStatus.QUEUED:
                return later_step if model_cache().prefetch(model, later_step) else None
    except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError, KeyError) as exc:
        log.info("job %s: no prefetch (%s)", job.id, exc)
    return None


def _reuse_plan(
    store: ResultStore,
    aid: str,
    step: int,
    measures: list[str],
    weights: str | None,
    compute: list[str] | None,
) -> tuple[list[str], dict[str, Any], dict[str, str], str | None]:
    """Which measures to compute here and which come from the reuse cache (phasescope.service.reuse).

    Returns:
        ``(to compute, cached tables by measure, cache key by measure, patterns key)``; no keys when
        the checkpoint has no weights identity (it is then neither read from nor written to the cache).
    """
    if not weights:
        return list(measures), {}, {}, None
    from phasescope.service.reuse import MeasureCache, measure_keys, neighbour_identities, patterns_key

    record = store.load_request(aid)
    request = record["request"]
    # A cross-checkpoint measure is keyed by the checkpoints it reads too (or not cached).
    keys = measure_keys(request, step, weights, neighbour_identities(record, step))
    todo = list(measures) if compute is None else [m for m in measures if m in compute]
    cached = MeasureCache(store.root).read({m: k for m, k in keys.items() if m not in todo})
    todo += [m for m in measures if m not in todo and m not in cached]  # an entry vanished since submit
    return todo, cached, keys, patterns_key(request, step, weights)


def _neighbours(store: ResultStore, aid: str, model: str, step: int, loaded: Any, settings: Any) -> Any:
    """The parameters of the analysis's checkpoints before ``step`` that a cross-checkpoint measure reads.

    Read from their files (``phasescope.analysis.adapters_dynamics.read_params``: the model roots, and
    the identities the analysis recorded, checked before and after), never from the model cache, whose
    model holds ``step`` now.
    """
    from phasescope.analysis.adapters_dynamics import Neighbours, parameters, read_params
    from phasescope.measures.builtin_trajectory import neighbour_steps

    record = store.load_request(aid)
    weights = record.get("weights") or {}
    roles = neighbour_steps(record["steps"], step)

    read: dict[int, Any] = {}  # each step once (init is often prevprev, or prev)
    for at in dict.fromkeys(roles.values()):
        read[at] = (
            parameters(loaded.model)
            if at == step
            else read_params(model, at, loaded.model, settings, identity=weights.get(str(at)))
        )

    def role(name: str) -> tuple[int, Any] | None:
        return (roles[name], read[roles[name]]) if name in roles else None

    return Neighbours(prev=role("prev"), prevprev=role("prevprev"), init=role("init"))


def run_job(
    aid: str,
    model: str,
    step: int | None,
    measures: list[str],
    inputs: dict[str, Any],
    params: dict[str, Any],
    weights: str | None = None,
    compute: list[str] | None = None,
    dtype: str = "auto",
) -> dict[str, Any]:
    """Measure one checkpoint and store its table as a part of analysis ``aid``.

    Idempotent: a retried job whose part is already stored does not recompute it. The last job of an
    analysis to finish merges the parts into the final result. With ``step=None`` it is the analysis's
    series job (``phasescope.service.series``): the series measures, from every checkpoint at once.

    Args:
        step: the checkpoint; None for the series job.
        weights: the checkpoint's weights identity recorded at submission; the job fails when the
            files no longer match it. None (older analyses): not checked, not cached.
        compute: the measures to compute (None: all); the others come from the reuse cache, and
            what is computed here is added to it.
        dtype: what the weights load in (``AnalysisRequest.dtype``; "auto" resolves on this worker's
            device, ``phasescope.models.dtype``).

    Returns:
        ``{"checkpoint", "rows", "seconds", "computed", "reused"}`` (kept by RQ as the job's result).
    """
    from phasescope.analysis.run import build_batch, measure_checkpoint
    from phasescope.measures.registry import get_measure
    from phasescope.measures.tables import concat_tables
    from phasescope.models.hub import release_checkpoint
    from phasescope.schemas import InputSpec, MeasureParams
    from phasescope.service.patterns import save_patterns
    from phasescope.service.queue import finalize

    if step is None:
        return _run_series(aid, model, measures, inputs, params, dtype)
    job = get_current_job()
    settings = get_settings()
    store = ResultStore(settings.store_dir)
    worker = (job.worker_name if job is not None else None) or f"{socket.gethostname()}:{os.getpid()}"
    job_name = job.id if job is not None else f"{aid}-{step}"
    t0 = time.perf_counter()
    rows = None
    todo: list[str] = []
    cached: dict[str, Any] = {}
    try:
        # From here a DELETE of the analysis stops this job (RQ's stop-job command; workers.stop).
        stop.begin(job.id if job is not None else None, cancelled=store.is_cancelled(aid))
        if step not in store.part_steps(aid):
            _stage(job, "loading", worker=worker, pid=os.getpid(), started_at=time.time())
            todo, cached, keys, pattern_key = _reuse_plan(store, aid, step, measures, weights, compute)
            loaded, scope = _load_checked(model, step, weights, settings, dtype)
            if keys and dtype == "auto" and getattr(loaded, "dtype", "float32") != "float32":
                # Cache entries of "auto" hold float32 results (what "auto" is on a CPU); this GPU
                # chose half precision for a large model, so it neither mixes nor adds to them.
                todo, cached, keys = list(measures), {}, {}
            spec = InputSpec(**inputs)
            key = f"{model}|{scope}|{spec.model_dump_json()}"
            # The prompts do not depend on the weights: build them once per series and inputs.
            batch = _BATCHES.get(key)
            if batch is None:
                if len(_BATCHES) >= 16:
                    _BATCHES.clear()
                batch = _BATCHES[key] = build_batch(loaded, spec)
            prefetched = model_cache().last_prefetched
            if prefetched:
                log.info("job %s: weights prefetched while the previous job ran", job_name)
            ahead = _prefetch_next(job, store, aid, model, step)  # read while this step is measured
            _stage(job, "measuring", prefetched=prefetched, prefetching=ahead)
            neighbours = None
            if any(get_measure(m).kind == "cross-checkpoint" for m in todo):
                neighbours = _neighbours(store, aid, model, step, loaded, settings)
            table = measure_checkpoint(
                loaded, todo, spec, MeasureParams(**params), batch=batch, neighbours=neighbours
            )
            save_patterns(store, aid, loaded, batch)  # a small artefact for the dashboard
            if keys:
                _keep_for_reuse(store, aid, step, keys, todo, table, pattern_key)
                table = concat_tables([table, *(cached[m] for m in sorted(cached))])
            rows = len(table)
            seconds = round(time.perf_counter() - t0, 4)
            # The part first, then any report: a Redis outage here must not lose the computation.
            # The table and its record share one file, so they appear together or not at all.
            record = {
                "seconds": seconds,
                "worker": worker,
                "rows": rows,
                "finished_at": time.time(),
                "computed": todo,
                "reused": sorted(cached),
            }
            stop.commit(cancelled=store.is_cancelled(aid))  # stopped now, or the whole part is written
            store.write_part(aid, step, table, record)
            # Measured and stored: a hub revision's files leave the HF cache unless kept (phasescope.models.hub).
            release_checkpoint(model, step, settings)
    except BaseException as exc:
        # RQ retries a failed job while retries are left (Retry in phasescope.service.queue); only a failure
        # that may not happen again earns one. A full disk, a bad model or a timeout would waste them.
        if job is not None and not _worth_retrying(exc):
            job.retries_left = 0
        raise
    finally:
        stop.end()
    _stage(job, "done")
    finalize(store, aid, job.connection if job is not None else None)
    return {
        "checkpoint": step,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 4),
        "computed": todo,
        "reused": sorted(cached),
    }


def _keep_for_reuse(
    store: ResultStore,
    aid: str,
    step: int,
    keys: dict[str, str],
    computed: list[str],
    table: Any,
    pattern_key: Any,
) -> None:
    """Add what this job computed (and its pattern artefact) to the reuse cache."""
    from phasescope.service.reuse import MeasureCache

    cache = MeasureCache(store.root)
    cache.write({m: keys[m] for m in computed if m in keys}, table)
    cache.save_patterns(pattern_key, store.pattern_file(aid, step), store.pattern_tokens_file(aid))


def _run_series(
    aid: str, model: str, measures: list[str], inputs: dict[str, Any], params: dict[str, Any], dtype: str
) -> dict[str, Any]:
    """The series job: the series measures of analysis ``aid``, from all its checkpoints, as its
    ``series`` part (``ResultStore.write_series_part``); then the analysis is finalised.

    It reads every checkpoint's weights from their files (``SeriesReader``, the recorded identities
    checked before and after) and evaluates losses with the model of the last checkpoint.
    """
    from phasescope.analysis.adapters_dynamics import SeriesReader
    from phasescope.analysis.run import build_batch, measure_series
    from phasescope.schemas import InputSpec, MeasureParams
    from phasescope.service.queue import finalize

    job = get_current_job()
    settings = get_settings()
    store = ResultStore(settings.store_dir)
    worker = (job.worker_name if job is not None else None) or f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    rows = None
    try:
        stop.begin(job.id if job is not None else None, cancelled=store.is_cancelled(aid))
        if not store.has_series_part(aid):
            _stage(job, "loading", worker=worker, pid=os.getpid(), started_at=time.time())
            record = store.load_request(aid)
            steps = sorted(int(s) for s in record["steps"])
            weights = {int(k): v for k, v in (record.get("weights") or {}).items()}
            loaded, _ = _load_checked(model, steps[-1], weights.get(steps[-1]), settings, dtype)
            batch = build_batch(loaded, InputSpec(**inputs))
            _stage(job, "measuring")
            with SeriesReader(model, steps, loaded.model, settings, weights or None) as reader:
                table = measure_series(loaded, measures, MeasureParams(**params), batch, reader)
            rows = len(table)
            seconds = round(time.perf_counter() - t0, 4)
            record = {"seconds": seconds, "worker": worker, "rows": rows, "finished_at": time.time()}
            stop.commit(cancelled=store.is_cancelled(aid))
            store.write_series_part(aid, table, {**record, "computed": measures, "reused": []})
    except BaseException as exc:
        if job is not None and not _worth_retrying(exc):
            job.retries_left = 0
        raise
    finally:
        stop.end()
    _stage(job, "done")
    finalize(store, aid, job.connection if job is not None else None)
    return {"checkpoint": None, "rows": rows, "seconds": round(time.perf_counter() - t0, 4)}
