"""Bad input of every kind gets a 4xx with a message that says what to change, never a 500.

The API runs for real (uvicorn subprocess, real Redis) but with no worker: nothing here needs one.
Ends with property-based fuzzing of every operation from the app's own OpenAPI description.
"""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import tiny_series
from tests.integration.service import ApiServer, http


@pytest.fixture
def api(start_stack, tiny_model, tmp_path):
    outside = tmp_path / "outside" / "series"
    tiny_series(outside, steps=(0, 10))
    stack = start_stack(workers=0, PHASESCOPE_MAX_CHECKPOINTS="3")
    http.get(f"{stack.url}/api/v1/models/zoo:induction-2l/checkpoints")  # warm the zoo import
    return stack.url + "/api/v1", tiny_model, outside


def _check(response: httpx.Response, status: int, field: str | None = None, words: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail", "field"}, body
    if field is not None:
        assert body["field"] == field, body
    assert words.lower() in body["detail"].lower(), body
    return body


def test_invalid_analysis_requests(api):
    base, (model, steps), outside = api
    post = lambda body: http.post(f"{base}/analyses", json=body)  # noqa: E731
    body = _check(post({"model": "zoo:nope"}), 404, "model", "unknown zoo series")
    assert "zoo:induction-2l" in body["choices"]
    body = _check(post({"model": model, "checkpoints": [steps[0], 12345]}), 404, "checkpoints", "12345")
    assert body["choices"] == steps
    _check(post({"model": str(outside)}), 403, "model", "outside the configured model roots")
    _check(post({"model": "../../etc"}), 403, "model", "outside")
    _check(post({"model": "nowhere"}), 404, "model", "no model directory")
    _check(post({"model": model, "measures": ["entropy", "vibes"]}), 422, "measures.1", "entropy")
    _check(post({"model": model, "measures": []}), 422, "measures", "at least 1")
    _check(post({"model": model, "checkpoints": steps}), 422, "checkpoints", "max_checkpoints")
    _check(post({"model": model, "checkpoints": "all"}), 422, "checkpoints", "max_checkpoints")
    _check(post({"model": model, "inputs": {"n_prompts": 10**6}}), 422, "inputs", "max_prompts")
    _check(post({"model": model, "params": {"n_beta": 2}}), 422, "params.n_beta", "greater than or equal")
    _check(post({"model": model, "surprise": 1}), 422, "surprise", "extra")
    _check(post({"checkpoints": "all"}), 422, "model", "required")
    _check(post({"model": ""}), 422, "model", "at least 1")
    _check(post({"model": model, "checkpoints": {"start": 30, "stop": 10}}), 422, "checkpoints", "picks none")
    r = http.post(f"{base}/analyses", content=b"{not json", headers={"content-type": "application/json"})
    _check(r, 422, None, "json")


def test_malformed_selections_and_zoo_texts_say_what_is_wrong(api):
    base, (model, steps), _ = api
    post = lambda body: http.post(f"{base}/analyses", json={"model": model, **body})  # noqa: E731
    for selection, words in [
        ([-1], "checkpoints[0] is -1: steps start at 0"),
        ([steps[0], 1.5], "checkpoints[1] is 1.5: a step is a whole number"),
        ([True], "checkpoints[0] is True: a step is a whole number"),
        ({"start": -1}, "a range {start, stop, every}; its start is -1"),
        ({"start": 0, "stride": 2}, "a range {start, stop, every}, which has no 'stride'"),
        ({"count": 0}, "a spacing {count, spacing}; its count is 0"),
        ({"count": 2, "spacing": "cubic"}, "its spacing is 'cubic': input should be 'linear' or 'log'"),
        ("first", "'first' is not a checkpoint selection: use 'all', 'last', a list of steps"),
        (7, "checkpoints is int 7"),
    ]:
        body = _check(post({"checkpoints": selection}), 422, "checkpoints", words)
        assert "should be 'all' or 'last'" not in body["detail"], body
    # Zoo series read their task's own tokens: texts are refused at POST, not in the worker.
    zoo = http.post(
        f"{base}/analyses", json={"model": "zoo:induction-2l", "inputs": {"texts": ["Hello there."]}}
    )
    body = _check(zoo, 422, "inputs", "texts: zoo:induction-2l")
    assert "no tokenizer" in body["detail"]
    assert http.get(f"{base}/analyses").json()["total"] == 0  # nothing was recorded or queued


def test_error_bodies_name_no_server_paths(api, data_dir, tmp_path):
    base, (model, steps), outside = api
    (data_dir / "models" / "link").symlink_to(outside, target_is_directory=True)
    answers = [
        (http.post(f"{base}/analyses", json={"model": "../../outside/series"}), 403),
        (http.post(f"{base}/analyses", json={"model": "link"}), 403),  # a symlink out of a root
        (http.get(f"{base}/models/link/checkpoints"), 403),
        (http.post(f"{base}/analyses", json={"model": "nowhere"}), 404),
        (http.get(f"{base}/models/{'x' * 280}/checkpoints"), 404),  # a name the file system refuses
    ]
    for response, status in answers:
        body = _check(response, status, "model")
        for server_path in (str(tmp_path), str(tmp_path.resolve()), str(data_dir), str(outside)):
            assert server_path not in response.text, body
    assert "PHASESCOPE_MODEL_ROOTS" in answers[0][0].json()["detail"]
    assert "<data_dir>/models" in answers[3][0].json()["detail"]  # the roots by name, not by path


def test_500_bodies_carry_a_request_id_not_the_exception(tmp_path, caplog):
    """Any unhandled error (here raised by a route added to a real app) is logged in full and answered
    with a generic message and the request id that finds it in the log."""
    import threading

    import uvicorn

    from backend.main import create_app
    from phasescope.config import Settings
    from tests.integration.service import free_port, wait_for

    app = create_app(Settings(data_dir=tmp_path / "data", REDIS_URL="redis://127.0.0.1:1/0"))

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError(f"secret detail at {tmp_path}/private.db")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5), 60, "the API")
        with caplog.at_level("ERROR", logger="phasescope.api"):
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/boom", timeout=60)
    finally:
        server.should_exit = True
        thread.join(30)
    body = _check(response, 500, None, "request id")
    assert (
        "secret" not in response.text
        and "RuntimeError" not in response.text
        and str(tmp_path) not in response.text
    )
    rid = body["request_id"]
    assert rid in body["detail"] and response.headers["x-request-id"] == rid
    assert (
        response.headers["x-content-type-options"] == "nosniff"
        and "frame-ancestors" in response.headers["content-security-policy"]
    )
    logged = [r for r in caplog.records if rid in r.getMessage()]
    assert logged and "secret detail" in str(logged[0].exc_info[1]), [r.getMessage() for r in caplog.records]


def test_invalid_reads(api):
    base, (model, steps), _ = api
    _check(http.get(f"{base}/analyses/0123456789abcdef01234567"), 404, "id", "no analysis")
    _check(http.get(f"{base}/analyses/not-an-id"), 422, "analysis_id", "pattern")
    _check(http.get(f"{base}/analyses/0123456789abcdef01234567/results"), 404, "id")
    _check(http.get(f"{base}/analyses?limit=0"), 422, "limit", "greater than or equal")
    _check(http.get(f"{base}/models/zoo:nope/checkpoints"), 404, "model")
    _check(http.get(f"{base}/models/tl:not-a-model/checkpoints"), 404, "model")
    assert http.get(f"{base}/nothing-here").json()["error"] == "not_found"
    put = http.put(f"{base}/analyses")  # 405 from the API alone, 404 when the dashboard is mounted
    assert put.status_code in (404, 405) and {"error", "detail", "field"} <= set(put.json())
    aid = http.post(
        f"{base}/analyses", json={"model": model, "checkpoints": "last", "measures": ["loss"]}
    ).json()["id"]
    _check(http.get(f"{base}/analyses/{aid}/results?format=xlsx"), 422, "format", "json")
    _check(http.get(f"{base}/analyses/{aid}/results?measure=heads"), 422, "measure", "did not measure")
    _check(http.get(f"{base}/analyses/{aid}/results?layer=-1"), 422, "layer")


def test_fuzz_every_operation_from_openapi(api):
    """Schemathesis drives every operation with generated valid and invalid input: no 5xx, JSON errors."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    base, _, _ = api
    schema = schemathesis.openapi.from_url(base.removesuffix("/api/v1") + "/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 7  # ours; other resources (patterns, ...) are fuzzed too
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            response = case.call(base_url=base.removesuffix("/api/v1"), timeout=30)
            assert response.status_code < 500 or response.status_code == 503, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )
            if response.status_code >= 400:
                assert {"error", "detail", "field"} <= set(response.json()), response.text

        fuzz()


def test_api_without_redis_answers_503_not_500(data_dir, tmp_path, tiny_model):
    model, _ = tiny_model
    env = {"PHASESCOPE_DATA_DIR": str(data_dir), "REDIS_URL": "redis://127.0.0.1:1/0"}
    server = ApiServer(env, tmp_path).start(ready=False)
    try:
        health = http.get(f"{server.url}/api/v1/health")
        assert health.status_code == 503 and health.json()["redis"]["ok"] is False
        # The reason without the Redis server's address (the exception's text names it).
        assert "ConnectionError" in health.json()["redis"]["detail"]
        assert "127.0.0.1" not in health.text
        assert http.get(f"{server.url}/api/v1/health/ready").json() == {
            "ready": False,
            "status": "unavailable",
        }
        r = http.post(f"{server.url}/api/v1/analyses", json={"model": model, "measures": ["loss"]})
        _check(r, 503, None, "redis")
        _check(http.post(f"{server.url}/api/v1/analyses", json={"model": "zoo:nope"}), 404, "model")
    finally:
        server.stop()
