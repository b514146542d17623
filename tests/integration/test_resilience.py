"""Workers killed with SIGKILL, Redis restarted or wiped mid-sweep, jobs over their timeout."""

from __future__ import annotations

import pandas as pd
import pytest
import redis

from phasescope.service.client import Client
from tests.helpers import tiny_series
from tests.integration.service import http, wait_for

MEASURES = ["entropy", "heads", "loss", "spectra"]
# About a second per checkpoint on one CPU thread: long enough to interrupt a job half-way.
INPUTS = {"n_prompts": 24, "seq_len": 128}
# The loss surface adds ~8 s per checkpoint: far past a 1 s job timeout on any machine.
SLOW_MEASURES = [*MEASURES, "landscape"]


@pytest.fixture
def medium_model(data_dir):
    steps = tiny_series(
        data_dir / "models" / "medium", (0, 10, 20, 30), n_ctx=128, d_model=128, n_heads=8, d_head=16
    )
    return "medium", steps


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if c != "value"]
    frame = frame.copy()
    frame["value"] = frame["value"].astype("float32")
    return frame.sort_values(keys, na_position="first").reset_index(drop=True)[sorted(frame.columns)]


def _assert_same_as_local(remote: pd.DataFrame, model: str, steps: list[int]) -> None:
    from phasescope.analysis.run import run_local
    from phasescope.schemas import InputSpec, MeasureParams

    local, _ = run_local(model, steps, MEASURES, InputSpec(**INPUTS), MeasureParams())
    pd.testing.assert_frame_equal(_sorted(remote), _sorted(local), check_dtype=False)


def _running(api: Client, aid: str, stage: str = "measuring") -> list[dict]:
    return [r for r in api.status(aid)["progress"]["running"] if r.get("stage") == stage]


def test_worker_killed_mid_job_is_retried_with_identical_results(start_stack, medium_model):
    model, steps = medium_model
    stack = start_stack(workers=2)
    with Client(stack.url) as api:
        aid = api.submit(model, measures=MEASURES, inputs=INPUTS)["id"]
        victim_job = wait_for(lambda: _running(api, aid), 90, "a job half-way through", interval=0.05)[0]
        victim = next(w for w in stack.workers if w.process.pid == victim_job["pid"])
        victim.kill9()
        state = api.wait(aid, timeout=180, poll=0.3, progress=False)
        assert state["status"] == "finished", (state, stack.logs())
        remote = api.results(aid)
    survivor = next(w for w in stack.workers if w is not victim)
    assert f"step {victim_job['checkpoint']} " in survivor.tail(20000)  # the retry ran on the survivor
    _assert_same_as_local(remote, model, steps)


def test_redis_restarted_mid_sweep_loses_nothing(start_stack, redis_server, medium_model):
    model, steps = medium_model
    stack = start_stack(workers=1)
    with Client(stack.url) as api:
        aid = api.submit(model, measures=MEASURES, inputs=INPUTS)["id"]
        wait_for(
            lambda: api.status(aid)["progress"]["done"] >= 1 and _running(api, aid),
            120,
            "the sweep under way",
        )
        redis_server.restart(downtime=1.0)
        state = api.wait(aid, timeout=180, poll=0.3, progress=False)
        assert state["status"] == "finished", (state, stack.logs())
        remote = api.results(aid)
    assert sorted(remote["checkpoint"].unique()) == steps
    _assert_same_as_local(remote, model, steps)


def test_redis_wiped_finished_still_served_unfinished_resumed(start_stack, redis_server, tiny_model):
    model, steps = tiny_model
    stack = start_stack(workers=1)
    conn = redis.Redis.from_url(redis_server.url)
    with Client(stack.url) as api:
        done = api.submit(model, measures=["loss"], checkpoints=steps[:2])["id"]
        api.wait(done, timeout=120, poll=0.2, progress=False)
        stack.workers[0].stop()
        pending = api.submit(model, measures=["heads"], checkpoints=steps[:3])["id"]
        conn.flushall()
        # A finished analysis needs no Redis record: its status and tables come from the store.
        assert api.status(done)["status"] == "finished"
        assert len(api.results(done)) > 0
        assert (
            http.post(
                f"{stack.url}/api/v1/analyses",
                json={"model": model, "measures": ["loss"], "checkpoints": steps[:2]},
            ).status_code
            == 200
        )
        # The unfinished one lost its jobs with Redis; the next read enqueues them again.
        assert api.status(pending)["status"] == "queued"
        assert conn.llen("rq:queue:phasescope") == 3
        stack.add_worker()
        assert api.wait(pending, timeout=120, poll=0.2, progress=False)["status"] == "finished"


def test_job_over_its_timeout_fails_cleanly_without_retry(start_stack, medium_model):
    model, steps = medium_model
    stack = start_stack(workers=1, PHASESCOPE_JOB_TIMEOUT_BASE_S="1", PHASESCOPE_JOB_TIMEOUT_PER_UNIT_S="0")
    with Client(stack.url) as api:
        aid = api.submit(model, measures=SLOW_MEASURES, inputs=INPUTS, checkpoints=[steps[-1]])["id"]
        state = api.wait(aid, timeout=90, poll=0.2, progress=False)
    assert state["status"] == "failed"
    [error] = state["errors"]
    assert error["checkpoint"] == steps[-1] and "timeout" in error["error"].lower()
    assert stack.workers[0].tail(20000).count(f"step {steps[-1]} (") == 1  # ran once: not retried
    assert not (stack.data_dir / "results" / aid / "parts").exists() or not any(
        p.suffix == ".parquet" for p in (stack.data_dir / "results" / aid / "parts").iterdir()
    )
