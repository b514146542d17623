"""The worker process behind ``phasescope worker``: one RQ worker on the configured Redis.

It runs jobs in its own process (rq's SimpleWorker, no fork per job), so torch is imported once and
loaded models stay in ``workers.jobs.model_cache()`` between jobs. A heartbeat thread keeps the job's
RQ records alive while it runs; when the process dies (``kill -9``) the heartbeats stop, the job is
taken as abandoned after about three missed beats and RQ retries it (``Retry``) on another worker.

When Redis goes away (restart, network) the worker waits for it and carries on with a fresh
connection; a job cut off mid-way is retried the same way.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from typing import Any

import redis
from rq.exceptions import StopRequested
from rq.job import Job
from rq.worker import SimpleWorker, WorkerStatus

from phasescope.config import Settings, get_settings
from phasescope.service.storage import remove_orphan_temp_files

__all__ = ["PhasescopeWorker", "run_worker", "setup_torch"]

log = logging.getLogger("phasescope.worker")


class PhasescopeWorker(SimpleWorker):
    """A SimpleWorker that heartbeats during jobs and declares a dead worker's job abandoned quickly."""

    max_connection_wait_time = 5.0  # seconds between reconnection attempts while Redis is away

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # Three missed beats and a little slack (rq's default adds a flat minute).
        return int(3 * self.job_monitoring_interval + 2)

    def kill_horse(self, sig: Any = None) -> None:
        # RQ's stop-job command lands here (on the pub/sub thread) after marking the job stopped.
        # There is no horse to kill: interrupt the job in this process instead (workers.stop).
        from workers.stop import request_stop

        request_stop(self._stopped_job_id)

    def execute_job(self, job: Job, queue: Any) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, stop), daemon=True, name="heartbeat")
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def request_stop(self, signum: int, frame: Any) -> None:
        try:
            super().request_stop(signum, frame)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis is away, so a warm shutdown cannot be recorded: stop now. A job cut short here
            # is still STARTED in Redis and will be retried once its heartbeats are missed.
            raise SystemExit(0) from exc

    def _beat(self, job: Job, execution: Any, stop: threading.Event) -> None:
        while not stop.wait(self.job_monitoring_interval):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception as exc:  # a missed beat is not fatal; Redis may be restarting
                self.log.warning("heartbeat for %s failed: %s", job.id, exc)


def setup_torch(threads: int, settings: Settings) -> str:
    """Import torch and the measures once, set CPU threads; returns the device jobs will use."""
    import torch
    import transformer_lens  # noqa: F401  (seconds of imports: done here, not in the first job)

    import phasescope.analysis.run  # noqa: F401  (the measures)
    from phasescope.analysis.run import pick_device

    threads = threads or settings.torch_threads
    if threads:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(max(1, min(threads, 4)))
    return pick_device(settings.device)


def run_worker(
    settings: Settings | None = None, *, burst: bool = False, threads: int = 0, name: str | None = None
) -> None:
    """Run one worker until SIGTERM/SIGINT (or, with ``burst``, until the queue is empty).

    Args:
        settings: settings (default: the process's).
        burst: quit when no job is left.
        threads: torch CPU threads (0: ``Settings.torch_threads``, or torch's default).
        name: worker name (default: host and pid).
    """
    from phasescope.service.redis_conn import connect

    settings = settings or get_settings()
    # Temporary files of writers killed mid-write (old enough that no live writer owns them).
    for root in (settings.store_dir, settings.zoo_dir):
        remove_orphan_temp_files(root)
    device = setup_torch(threads, settings)
    hb = settings.worker_heartbeat_s
    base = name or f"phasescope-{os.uname().nodename}-{os.getpid()}"
    log.info(
        "worker %s: device %s, queue %s, prefetch %s",
        base,
        device,
        settings.queue_name,
        "on" if settings.prefetch_checkpoints else "off",
    )
    for attempt in itertools.count():
        # A fresh name per attempt: after a Redis restart the old worker's record may still be there.
        worker_name = base if attempt == 0 else f"{base}.{attempt}"
        try:
            conn = connect(settings, socket_timeout=None)
            worker = PhasescopeWorker(
                [settings.queue_name],
                connection=conn,
                name=worker_name,
                # An idle worker blocks on the queue for worker_ttl - 15 s between maintenance passes.
                worker_ttl=3 * hb + 15,
                job_monitoring_interval=hb,
                maintenance_interval=settings.worker_maintenance_s,
            )
            worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
            if burst or worker._stop_requested or getattr(worker, "_shutdown_requested_date", None):
                return
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("worker %s: Redis unavailable (%s); retrying", worker_name, exc)
        # work() returned without a stop request: Redis went away under it. Start over, and let
        # SIGTERM/SIGINT end the process at once until the next worker installs its handlers.
        signal.signal(signal.SIGTERM, _exit_now)
        signal.signal(signal.SIGINT, _exit_now)
        try:
            time.sleep(1.0)
        except StopRequested:
            return


def _exit_now(signum: int, frame: Any) -> None:
    raise SystemExit(0)
