"""The weights are part of an analysis's identity, and measured work is reused, not redone.

Real API, real Redis, a real RQ worker process, and a tiny series written in the test. Jobs are
counted in RQ's own registries and in the record each part carries (which measures it computed).
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from phasescope.service.client import Client
from phasescope.service.store import ResultStore
from tests.helpers import rewrite_step, tiny_series
from tests.integration.service import http, local_table, sorted_table

MEASURES = ["entropy", "heads"]


def _finished_jobs(url: str) -> dict[str, dict]:
    """Every job that finished on the queue: id -> its result (checkpoint, computed, reused)."""
    conn = redis.Redis.from_url(url)
    try:
        registry = FinishedJobRegistry(queue=Queue("phasescope", connection=conn))
        return {jid: Job.fetch(jid, connection=conn).return_value() for jid in registry.get_job_ids()}
    finally:
        conn.close()


def _queued(url: str) -> int:
    conn = redis.Redis.from_url(url)
    try:
        return int(conn.llen("rq:queue:phasescope"))
    finally:
        conn.close()


def _post(url: str, body: dict) -> tuple[int, dict]:
    r = http.post(f"{url}/api/v1/analyses", json=body)
    assert r.status_code in (200, 202), r.text
    return r.status_code, r.json()


# --- without services: identities and what the cache keys on --------------------------------------


def test_identity_follows_the_files_and_refuses_links_out_of_the_roots(data_dir, tmp_path):
    from phasescope.errors import PathNotAllowed
    from phasescope.models.identity import weights_identity

    series = data_dir / "models" / "tiny"
    steps = tiny_series(series, steps=(0, 10))
    first = weights_identity("tiny", steps)
    assert first == weights_identity("tiny", steps) and first[0] != first[10]
    # Same size and the same safetensors header (only values differ): the identity still changes.
    size = (series / "step_000010.safetensors").stat().st_size
    rewrite_step(series, 10)
    assert (series / "step_000010.safetensors").stat().st_size == size
    second = weights_identity("tiny", steps)
    assert second[0] == first[0] and second[10] != first[10]

    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((series / "step_000000.safetensors").read_bytes())
    (series / "step_000000.safetensors").unlink()
    os.symlink(outside, series / "step_000000.safetensors")
    with pytest.raises(PathNotAllowed) as err:
        weights_identity("tiny", steps)
    assert str(tmp_path) not in err.value.message  # names the file, not the server's directories


def test_every_measure_parameter_belongs_to_a_measure():
    from phasescope.measures.registry import measures
    from phasescope.schemas import MeasureParams

    # The registry's params are what the reuse keys name: each is a real field, and every field is read.
    named = {p for entry in measures() for p in entry.params}
    assert named == set(MeasureParams.model_fields)


# --- through the service --------------------------------------------------------------------------


def test_new_weights_give_a_new_analysis_and_the_old_one_stays(
    start_stack, redis_server, tiny_model, data_dir
):
    model, steps = tiny_model
    series = data_dir / "models" / "tiny"
    stack = start_stack(workers=1)
    store = ResultStore(data_dir / "results")
    body = {"model": model, "checkpoints": steps[:2], "measures": MEASURES}
    with Client(stack.url) as api:
        old = api.wait(api.submit(**body)["id"], timeout=180, poll=0.2, progress=False)
        assert old["status"] == "finished", stack.logs()
        assert set(old["weights"]) == {str(s) for s in steps[:2]}
        old_table = api.results(old["id"])

        # Unchanged weights: the same id, finished at once, no job.
        jobs_before = _finished_jobs(redis_server.url)
        code, same = _post(stack.url, body)
        assert (code, same["id"], same["status"]) == (200, old["id"], "finished")
        assert _finished_jobs(redis_server.url) == jobs_before and _queued(redis_server.url) == 0

        # One step's file rewritten under the same request: a new id and new results.
        rewrite_step(series, steps[1])
        code, new = _post(stack.url, body)
        assert new["id"] != old["id"]
        assert new["weights"][str(steps[0])] == old["weights"][str(steps[0])]
        assert new["weights"][str(steps[1])] != old["weights"][str(steps[1])]
        assert api.wait(new["id"], timeout=180, poll=0.2, progress=False)["status"] == "finished", (
            stack.logs()
        )
        new_table = api.results(new["id"])
        # The rewritten step matches its new weights (the worker had the old ones in memory).
        at = new_table[new_table["checkpoint"] == steps[1]]
        pd.testing.assert_frame_equal(
            sorted_table(at), sorted_table(local_table(model, [steps[1]], MEASURES)), check_dtype=False
        )
        before = old_table[old_table["checkpoint"] == steps[1]]
        assert not sorted_table(before)["value"].equals(sorted_table(at)["value"])
        # The unchanged step came from the reuse cache, not from a job.
        records = store.part_meta(new["id"])
        assert records[steps[0]]["computed"] == [] and records[steps[1]]["computed"] == MEASURES

        # The old analysis is still stored, under its old id, with its old numbers.
        assert store.is_finished(old["id"]) and api.status(old["id"])["status"] == "finished"
        pd.testing.assert_frame_equal(sorted_table(api.results(old["id"])), sorted_table(old_table))

        # A zoo series retrained in place: its manifest changes, so every step is new.
        from phasescope.models.series import read_manifest, write_manifest

        zoo_dir = data_dir / "zoo" / "induction-2l"
        tiny_series(zoo_dir, steps=(0, 10))
        zbody = {"model": "zoo:induction-2l", "checkpoints": "all", "measures": ["entropy"]}
        zold = api.wait(api.submit(**zbody)["id"], timeout=180, poll=0.2, progress=False)
        assert zold["status"] == "finished", stack.logs()
        manifest = read_manifest(zoo_dir)
        write_manifest(zoo_dir, manifest.model_copy(update={"seed": 1, "training": {"retrained": True}}))
        code, znew = _post(stack.url, zbody)
        assert code == 202 and znew["id"] != zold["id"]
        assert all(znew["weights"][k] != zold["weights"][k] for k in zold["weights"])
        assert api.wait(znew["id"], timeout=180, poll=0.2, progress=False)["status"] == "finished"
        assert {s: r["computed"] for s, r in store.part_meta(znew["id"]).items()} == {
            0: ["entropy"],
            10: ["entropy"],
        }
        assert store.is_finished(zold["id"])


def test_more_measures_and_checkpoints_compute_only_what_is_missing(
    start_stack, redis_server, tiny_model, data_dir
):
    model, steps = tiny_model
    a, b = steps[:2], steps[2:3]
    stack = start_stack(workers=1)
    store = ResultStore(data_dir / "results")
    with Client(stack.url) as api:
        first = api.wait(api.submit(model, checkpoints=a, measures=["entropy"])["id"], 180, 0.2, False)
        second = api.wait(api.submit(model, checkpoints=a + b, measures=MEASURES)["id"], 180, 0.2, False)
        assert first["status"] == second["status"] == "finished", stack.logs()
        table = api.results(second["id"])

        jobs = _finished_jobs(redis_server.url)
        ran = sorted(
            (jid.rsplit("-", 1)[0], r["checkpoint"], tuple(r["computed"])) for jid, r in jobs.items()
        )
        expected = [(first["id"], s, ("entropy",)) for s in a]
        expected += [(second["id"], s, ("heads",)) for s in a] + [(second["id"], b[0], ("entropy", "heads"))]
        assert ran == sorted(expected)
        records = store.part_meta(second["id"])
        assert [records[s]["reused"] for s in a] == [["entropy"], ["entropy"]] and records[b[0]][
            "reused"
        ] == []

        # What was put together equals a from-scratch run of the whole request.
        pd.testing.assert_frame_equal(
            sorted_table(table), sorted_table(local_table(model, a + b, MEASURES)), check_dtype=False
        )

        # Everything asked for is cached now: finished at once, no job, and the patterns are there too.
        code, third = _post(stack.url, {"model": model, "checkpoints": b, "measures": ["heads"]})
        assert (code, third["status"]) == (200, "finished") and third["id"] not in (first["id"], second["id"])
        assert _finished_jobs(redis_server.url) == jobs and _queued(redis_server.url) == 0
        heads = table[(table["measure"] == "heads") & (table["checkpoint"] == b[0])]
        pd.testing.assert_frame_equal(sorted_table(api.results(third["id"])), sorted_table(heads))
        index = http.get(f"{stack.url}/api/v1/analyses/{third['id']}/patterns").json()
        assert index["checkpoints"] == b
        # The cache folder beside the analyses is not an analysis.
        assert api.list_analyses()["total"] == 3


def test_weights_changed_after_submission_fail_the_job(start_stack, redis_server, tiny_model, data_dir):
    model, steps = tiny_model
    stack = start_stack(workers=0)  # nothing runs until the file has changed
    store = ResultStore(data_dir / "results")
    body = {"model": model, "checkpoints": [steps[1]], "measures": ["entropy"]}
    with Client(stack.url) as api:
        aid = api.submit(**body)["id"]
        rewrite_step(data_dir / "models" / "tiny", steps[1])
        stack.add_worker()
        final = api.wait(aid, timeout=180, poll=0.2, progress=False)
        assert final["status"] == "failed", stack.logs()
        error = final["errors"][0]["error"]
        assert f"step {steps[1]} changed after this analysis was submitted" in error
        assert "submit the request again" in error
        assert store.part_steps(aid) == []
        assert not list((data_dir / "results" / "_cache").rglob("*.parquet"))  # nothing cached either
        conn = redis.Redis.from_url(redis_server.url)
        assert FailedJobRegistry(queue=Queue("phasescope", connection=conn)).get_job_ids() == [
            f"{aid}-{steps[1]}"
        ]
        conn.close()

        # Submitting again names the new weights: a new analysis, which runs.
        again = api.submit(**body)
        assert again["id"] != aid
        assert api.wait(again["id"], timeout=180, poll=0.2, progress=False)["status"] == "finished"


def test_a_hub_branch_moved_to_new_weights_is_a_new_analysis(start_stack, tmp_path):
    """hub: models are named by the commit each step's branch points at (the API asks the hub)."""
    from tests.hub_server import LocalHub

    repo_id = "example-org/moving-run"
    repo = tmp_path / "hub" / repo_id
    config = {
        "model_type": "gpt2",
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 8,
        "vocab_size": 16,
        "n_positions": 16,
    }

    def push(branch: str, seed: int) -> None:
        """A whole tiny GPT-2 (random init, ``seed``) as the branch's files: loadable by workers."""
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        GPT2LMHeadModel(GPT2Config(**config)).save_pretrained(repo / branch)

    for seed, branch in enumerate(("step0", "step1000")):
        push(branch, seed)
    with LocalHub(tmp_path / "hub") as hub:
        # The branch list is asked for on every POST (no reuse window), as after its TTL in production.
        stack = start_stack(workers=0, HF_ENDPOINT=hub.url, PHASESCOPE_HUB_REFS_TTL_S="0")
        body = {"model": f"hub:{repo_id}", "checkpoints": "all", "measures": ["entropy"]}
        _, first = _post(stack.url, body)
        assert first["weights"] == {
            "0": f"commit:{hub.commit(repo_id, 'step0')}",
            "1000": f"commit:{hub.commit(repo_id, 'step1000')}",
        }
        assert _post(stack.url, body)[1]["id"] == first["id"]  # nothing moved: the same analysis

        # The step1000 branch is pushed again with other weights: a new commit, a new analysis.
        push("step1000", 99)
        hub.refresh()
        _, second = _post(stack.url, body)
        assert second["id"] != first["id"]
        assert second["weights"]["0"] == first["weights"]["0"]
        assert (
            second["weights"]["1000"]
            == f"commit:{hub.commit(repo_id, 'step1000')}"
            != first["weights"]["1000"]
        )

        # Workers start only now: the first analysis's step 1000 names a commit its branch has left.
        # Measuring the branch's new weights under the old commit's name would mix them: the job fails.
        stack.env.update(HF_HUB_CACHE=str(tmp_path / "hf-cache"), HF_HOME=str(tmp_path / "hf-home"))
        stack.add_worker()
        with Client(stack.url) as api:
            old = api.wait(first["id"], timeout=180, poll=0.2, progress=False)
            assert old["status"] == "partial", stack.logs()
            assert [e["checkpoint"] for e in old["errors"]] == [1000]
            assert "step 1000 changed after this analysis was submitted" in old["errors"][0]["error"]
            assert api.wait(second["id"], timeout=180, poll=0.2, progress=False)["status"] == "finished"
