"""workers.stop in this process: a stop interrupts a job before its commit point, never during its write."""

from __future__ import annotations

import threading
import time

import pytest

from workers import stop


def _busy(seconds: float) -> None:
    """Python work (the signal handler runs between bytecodes), bounded so a failure cannot hang."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(1000))


def test_a_stop_from_another_thread_interrupts_the_running_job():
    stop.begin("job-1")
    try:
        with pytest.raises(stop.JobStopped, match="job-1"):
            threading.Thread(target=stop.request_stop, args=("job-1",)).start()
            _busy(30)
    finally:
        stop.end()


def test_a_stop_past_the_commit_point_lets_the_write_finish():
    stop.begin("job-2")
    try:
        stop.commit()
        assert stop.request_stop("job-2")  # taken note of, not acted on
        _busy(0.2)  # the "write": not interrupted
    finally:
        stop.end()


def test_a_stop_before_the_commit_point_raises_there():
    stop.begin("job-3")
    try:
        stop._state.requested = "job-3"  # as if the signal had landed in C code that ignored it
        with pytest.raises(stop.JobStopped, match="before it wrote"):
            stop.commit()
        with pytest.raises(stop.JobStopped):
            stop.commit(cancelled=True)
    finally:
        stop.end()


def test_stops_for_other_jobs_or_after_the_end_do_nothing():
    stop.begin("job-4")
    try:
        assert not stop.request_stop("job-5")
        _busy(0.1)
    finally:
        stop.end()
    assert not stop.request_stop("job-4")
    with pytest.raises(stop.JobStopped, match="cancelled"):
        stop.begin("job-6", cancelled=True)
    stop.end()
