"""The job function RQ workers run: one analysis's measures on one checkpoint.

Enqueued by dotted name (``workers.jobs.run_job``) from ``phasescope.jobs``. The worker process runs
jobs in itself (no fork per job), so the module-level model cache keeps the architecture of a series
between its checkpoints and only swaps weights.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from rq import get_current_job
from rq.timeouts import JobTimeoutException

from phasescope.config import get_settings
from phasescope.errors import PhasescopeError
from phasescope.store import ResultStore

__all__ = ["model_cache", "run_job"]

_CACHE: Any = None
_BATCHES: dict[str, Any] = {}


def model_cache() -> Any:
    """This process's ModelCache (created on first use, on the configured device)."""
    global _CACHE
    if _CACHE is None:
        from phasescope.analysis import pick_device
        from phasescope.models import ModelCache

        _CACHE = ModelCache(device=pick_device(get_settings().device))
    return _CACHE


def _stage(job: Any, stage: str, **extra: Any) -> None:
    if job is None:
        return
    job.meta.update({"stage": stage, **extra})
    job.save_meta()


def run_job(
    aid: str, model: str, step: int, measures: list[str], inputs: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """Measure one checkpoint and store its table as a part of analysis ``aid``.

    Idempotent: a retried job whose part is already stored does not recompute it. The last job of an
    analysis to finish merges the parts into the final result.

    Returns:
        ``{"checkpoint", "rows", "seconds"}`` (kept by RQ as the job's result).
    """
    from phasescope.analysis import build_batch, measure_checkpoint
    from phasescope.jobs import finalize
    from phasescope.patterns import save_patterns
    from phasescope.schemas import InputSpec, MeasureParams

    job = get_current_job()
    settings = get_settings()
    store = ResultStore(settings.store_dir)
    worker = (job.worker_name if job is not None else None) or f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    rows = None
    try:
        if step not in store.part_steps(aid):
            _stage(job, "loading", worker=worker, pid=os.getpid(), started_at=time.time())
            loaded = model_cache().get(model, step, settings)
            spec = InputSpec(**inputs)
            key = f"{model}|{spec.model_dump_json()}"
            # The prompts do not depend on the weights: build them once per series and inputs.
            batch = _BATCHES.get(key)
            if batch is None:
                if len(_BATCHES) >= 16:
                    _BATCHES.clear()
                batch = _BATCHES[key] = build_batch(loaded, spec)
            _stage(job, "measuring")
            table = measure_checkpoint(loaded, measures, spec, MeasureParams(**params), batch=batch)
            save_patterns(store, aid, loaded, batch)  # a small artefact for the dashboard
            _stage(job, "writing")
            store.write_part(aid, step, table)
            rows = len(table)
            seconds = time.perf_counter() - t0
            store.write_part_meta(
                aid,
                step,
                {"seconds": round(seconds, 4), "worker": worker, "rows": rows, "finished_at": time.time()},
            )
    except (PhasescopeError, JobTimeoutException):
        # The same inputs would fail the same way (or run as long) again: no retries, fail now.
        if job is not None:
            job.retries_left = 0
        raise
    _stage(job, "done")
    finalize(store, aid, job.connection if job is not None else None)
    return {"checkpoint": step, "rows": rows, "seconds": round(time.perf_counter() - t0, 4)}
