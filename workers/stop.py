"""Stopping a running job on request (DELETE /analyses/{id}), in a worker that has no work horse.

RQ stops a job with ``rq.command.send_stop_job_command``: the worker running it gets the command on
its pub/sub thread, marks the job as stopped (``worker._stopped_job_id``) and calls ``kill_horse()``,
which kills the forked child that runs the job. Our workers run jobs in their own process (a
SimpleWorker, so torch and the loaded models stay warm between jobs), where ``kill_horse()`` does
nothing. Here it becomes a signal to the worker's own main thread instead: ``request_stop`` sends
``SIGUSR1``, and the handler raises ``JobStopped`` inside the job function, the way RQ's own job
timeout raises ``JobTimeoutException`` from ``SIGALRM``. RQ then records the job as ``stopped`` (not
failed) and never retries it, and the worker takes the next job. A long measure is interrupted
between two Python bytecodes, i.e. within one tensor operation of the request.

The handler raises only while a job function is inside ``begin()`` … ``end()`` and has not reached
its commit point (``commit()``, just before its part is written): a stop that arrives while the part
is being written lets the write finish, so a stopped job either writes its whole part or none, and
RQ's own bookkeeping around the job is never interrupted. ``begin()`` and ``commit()`` also read the
store's cancelled mark, which catches a job that started between the DELETE's look at the queue and
its cancel.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

__all__ = ["JobStopped", "begin", "commit", "end", "request_stop"]

_SIGNAL = signal.SIGUSR1


class JobStopped(Exception):
    """Raised inside a running job that was asked to stop (its analysis was cancelled)."""


class _State:
    """What the main thread is running, and what the pub/sub thread asked to stop (one per process)."""

    current: str | None = None  # the job id inside begin() ... end()
    requested: str | None = None  # the job id a stop-job command named
    committing = False  # past the commit point: stops wait for the job to end
    installed = False  # our SIGUSR1 handler is in place (it stays: SIG_DFL would kill the process)


_state = _State()
_lock = threading.Lock()


def _on_signal(signum: int, frame: Any) -> None:
    if _state.current is not None and _state.requested == _state.current and not _state.committing:
        raise JobStopped(f"job {_state.current} was stopped: its analysis was cancelled")


def begin(job_id: str | None, cancelled: bool = False) -> None:
    """Mark the start of a job function's work: from here a stop request interrupts it.

    Args:
        job_id: the RQ job id (None outside RQ: nothing can stop it then).
        cancelled: the analysis is marked cancelled in the store already.

    Raises:
        JobStopped: ``cancelled``, or a stop for this job arrived before it began.
    """
    if job_id is None:
        return
    if threading.current_thread() is threading.main_thread() and not _state.installed:
        signal.signal(_SIGNAL, _on_signal)
        _state.installed = True
    with _lock:
        if _state.current != job_id:
            _state.requested = None
        _state.current, _state.committing = job_id, False
    if cancelled or _state.requested == job_id:
        raise JobStopped(f"job {job_id} was stopped: its analysis was cancelled")


def commit(cancelled: bool = False) -> None:
    """The commit point, just before the job writes its result: stop now, or not at all.

    Raises:
        JobStopped: a stop arrived (or the analysis was marked cancelled) before this point.
    """
    with _lock:
        stop = _state.current is not None and (cancelled or _state.requested == _state.current)
        _state.committing = not stop
    if stop:
        raise JobStopped(f"job {_state.current} was stopped before it wrote its result")


def end() -> None:
    """The job function is done (finished, failed or stopped): later stop requests do nothing."""
    with _lock:
        _state.current, _state.requested, _state.committing = None, None, False


def request_stop(job_id: str | None) -> bool:
    """Ask the job running in this process's main thread to stop (from any thread).

    Returns:
        True when ``job_id`` is the job running now and the signal was sent.
    """
    with _lock:
        if job_id is None or job_id != _state.current:
            return False
        _state.requested = job_id
        send = _state.installed and not _state.committing
    if send:
        os.kill(os.getpid(), _SIGNAL)
    return True
