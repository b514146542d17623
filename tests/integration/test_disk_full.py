"""A results store on a full disk: a job fails once with a clear message, POST answers 507, /health says so.

The disk is real: a 2 MiB tmpfs mounted on ``<data_dir>/results`` (the tests run as root, as
``make test`` does) and filled to ENOSPC, so the kernel, not our code, decides that a write fails.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from phasescope.service.client import Client
from tests.integration.service import ApiServer, http

STORE_MIB = 2


@pytest.fixture
def small_store(data_dir: Path) -> Iterator[Path]:
    """``<data_dir>/results`` on its own 2 MiB tmpfs, unmounted afterwards."""
    store = data_dir / "results"
    store.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={STORE_MIB}m,mode=0755", "tmpfs", str(store)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"this test mounts a small tmpfs and needs root: {done.stderr.strip()}")
    try:
        yield store
    finally:
        if subprocess.run(["umount", str(store)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(store)], check=True)  # a process still had a file open


def _fill(directory: Path) -> Path:
    """Write one file until the filesystem refuses more (ENOSPC)."""
    filler = directory / "filler.bin"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler


def _executions(log: str, job: str) -> int:
    """How many times a worker took ``job`` from the queue (rq logs each start with the job id)."""
    return sum(1 for line in log.splitlines() if f"({job})" in line and " step " in line)


def test_full_store_fails_a_job_once_posts_507_and_health_reports_it(
    small_store, start_stack, redis_server, tiny_model
):
    model, steps = tiny_model
    # 1 MiB must stay free: the empty 2 MiB store passes, the filled one does not.
    stack = start_stack(workers=0, PHASESCOPE_MIN_FREE_DISK_MB="1")
    first = {"model": model, "measures": ["loss"], "checkpoints": steps[:1]}
    second = {"model": model, "measures": ["heads"], "checkpoints": steps[:1]}
    with Client(stack.url) as api:
        health = http.get(f"{stack.url}/api/v1/health")
        assert health.status_code == 200 and health.json()["store"]["free_mb"] > 1.0
        aid = api.submit(**first)["id"]  # recorded while there is room; no worker yet

        filler = _fill(small_store)

        # /health: degraded (507), with the figure and the setting; readiness still holds (reads work).
        health = http.get(f"{stack.url}/api/v1/health")
        store = health.json()["store"]
        assert health.status_code == 507 and health.json()["status"] == "degraded", health.json()
        assert store["low_space"] is True and store["free_mb"] < 1.0 and store["min_free_mb"] == 1.0
        assert http.get(f"{stack.url}/api/v1/health/ready").json()["ready"] is True

        # A new analysis is refused before anything is written: 507 saying what to do.
        refused = http.post(f"{stack.url}/api/v1/analyses", json=second)
        body = refused.json()
        assert refused.status_code == 507, body
        assert body["error"] == "insufficient_storage" and "PHASESCOPE_MIN_FREE_DISK_MB" in body["detail"]
        assert body["free_mb"] < 1.0 and body["min_free_mb"] == 1.0
        assert str(stack.data_dir) not in refused.text

        # The recorded analysis runs on a worker and meets ENOSPC at its first write: failed at once.
        worker = stack.add_worker()
        state = api.wait(aid, timeout=180, poll=0.2, progress=False)
        assert state["status"] == "failed", (state, stack.logs())
        [error] = state["errors"]
        assert "no space is left" in error["error"] and "free disk space" in error["error"], error
        job = f"{aid}-{steps[0]}"
        conn = redis.Redis.from_url(redis_server.url)
        assert conn.llen("rq:queue:phasescope") == 0  # nothing re-enqueued
        assert _executions(worker.tail(50_000), job) == 1, worker.tail()  # ran once: no retries
        parts = small_store / aid / "parts"
        assert not parts.exists() or not list(parts.iterdir())  # no part, no temporary file left

    # Without the early check (0 disables it), writing the request record itself fails: 507 too.
    stack.api.stop()
    stack.api = ApiServer({**stack.env, "PHASESCOPE_MIN_FREE_DISK_MB": "0"}, stack.log_dir).start()
    refused = http.post(f"{stack.url}/api/v1/analyses", json=second)
    assert refused.status_code == 507, refused.text
    assert (
        refused.json()["error"] == "insufficient_storage" and "no space is left" in refused.json()["detail"]
    )
    assert str(stack.data_dir) not in refused.text

    filler.unlink()  # space again: healthy, and the refused analysis is accepted
    health = http.get(f"{stack.url}/api/v1/health")
    assert health.status_code == 200 and health.json()["store"]["low_space"] is False
    assert http.post(f"{stack.url}/api/v1/analyses", json=second).status_code == 202
