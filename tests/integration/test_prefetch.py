"""A worker reads the next queued checkpoint of an analysis while it measures the current one.

Real API, real Redis, real RQ worker processes, a tiny series written in the test. What a worker did
is read from the jobs' meta in Redis (``prefetched``: this step's weights were read ahead;
``prefetching``: the step it started reading) and from its log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import redis
from rq import Queue
from rq.job import Job

from phasescope.analysis.run import run_local
from phasescope.schemas import InputSpec, MeasureParams
from phasescope.service.client import Client
from tests.helpers import rewrite_step
from tests.integration.service import sorted_table, wait_for

MEASURES = ["entropy", "heads"]


def hold_worker(ready: str, go: str, limit_s: float = 300.0) -> None:
    """An RQ job that holds its worker: it waits for the worker's read ahead to finish, writes what
    was read ahead to ``ready``, and returns once the test creates ``go``."""
    from workers.jobs import model_cache

    prefetcher = model_cache().prefetcher
    assert prefetcher is not None
    prefetcher.wait()
    Path(ready).write_text(json.dumps(prefetcher.pending))
    deadline = time.monotonic() + limit_s  # never outlive a test that failed before releasing it
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the worker")
        time.sleep(0.05)


def _metas(url: str, aid: str, steps: list[int]) -> dict[int, dict]:
    conn = redis.Redis.from_url(url)
    try:
        return {s: Job.fetch(f"{aid}-{s}", connection=conn).get_meta() for s in steps}
    finally:
        conn.close()


def _local(model: str, steps: list[int], inputs: InputSpec) -> pd.DataFrame:
    table, _ = run_local(model, steps, MEASURES, inputs, MeasureParams(), prefetch=False)
    return sorted_table(table)


def test_a_worker_measures_prefetched_steps_with_the_same_results(start_stack, redis_server, tiny_model):
    model, steps = tiny_model
    stack = start_stack(workers=0)  # every job is queued before the worker takes the first one
    with Client(stack.url) as api:
        aid = api.submit(model, measures=MEASURES)["id"]
        worker = stack.add_worker()
        assert api.wait(aid, timeout=180, poll=0.2, progress=False)["status"] == "finished", stack.logs()
        on = sorted_table(api.results(aid))
        metas = _metas(redis_server.url, aid, steps)
        # One worker takes the jobs in order: every step after the first was read while the one
        # before it was measured, and each job started reading the next one.
        assert [metas[s]["prefetched"] for s in steps] == [False] + [True] * (len(steps) - 1)
        assert [metas[s]["prefetching"] for s in steps] == [*steps[1:], None]
        assert worker.tail(100_000).count("weights prefetched while the previous job ran") == len(steps) - 1
        assert "prefetch on" in worker.tail(100_000)

        # The same sweep on other prompts with prefetch off: nothing is read ahead.
        worker.stop()
        stack.env["PHASESCOPE_PREFETCH_CHECKPOINTS"] = "false"
        off_aid = api.submit(model, measures=MEASURES, inputs={"seed": 1})["id"]
        second = stack.add_worker()
        off_state = api.wait(off_aid, timeout=180, poll=0.2, progress=False)
        assert off_state["status"] == "finished", (off_state["errors"], stack.logs())
        off = sorted_table(api.results(off_aid))
        metas = _metas(redis_server.url, off_aid, steps)
        assert not any(m["prefetched"] for m in metas.values())
        assert all(m["prefetching"] is None for m in metas.values())
        assert "prefetch off" in second.tail(100_000)
    # Both are what the in-process sweep without prefetch computes, value for value.
    pd.testing.assert_frame_equal(on, _local(model, steps, InputSpec()))
    pd.testing.assert_frame_equal(off, _local(model, steps, InputSpec(seed=1)))


def test_a_step_rewritten_after_it_was_prefetched_is_not_served_stale(
    start_stack, redis_server, tiny_model, data_dir, tmp_path
):
    model, steps = tiny_model
    first, second = steps[0], steps[1]
    stack = start_stack(workers=0)
    conn = redis.Redis.from_url(redis_server.url)
    ready, go = tmp_path / "ready", tmp_path / "go"
    try:
        with Client(stack.url) as api:
            old = api.submit(model, checkpoints=[first, second], measures=MEASURES)["id"]
            # The queue: the first step, a job that holds the worker, the second step (still queued,
            # so the first job reads it ahead).
            queue = Queue("phasescope", connection=conn)
            queue.remove(f"{old}-{second}")
            hold = queue.enqueue(hold_worker, str(ready), str(go))
            queue.push_job_id(f"{old}-{second}")
            assert queue.get_job_ids() == [f"{old}-{first}", hold.id, f"{old}-{second}"]
            stack.add_worker()
            wait_for(ready.exists, 180, "the worker to read the second step ahead", interval=0.1)
            assert json.loads(ready.read_text()) == [model, second]  # read and waiting in memory

            rewrite_step(data_dir / "models" / "tiny", second)
            new = api.submit(model, checkpoints=[first, second], measures=MEASURES)["id"]
            assert new != old  # the new weights are a new analysis, queued behind the old one
            go.touch()

            # The old analysis's job finds the files changed since it was submitted: it fails.
            old_state = api.wait(old, timeout=180, poll=0.2, progress=False)
            assert old_state["status"] == "partial", stack.logs()
            assert (
                f"step {second} changed after this analysis was submitted" in old_state["errors"][0]["error"]
            )
            # The new one is measured on the new files: the weights read ahead were dropped.
            assert api.wait(new, timeout=180, poll=0.2, progress=False)["status"] == "finished", stack.logs()
            fresh = sorted_table(api.results(new))
            assert _metas(redis_server.url, new, [second])[second]["prefetched"] is False
            assert f"prefetch of {model} step {second} discarded: its files changed" in stack.logs()
    finally:
        conn.close()
    pd.testing.assert_frame_equal(fresh, _local(model, [first, second], InputSpec()))
