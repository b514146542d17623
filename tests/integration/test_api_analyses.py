"""Analyses over the real API, real Redis (external and embedded) and real worker processes."""

from __future__ import annotations

import io
import time

import pandas as pd
import pytest

from phasescope.measures.tables import BASE_COLUMNS
from phasescope.service.client import ApiError, Client
from tests.integration.service import http, local_table, sorted_table

PLUMBING = ["heads", "loss"]


@pytest.mark.parametrize("redis_mode", ["url", "embedded"])
def test_submit_wait_results_match_local_run(redis_mode, start_stack, tiny_model):
    model, steps = tiny_model
    stack = start_stack(redis=redis_mode, workers=1)
    measures = ["entropy", "heads", "loss", "spectra", "thermo"]
    with Client(stack.url) as api:
        first = api.submit(model, measures=measures)
        assert first["status"] in ("queued", "running")
        assert first["links"]["dashboard"] == f"/analyses/{first['id']}"
        final = api.wait(first["id"], timeout=120, poll=0.2, progress=False)
        assert final["status"] == "finished", stack.logs()
        assert final["progress"] == {**final["progress"], "done": 5, "total": 5}
        assert set(final["timings"]["seconds_per_checkpoint"]) == {str(s) for s in steps}
        remote = api.results(first["id"])
    local = local_table(model, steps, measures)
    assert list(remote.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    pd.testing.assert_frame_equal(sorted_table(remote), sorted_table(local), check_dtype=False)


def test_same_request_same_id_and_no_recompute(start_stack, redis_server, tiny_model):
    model, steps = tiny_model
    stack = start_stack(workers=1)
    body = {"model": model, "measures": ["loss", "heads"], "checkpoints": steps[:3]}
    with Client(stack.url) as api:
        a = api.submit(**body)
        # Same request in another order and with defaults spelt out: the same id, no second job set.
        b = api.submit(
            model, checkpoints=list(reversed(steps[:3])), measures=["heads", "loss"], inputs={"seed": 0}
        )
        assert a["id"] == b["id"]
        api.wait(a["id"], timeout=120, poll=0.2, progress=False)
    parts = stack.data_dir / "results" / a["id"] / "parts"
    stamps = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    t0 = time.perf_counter()
    again = http.post(f"{stack.url}/api/v1/analyses", json=body)
    assert again.status_code == 200 and again.json()["status"] == "finished"
    assert time.perf_counter() - t0 < 2.0
    assert {p.name: p.stat().st_mtime_ns for p in parts.iterdir()} == stamps  # nothing recomputed
    assert redis_server.url  # the queue got no new jobs:
    import redis

    conn = redis.Redis.from_url(redis_server.url)
    assert conn.llen("rq:queue:phasescope") == 0


def test_results_formats_filters_listing_and_models(start_stack, redis_server, tiny_model):
    model, steps = tiny_model
    stack = start_stack(workers=1)
    with Client(stack.url) as api:
        aid = api.submit(model, measures=["heads", "loss"], checkpoints=steps[:2])["id"]
        api.wait(aid, timeout=120, poll=0.2, progress=False)
        base = f"{stack.url}/api/v1/analyses/{aid}/results"
        js = http.get(base, params={"measure": "heads", "layer": 1, "checkpoint": steps[1]}).json()
        assert js["complete"] is True and js["rows"] > 0
        assert set(js["data"]["measure"]) == {"heads"} and set(js["data"]["layer"]) == {1}
        assert set(js["data"]["checkpoint"]) == {steps[1]}
        csv = http.get(base, params={"format": "csv", "measure": "loss"})
        assert csv.headers["content-type"].startswith("text/csv")
        frame = pd.read_csv(io.StringIO(csv.text))
        assert set(frame["measure"]) == {"loss"}
        pq = pd.read_parquet(io.BytesIO(http.get(base, params={"format": "parquet"}).content))
        assert len(pq) == sum(1 for _ in range(len(pq))) and set(pq["measure"]) == {"heads", "loss"}
        # The uncertainty columns (docs/api.md): the per-head scores carry their standard error over
        # prompts, in the CSV as in the Parquet; prompts=false leaves the per-prompt rows out.
        for table in (pq, pd.read_csv(io.StringIO(http.get(base, params={"format": "csv"}).text))):
            assert {"se", "ci_lo", "ci_hi"} <= set(table.columns)
            scores = table[table["quantity"] == "induction_score"]
            assert len(scores) and scores["se"].notna().all() and (scores["se"] >= 0).all()
        lean = pd.read_csv(io.StringIO(http.get(base, params={"format": "csv", "prompts": "false"}).text))
        assert not lean["quantity"].str.endswith("_prompt").any()
        assert len(lean) == (~pq["quantity"].str.endswith("_prompt")).sum() < len(pq)
        with pytest.raises(ApiError) as err:
            api.results(aid, measure="thermo")
        assert err.value.status_code == 422 and err.value.choices == ["heads", "loss"]

        listing = api.list_analyses(limit=1)
        assert listing["total"] == 1 and listing["items"][0]["id"] == aid and listing["next"] is None
        assert api.checkpoints(model) == steps
        names = [m["model"] for m in api.models()["models"]]
        assert any(n.endswith("/models/tiny") for n in names)
        assert http.get(f"{stack.url}/api/v1/models").json()["transformer_lens"]  # read without torch
        health = api.health()
        assert health["status"] == "ok" and health["workers_alive"] == 1 and health["queue"]["queued"] == 0


def test_cancel_then_resubmit(start_stack, redis_server, tiny_model):
    model, steps = tiny_model
    stack = start_stack(workers=0)  # nothing runs: jobs stay queued
    with Client(stack.url) as api:
        aid = api.submit(model, measures=PLUMBING)["id"]
        cancelled = api.cancel(aid)
        assert cancelled["status"] == "cancelled" and cancelled["progress"]["queued"] == 0
        assert api.status(aid)["status"] == "cancelled"  # a read does not resume a cancelled analysis
        api.submit(model, measures=PLUMBING)
        stack.add_worker()
        assert api.wait(aid, timeout=120, poll=0.2, progress=False)["status"] == "finished"


def test_all_is_every_registered_measure(start_stack, redis_server, tiny_model):
    from phasescope.measures import measure_names

    model, _ = tiny_model
    stack = start_stack(workers=0)  # nothing runs: the accepted request is what is checked
    with Client(stack.url) as api:
        body = {"model": model, "measures": "all", "checkpoints": "last"}
        r = http.post(f"{stack.url}/api/v1/analyses", json=body)
        assert r.status_code == 202, r.text
        status = r.json()
        assert status["request"]["measures"] == sorted(measure_names())
        # The same analysis as the list "all" stands for.
        assert api.submit(model, checkpoints="last", measures=sorted(measure_names()))["id"] == status["id"]
        with pytest.raises(ApiError) as err:
            api.results(status["id"], measure="vibes")
        assert err.value.status_code == 422 and err.value.choices == list(measure_names())
        api.cancel(status["id"])


def test_write_endpoints_need_the_token(start_stack, redis_server, tiny_model):
    model, _ = tiny_model
    stack = start_stack(workers=0, PHASESCOPE_API_TOKEN="s3cret")
    body = {"model": model, "measures": PLUMBING, "checkpoints": "last"}
    r = http.post(f"{stack.url}/api/v1/analyses", json=body)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "Bearer" in r.json()["detail"]
    r = http.post(f"{stack.url}/api/v1/analyses", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    with Client(stack.url, token="s3cret") as api:
        aid = api.submit(**body)["id"]
    # Reads stay open, so share links work without the token.
    assert http.get(f"{stack.url}/api/v1/analyses/{aid}").status_code == 200
    assert http.delete(f"{stack.url}/api/v1/analyses/{aid}").status_code == 401
