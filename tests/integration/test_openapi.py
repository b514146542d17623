"""The API says what it answers: every live response body matches the schema ``/openapi.json`` declares.

A real service (API, Redis, one worker) answers every operation, in success and in error, and each
JSON body is validated against the schema the OpenAPI document gives for that operation and status
code. The document itself must declare a schema for every answer it lists.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator

from tests.integration.service import ApiServer, http, wait_for

TOKEN = "openapi-test-token"
_AUTH = {"Authorization": f"Bearer {TOKEN}"}
_PARQUET = "application/vnd.apache.parquet"


class Contract:
    """The OpenAPI document of a running API, and a check of live answers against it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.doc = http.get(f"{url}/openapi.json").json()
        self.checked: set[tuple[str, str, int]] = set()  # (operation id, media type, status)
        # {model} is a path parameter that may hold slashes; every other parameter is one segment.
        self._paths = [
            (
                re.compile(
                    "^" + re.sub(r"\{[^}]+\}", lambda m: ".+" if m[0] == "{model}" else "[^/]+", p) + "$"
                ),
                p,
            )
            for p in self.doc["paths"]
        ]

    def operation(self, method: str, path: str) -> dict[str, Any]:
        # Templated paths after literal ones, so /analyses/x/results is not read as /analyses/{id}.
        for pattern, template in sorted(self._paths, key=lambda pt: pt[1].count("{")):
            if pattern.match(path) and method.lower() in self.doc["paths"][template]:
                return self.doc["paths"][template][method.lower()]
        raise AssertionError(f"{method} {path} is in no path of the OpenAPI document")

    def call(self, method: str, path: str, status: int, **kwargs: Any) -> httpx.Response:
        """Call ``/api/v1{path}``, expect ``status``, validate the body against the declared schema."""
        response = httpx.request(method, f"{self.url}/api/v1{path}", timeout=180, **kwargs)
        assert response.status_code == status, (
            f"{method} {path}: {response.status_code} {response.text[:500]}"
        )
        op = self.operation(method, "/api/v1" + path.split("?")[0])
        declared = op["responses"].get(str(status))
        assert declared is not None, (
            f"{op['operationId']} answered {status}, which its document does not list"
        )
        if status == 304:  # no body to validate
            assert not response.content and "content" not in declared
            self.checked.add((op["operationId"], "", status))
            return response
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in declared.get("content", {}), f"{op['operationId']} {status}: {media} not declared"
        if media == "application/json":
            schema = {**declared["content"][media]["schema"], "components": self.doc["components"]}
            errors = sorted(OAS31Validator(schema).iter_errors(response.json()), key=str)
            assert not errors, f"{op['operationId']} {status}: {errors[0].message} at {list(errors[0].path)}"
        self.checked.add((op["operationId"], media, status))
        return response


@pytest.fixture
def contract(start_stack, tiny_model) -> tuple[Contract, Any, str, list[int]]:
    stack = start_stack(workers=1, PHASESCOPE_API_TOKEN=TOKEN, PHASESCOPE_MAX_BODY_BYTES="20000")
    model, steps = tiny_model
    return Contract(stack.url), stack, model, steps


def test_every_operation_declares_a_schema_for_each_answer(data_dir) -> None:
    from backend.main import create_app

    doc = create_app().openapi()  # the document the live API serves (checked against it below)
    operations = [(p, m, op) for p, ops in doc["paths"].items() for m, op in ops.items()]
    assert len(operations) == 11
    ids = [op["operationId"] for _, _, op in operations]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-z_]+", i) for i in ids), ids
    for path, method, op in operations:
        codes = op["responses"]
        success = [c for c in codes if c.startswith("2")]
        assert "200" in codes, f"{method} {path} declares no 200"
        takes_input = bool(op.get("parameters") or op.get("requestBody"))
        assert "500" in codes and ("422" in codes or not takes_input), f"{method} {path}: {sorted(codes)}"
        for code, answer in codes.items():
            if code == "304":  # Not Modified has no body
                continue
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            assert schema, f"{op['operationId']} {code} has no JSON schema"
            if code not in success and op["operationId"] not in ("health", "readiness"):
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (op["operationId"], code)
        assert op.get("description") and "\n" not in op["description"].strip(), op["operationId"]
    results = doc["paths"]["/api/v1/analyses/{analysis_id}/results"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "text/csv", _PARQUET} <= set(results)


def _finished(c: Contract, aid: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        state = c.call("GET", f"/analyses/{aid}", 200).json()
        return state if state["status"] in ("finished", "failed", "partial") else None

    return wait_for(done, 180, f"analysis {aid} to finish", interval=0.2)


def test_live_answers_match_the_document(contract, tmp_path, redis_server) -> None:
    c, stack, model, steps = contract
    body = {"model": model, "measures": ["heads", "loss"], "checkpoints": steps}
    # Health and the catalogue.
    c.call("GET", "/health", 200)
    c.call("GET", "/health/ready", 200)
    assert c.call("GET", "/models", 200, params={"include_tl": "true"}).json()["transformer_lens"]
    c.call("GET", "/models", 200, params={"include_tl": "false"})
    c.call("GET", f"/models/{model}/checkpoints", 200)
    c.call("GET", "/models/zoo:nope/checkpoints", 404)
    c.call("GET", "/models//etc/checkpoints", 403)
    # Writes: without the token, too large, malformed, outside the roots; then accepted.
    c.call("POST", "/analyses", 401, json=body)
    c.call("POST", "/analyses", 413, json={**body, "pad": "x" * 30_000}, headers=_AUTH)
    bad = c.call("POST", "/analyses", 422, json={**body, "measures": ["vibes"]}, headers=_AUTH).json()
    assert bad["errors"] and bad["field"] == "measures.0"
    c.call("POST", "/analyses", 404, json={**body, "model": "zoo:nope"}, headers=_AUTH)
    c.call("POST", "/analyses", 403, json={**body, "model": "/etc"}, headers=_AUTH)
    first = c.call("POST", "/analyses", 202, json=body, headers=_AUTH).json()
    aid = first["id"]
    assert first["status"] in ("queued", "running") and first["findings"] is None and first["rows"] is None
    # The manifest declares the shape before any checkpoint is measured.
    assert first["shape"] == {
        "n_layers": 2,
        "n_heads": 4,
        "d_model": 32,
        "d_head": 8,
        "n_ctx": 32,
        "d_vocab": 24,
    }
    final = _finished(c, aid)
    assert final["status"] == "finished", stack.logs()
    # One shape in every state: the same keys queued and finished, nulls filled in.
    assert set(final) == set(first) and set(final["progress"]) == set(first["progress"])
    assert set(final["timings"]) == set(first["timings"]) and first["timings"]["finished_at"] is None
    assert final["timings"]["finished_at"] is not None and final["rows"] > 0
    assert final["findings"]["checkpoints"] == len(steps) - 1 and final["findings"]["marked"] is None
    assert final["shape"]["n_layers"] == 2 and final["shape"]["n_heads"] == 4  # as measured
    again = c.call("POST", "/analyses", 200, json=body, headers=_AUTH)
    assert again.headers["location"] == f"/api/v1/analyses/{aid}"
    listed = c.call("GET", "/analyses", 200, params={"limit": 5}).json()
    assert listed["items"][0]["id"] == aid and "request" not in listed["items"][0]
    c.call("GET", "/analyses", 422, params={"limit": 0})
    c.call("GET", f"/analyses/{'0' * 24}", 404)
    c.call("GET", "/analyses/not-an-id", 422)
    # Results in every format, and their errors.
    loss = c.call("GET", f"/analyses/{aid}/results", 200, params={"measure": "loss"})
    page = loss.json()
    assert page["complete"] and page["rows"] == len(page["data"]["value"]) > 0
    tag = {"If-None-Match": loss.headers["etag"]}
    c.call("GET", f"/analyses/{aid}/results", 304, params={"measure": "loss"}, headers=tag)
    c.call("GET", f"/analyses/{aid}/results", 200, params={"format": "csv"})
    c.call("GET", f"/analyses/{aid}/results", 200, params={"format": "parquet"})
    c.call("GET", f"/analyses/{aid}/results", 422, params={"measure": "thermo"})
    c.call("GET", f"/analyses/{'0' * 24}/results", 404)
    # Patterns: the index, one matrix, and its errors.
    index = c.call("GET", f"/analyses/{aid}/patterns", 200).json()
    assert index["checkpoints"] == steps and index["n_heads"] == 4
    matrix = c.call(
        "GET", f"/analyses/{aid}/patterns", 200, params={"checkpoint": steps[1], "head": 3}
    ).json()
    assert len(matrix["pattern"]) == len(matrix["tokens"])
    c.call("GET", f"/analyses/{aid}/patterns", 404, params={"checkpoint": 7})
    c.call("GET", f"/analyses/{aid}/patterns", 422, params={"checkpoint": steps[1], "layer": 9})
    # Ensembles: two finished analyses of one model (two checkpoint selections), and the errors. The
    # second's checkpoints all come from the reuse cache: it is finished when the POST answers (200).
    second = c.call("POST", "/analyses", 200, json={**body, "checkpoints": steps[:-1]}, headers=_AUTH).json()
    assert _finished(c, second["id"])["status"] == "finished", stack.logs()
    pair = {"analyses": f"{aid},{second['id']}", "quantity": "loss.loss"}
    ensemble = c.call("GET", "/ensembles", 200, params=pair).json()
    assert [s["id"] for s in ensemble["layers"][0]["seeds"]] == [aid, second["id"]]
    c.call("GET", "/ensembles", 200, params={**pair, "format": "csv"})
    c.call("GET", "/ensembles", 422, params={**pair, "analyses": aid})
    c.call("GET", "/ensembles", 404, params={**pair, "analyses": f"{aid},{'0' * 24}"})
    # Cancel: a finished analysis stays finished; a fresh one (a measure the reuse cache does not
    # hold, so it queues jobs) is cancelled, or has finished meanwhile.
    assert c.call("DELETE", f"/analyses/{aid}", 200, headers=_AUTH).json()["status"] == "finished"
    c.call("DELETE", f"/analyses/{aid}", 401)
    c.call("DELETE", f"/analyses/{'0' * 24}", 404, headers=_AUTH)
    other = c.call("POST", "/analyses", 202, json={**body, "measures": ["entropy"]}, headers=_AUTH).json()
    c.call("DELETE", f"/analyses/{other['id']}", 200, headers=_AUTH)  # a running job stops soon after

    def settled() -> dict[str, Any] | None:
        state = c.call("GET", f"/analyses/{other['id']}", 200).json()
        return state if state["status"] in ("cancelled", "partial", "finished") else None

    cancelled = wait_for(settled, 120, "the cancelled analysis to settle", interval=0.2)
    assert set(cancelled) == set(final)
    # Low on disk: health says so (507, its own body) and new work is refused (507, an error body).
    low = ApiServer({**stack.env, "PHASESCOPE_MIN_FREE_DISK_MB": "1e12"}, tmp_path / "low").start()
    try:
        disk = Contract(low.url)
        assert disk.call("GET", "/health", 507).json()["status"] == "degraded"
        full = disk.call("POST", "/analyses", 507, json={**body, "checkpoints": steps[:2]}, headers=_AUTH)
        assert full.json()["min_free_mb"] == 1e12 and full.json()["error"] == "insufficient_storage"
    finally:
        low.stop()
    # Redis gone: the queue's answers are 503 with the error body, health's is its own body.
    redis_server.stop()
    try:
        c.call("GET", "/health", 503)
        c.call("GET", "/health/ready", 503)
        c.call("POST", "/analyses", 503, json={**body, "checkpoints": steps[1:4]}, headers=_AUTH)
        assert c.call("GET", f"/analyses/{aid}", 200).json()["queue_reachable"] is None  # the store alone
    finally:
        redis_server.start()  # back for the worker, so that it stops at once, not in a reconnect loop
    every = {op["operationId"] for ops in c.doc["paths"].values() for op in ops.values()}
    assert every == {op for op, _, _ in c.checked}, every - {op for op, _, _ in c.checked}
