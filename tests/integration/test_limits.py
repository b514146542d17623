"""Bounded work and state: cost ceiling, write rate, queue cap, stopping running jobs, retention, Redis memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from phasescope.config import get_settings
from tests.integration.service import REPO, http, wait_for

LOOP = ["loss"]


def _error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and {"detail", "field"} <= set(body), body
    if field is not None:
        assert body["field"] == field, body
    return body


def test_cost_ceiling_queue_cap_and_write_rate(start_stack, tiny_model):
    model, steps = tiny_model
    # No worker: jobs stay queued. A bucket of 5 writes refilling at one per two minutes.
    stack = start_stack(
        workers=0,
        PHASESCOPE_WRITE_BURST="5",
        PHASESCOPE_WRITE_RATE_PER_MIN="0.5",
        PHASESCOPE_MAX_QUEUED_JOBS="3",
        PHASESCOPE_MAX_JOB_UNITS="500",
    )
    url = f"{stack.url}/api/v1/analyses"
    # 1. Over the cost ceiling: 422 naming the parameter that dominates and the setting.
    heavy = {"model": model, "measures": ["llc"], "params": {"llc_chains": 16, "llc_draws": 2000}}
    body = _error(http.post(url, json=heavy), 422, "invalid_request", "params.llc_draws")
    assert "max_job_units" in body["detail"] and "llc_draws" in body["detail"]
    # 2. Two jobs fit on the queue (cap 3); two more do not: 503 with Retry-After.
    first = http.post(url, json={"model": model, "measures": LOOP, "checkpoints": steps[:2]})
    assert first.status_code == 202, first.text
    full = http.post(url, json={"model": model, "measures": LOOP, "checkpoints": steps[2:4]})
    body = _error(full, 503, "queue_full")
    assert "max_queued_jobs" in body["detail"] and int(full.headers["Retry-After"]) > 0
    # Reads are never limited.
    for _ in range(25):
        assert http.get(f"{url}/{first.json()['id']}").status_code == 200
    # 4. A DELETE is a write too; with the queue emptied, one more job fits.
    assert http.delete(f"{url}/{first.json()['id']}").json()["status"] == "cancelled"
    assert (
        http.post(url, json={"model": model, "measures": LOOP, "checkpoints": steps[4:5]}).status_code == 202
    )
    # 6. The sixth write of the burst: 429 with Retry-After (about two minutes) and a JSON error.
    limited = http.post(url, json={"model": model, "measures": LOOP, "checkpoints": steps[2:3]})
    body = _error(limited, 429, "rate_limited")
    assert "write_burst" in body["detail"] and 60 <= int(limited.headers["Retry-After"]) <= 121
    assert http.get(f"{url}/{first.json()['id']}").status_code == 200


def test_delete_stops_a_running_job_and_the_worker_takes_the_next(start_stack, tiny_model):
    model, steps = tiny_model
    stack = start_stack(workers=1, PHASESCOPE_MAX_JOB_UNITS="1e12", PHASESCOPE_MAX_ANALYSIS_UNITS="1e12")
    url = f"{stack.url}/api/v1/analyses"
    # Minutes of work on one thread: a 41 × 41 loss surface, then power-iteration sharpness and SGLD.
    long = {
        "model": model,
        "checkpoints": steps[-1:],
        "measures": ["landscape", "sharpness", "llc"],
        "inputs": {"n_prompts": 64, "seq_len": 32},
        "params": {
            "heavy_prompts": 64,
            "landscape_points": 41,
            "sharpness_method": "power",
            "sharpness_k": 20,
            "hutchinson_samples": 256,
            "llc_chains": 16,
            "llc_draws": 2000,
        },
    }
    aid = http.post(url, json=long).json()["id"]
    running = wait_for(
        lambda: [
            r for r in http.get(f"{url}/{aid}").json()["progress"]["running"] if r.get("stage") == "measuring"
        ],
        120,
        "the long job measuring",
    )[0]
    time.sleep(1.0)  # well inside the measure, not at its first line
    t0 = time.monotonic()
    assert http.delete(f"{url}/{aid}").status_code == 200
    state = wait_for(
        lambda: (s := http.get(f"{url}/{aid}").json())["status"] in ("cancelled", "partial") and s,
        60,
        "the stop",
    )
    stopped_after = time.monotonic() - t0
    assert state["status"] == "cancelled" and state["progress"]["done"] == 0, state
    [error] = state["errors"]
    assert error["status"] == "stopped" and error["checkpoint"] == running["checkpoint"], error
    assert stopped_after < 15, f"stopped {stopped_after:.1f} s after DELETE"
    parts = stack.data_dir / "results" / aid / "parts"
    assert not parts.exists() or not list(parts.glob("*.parquet"))
    # The same worker process goes on to the next job.
    worker = stack.workers[0]
    assert worker.process is not None and worker.process.poll() is None
    nxt = http.post(url, json={"model": model, "measures": LOOP, "checkpoints": steps[:1]}).json()["id"]
    final = wait_for(
        lambda: (
            (s := http.get(f"{url}/{nxt}").json())["status"] != "queued" and s["status"] != "running" and s
        ),
        120,
        "the next job",
    )
    assert final["status"] == "finished", (final, stack.logs())
    assert "stopped" in worker.tail(20000).lower()


def test_embedded_redis_caps_memory_and_never_evicts(data_dir, monkeypatch):
    from phasescope.service.redis_conn import EmbeddedRedis, connect

    monkeypatch.setenv("PHASESCOPE_REDIS_MAXMEMORY_MIB", "16")
    get_settings.cache_clear()
    settings = get_settings()
    conn = connect(settings)
    try:
        assert conn.config_get("maxmemory")["maxmemory"] == str(16 * 1024 * 1024)
        assert conn.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        conn.rpush("rq:queue:phasescope", "job-that-must-survive")
        blob = b"x" * (1024 * 1024)
        with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
            for i in range(40):  # 40 MiB into a 16 MiB server: a write fails loudly
                conn.set(f"filler:{i}", blob)
        assert conn.lrange("rq:queue:phasescope", 0, -1) == [b"job-that-must-survive"]
    finally:
        conn.close()
        EmbeddedRedis(settings.redis_dir).stop()


def _analysis(store, aid_seed: int, *, finished_days_ago: float | None, created_days_ago: float) -> str:
    """An analysis recorded the way phasescope.service.queue records one, finished or not, with chosen ages."""
    from phasescope.measures.tables import tidy
    from phasescope.schemas import AnalysisRequest, analysis_id

    request = AnalysisRequest(model="tiny", measures=["loss"], checkpoints=[aid_seed])
    aid = analysis_id(request)
    now = time.time()
    store.save_request(aid, request, {"steps": [aid_seed], "created_at": now - created_days_ago * 86400})
    if finished_days_ago is not None:
        store.write_part(aid, aid_seed, tidy("loss", "loss", 1.0, checkpoint=aid_seed))
        store.finalize(aid, {"id": aid, "status": "finished", "finished_at": now - finished_days_ago * 86400})
    return aid


def test_gc_deletes_old_finished_and_stale_keeps_new_and_live(data_dir, redis_server):
    from rq import Queue

    from backend.deps import JOB_FUNCTION
    from phasescope.service.queue import job_id
    from phasescope.service.store import ResultStore

    store = ResultStore(data_dir / "results")
    old = _analysis(store, 1, finished_days_ago=40, created_days_ago=41)
    new = _analysis(store, 2, finished_days_ago=1, created_days_ago=1)
    live = _analysis(store, 3, finished_days_ago=None, created_days_ago=50)  # queued for 50 days
    stale = _analysis(store, 4, finished_days_ago=None, created_days_ago=50)  # no job left
    conn = redis.Redis.from_url(redis_server.url)
    queue = Queue("phasescope", connection=conn)
    queue.enqueue(JOB_FUNCTION, job_id=job_id(live, 3), kwargs={"aid": live})
    # The analysis of this job was deleted:
    gone = queue.enqueue(JOB_FUNCTION, job_id=job_id("f" * 24, 7), kwargs={"aid": "f" * 24})
    orphan = data_dir / "results" / ("e" * 24)  # a folder without request.json, hours old
    orphan.mkdir()
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    cache = data_dir / "results" / "_cache" / "measures"
    cache.mkdir(parents=True)
    (unused := cache / f"{'a' * 24}.parquet").write_bytes(b"old")
    (used := cache / f"{'b' * 24}.parquet").write_bytes(b"new")
    os.utime(unused, (time.time() - 40 * 86400, time.time() - 40 * 86400))

    env = {
        **os.environ,
        "PHASESCOPE_DATA_DIR": str(data_dir),
        "REDIS_URL": redis_server.url,
        "PHASESCOPE_RETENTION_DAYS": "30",
        "PYTHONPATH": str(REPO),
    }

    def gc(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "phasescope", "gc", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = gc("--dry-run")
    for name in (old, stale, orphan.name, gone.id, unused.name):
        assert "would delete" in listed and name in listed, (name, listed)
    for name in (new, used.name):
        assert name not in listed
    assert f"kept analysis {live}" in listed
    assert all((data_dir / "results" / a).is_dir() for a in (old, new, live, stale)) and unused.is_file()

    gc()
    assert sorted(store.list_ids()) == sorted([new, live])
    assert store.is_finished(new) and json.loads((data_dir / "results" / live / "request.json").read_text())
    assert not orphan.exists() and not unused.exists() and used.is_file()
    assert conn.exists(f"rq:job:{job_id(live, 3)}") and not conn.exists(f"rq:job:{gone.id}")
    assert queue.count == 1
    from phasescope.service.gc import collect

    assert not collect(store, conn, get_settings()).lines()  # nothing left to collect
    conn.close()


def test_gc_without_redis_keeps_every_unfinished_analysis(data_dir):
    from phasescope.service.gc import collect, delete
    from phasescope.service.store import ResultStore

    store = ResultStore(data_dir / "results")
    old = _analysis(store, 1, finished_days_ago=40, created_days_ago=41)
    stale = _analysis(store, 4, finished_days_ago=None, created_days_ago=50)
    found = collect(store, None)
    assert list(found.expired) == [old] and not found.stale and not found.redis_ok
    delete(found, store, None)
    assert store.list_ids() == [stale]
    assert Path(data_dir / "results" / stale / "request.json").is_file()
