"""Zoo training on the service's RQ workers: one job per series, the workers train them in parallel.

``phasescope zoo train induction-2l --seeds 0-4 --service`` enqueues one job per seed on the analysis
queue; each worker that takes one trains that series into its zoo directory (the data directory the
service shares) on one torch thread. The job function lives with the workers and is named by the
``train-job`` entry point (pyproject.toml), so the library neither imports nor names it. A job id is
the series' name, so asking twice while one is queued or running does not train it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from phasescope.config import Settings, get_settings
from phasescope.errors import ServiceUnavailable

__all__ = [
    "TRAIN_JOB_TIMEOUT_S",
    "enqueue_training",
    "train_job_function",
    "train_on_service",
    "wait_training",
]

TRAIN_JOB_TIMEOUT_S = 6 * 3600
"""A training job's time limit: grokking-p59 takes ~2 CPU minutes alone, ~17 at a load of 13 on 2 cores."""
_DONE = ("finished", "failed", "stopped", "canceled")


def train_job_function() -> str:
    """The dotted name of the workers' training job, from the installed ``train-job`` entry point.

    Raises:
        ServiceUnavailable: the entry point is not installed (``pip install -e .`` registers it).
    """
    from importlib.metadata import entry_points

    found = entry_points(group="phasescope.programs", name="train-job")
    if not found:
        raise ServiceUnavailable(
            "the training job is not installed here: run 'pip install -e .' in the repository"
        )
    module, _, attr = next(iter(found)).value.partition(":")
    return f"{module}.{attr}"


def _job_id(name: str) -> str:
    return f"zoo-train-{name}"


def enqueue_training(
    conn: Any, names: Sequence[str], job_function: str, settings: Settings | None = None
) -> list[str]:
    """Enqueue one training job per series (variant names); a queued or running one is kept.

    Args:
        conn: the service's Redis.
        names: series names (``induction-2l-seed3``).
        job_function: the job's dotted name (``train_job_function()``).
        settings: the queue's name.

    Returns:
        The job ids, in the order of ``names``.
    """
    from rq.job import Job

    from phasescope.service.queue import get_queue
    from phasescope.zoo.variants import parse_series_name

    queue = get_queue(conn, settings or get_settings())
    ids = []
    for name in (parse_series_name(n).name for n in names):
        jid = _job_id(name)
        job = Job.fetch_many([jid], connection=conn)[0]
        if job is not None and job.get_status(refresh=False) not in _DONE:
            ids.append(jid)
            continue
        if job is not None:
            job.delete()
        queue.enqueue(
            job_function,
            name,
            job_id=jid,
            job_timeout=TRAIN_JOB_TIMEOUT_S,
            result_ttl=86400,
            failure_ttl=86400,
            description=f"train zoo:{name}",
        )
        ids.append(jid)
    return ids


def wait_training(
    conn: Any,
    ids: Sequence[str],
    poll: float = 1.0,
    timeout: float | None = None,
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Poll the training jobs until each has finished or failed.

    Args:
        conn: the service's Redis.
        ids: job ids from ``enqueue_training``.
        poll: seconds between polls (a job is a process elsewhere: there is nothing to wait on).
        timeout: give up after this many seconds (None: wait as long as it takes).
        on_done: called with each job id and its outcome as it ends.

    Returns:
        Per job id: ``{"status", "model", "trained", "seconds"}`` when finished, ``{"status", "error"}``
        (the error's last line) otherwise.

    Raises:
        TimeoutError: jobs still running after ``timeout``.
    """
    from rq.job import Job

    from phasescope.service.queue import _error_line

    deadline = None if timeout is None else time.monotonic() + timeout
    outcome: dict[str, dict[str, Any]] = {}
    while len(outcome) < len(ids):
        for jid, job in zip(ids, Job.fetch_many(list(ids), connection=conn), strict=True):
            if jid in outcome:
                continue
            status = "missing" if job is None else str(job.get_status(refresh=False).value)
            if status == "finished":
                outcome[jid] = {"status": status, **(job.return_value() or {})}
            elif status in _DONE or status == "missing":
                error = "the job is gone from Redis" if job is None else _error_line(job)
                outcome[jid] = {"status": status, "error": error}
            else:
                continue
            if on_done is not None:
                on_done(jid, outcome[jid])
        if len(outcome) < len(ids):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids) - len(outcome)} training jobs still running after {timeout} s")
            time.sleep(poll)
    return outcome


def train_on_service(
    names: Sequence[str], settings: Settings | None = None, say: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """Enqueue ``names`` on the service's queue and wait for its workers (``zoo train --service``).

    Raises:
        ServiceUnavailable: no Redis, or a job failed (its error's last line is in the message).
    """
    from phasescope.service.redis_conn import connect

    settings = settings or get_settings()
    conn = connect(settings)
    ids = enqueue_training(conn, names, train_job_function(), settings)
    say(f"{len(ids)} training jobs on the queue {settings.queue_name!r}; the workers train them")

    def done(jid: str, outcome: dict[str, Any]) -> None:
        if outcome["status"] == "finished":
            how = f"trained in {outcome['seconds']:.1f} s" if outcome.get("trained") else "already trained"
            say(f"{outcome['model']} {how} by a worker")
        else:
            say(f"{jid.removeprefix('zoo-train-')}: {outcome['status']}: {outcome['error']}")

    outcome = wait_training(conn, ids, on_done=done)
    failed = [jid for jid, o in outcome.items() if o["status"] != "finished"]
    if failed:
        raise ServiceUnavailable(f"{len(failed)} of {len(ids)} training jobs did not finish (see above)")
    return outcome
