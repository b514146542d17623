"""Bad input of every kind gets a 4xx with a message that says what to change, never a 500.

The API runs for real (uvicorn subprocess, real Redis) but with no worker: nothing here needs one.
Ends with property-based fuzzing of every operation from the app's own OpenAPI description.
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.service import ApiServer, http


@pytest.fixture
def api(start_stack, tiny_model, tmp_path):
    outside = tmp_path / "outside" / "series"
    from tests.integration.service import make_tiny_series

    make_tiny_series(outside, 2)
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
        assert http.get(f"{server.url}/api/v1/health/ready").json() == {
            "ready": False,
            "status": "unavailable",
        }
        r = http.post(f"{server.url}/api/v1/analyses", json={"model": model, "measures": ["loss"]})
        _check(r, 503, None, "redis")
        _check(http.post(f"{server.url}/api/v1/analyses", json={"model": "zoo:nope"}), 404, "model")
    finally:
        server.stop()
