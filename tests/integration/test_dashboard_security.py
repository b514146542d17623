"""The dashboard is no way around the API token, never calls an address a request names, and every
answer of the API + dashboard server carries the security headers and the body limit.

The combined app (``frontend.server.create_combined_app``) is served by a real uvicorn in this process
(so the dashboard's HTTP clients can be counted), over a real redis-server; requests are real HTTP.
Dash callbacks are called the way the browser calls them: ``POST /_dash-update-component`` with a body
built from the app's own ``/_dash-dependencies``.
"""

from __future__ import annotations

import gc
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from phasescope.config import Settings
from tests.helpers import tiny_series
from tests.integration.service import RedisServer, free_port, wait_for

TOKEN = "s3cret-token-for-tests"
LIMIT = 64 * 1024  # PHASESCOPE_MAX_BODY_BYTES for this server: small, so an over-limit body is cheap


class _Bait:
    """A listening HTTP server that counts every request made to it (and the headers it got)."""

    def __init__(self) -> None:
        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"checkpoints": [0, 1], "models": []}')

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Redis, a 5-checkpoint series, and the API + dashboard (token set) served by uvicorn in a thread."""
    import redis
    import uvicorn

    from frontend.server import create_combined_app

    root = tmp_path_factory.mktemp("dashsec")
    data_dir = root / "data"
    steps = tiny_series(data_dir / "models" / "tiny")
    server_redis = RedisServer(root / "redis").start()
    # REDIS_URL is the setting's name in the environment and in the constructor (its alias).
    settings = Settings(data_dir=data_dir, api_token=TOKEN, max_body_bytes=LIMIT, REDIS_URL=server_redis.url)
    assert settings.redis_url == server_redis.url
    app = create_combined_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/api/v1/health/ready", timeout=5).status_code == 200, 120, "the app")
    deps = httpx.get(f"{url}/_dash-dependencies", timeout=60).json()
    conn = redis.Redis.from_url(server_redis.url)
    try:
        yield {"url": url, "steps": steps, "data_dir": data_dir, "redis": conn, "deps": deps, "app": app}
    finally:
        server.should_exit = True
        thread.join(30)
        conn.close()
        server_redis.stop()


def _callback_body(
    deps: list[dict[str, Any]], trigger: str, values: dict[str, Any], output: str = ""
) -> dict[str, Any]:
    """The body the browser POSTs for the callback that ``trigger`` (``id.property``) fires (the one
    whose outputs name ``output``, when it fires several).

    Every input and state the callback declares is sent, with ``values[id]`` (None when not given), so
    the body matches the callback whatever states it has.
    """
    (cb,) = [
        c
        for c in deps
        if any(f"{i['id']}.{i['property']}" == trigger for i in c["inputs"]) and output in c["output"]
    ]

    def items(kind: str) -> list[dict[str, Any]]:
        return [{"id": i["id"], "property": i["property"], "value": values.get(i["id"])} for i in cb[kind]]

    outputs = []
    for part in cb["output"].strip(".").split("..."):
        ident, prop = part.rsplit(".", 1)
        outputs.append({"id": ident, "property": prop})
    return {
        "output": cb["output"],
        "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": items("inputs"),
        "state": items("state"),
        "changedPropIds": [trigger],
    }


def _submit_body(
    served: dict[str, Any], token: str | None, seed: int, texts: str | None = None
) -> dict[str, Any]:
    n = len(served["steps"])
    values = {
        "new-submit": 1,
        "new-model": "tiny",
        "new-range": [0, n - 1],
        "new-spacing": "all",
        "new-count": 2,
        "new-measures": ["loss"],
        "new-seq-len": 64,
        "new-seed": seed,
        "new-texts": texts,
        "new-token": token,
    }
    return _callback_body(served["deps"], "new-submit.n_clicks", values)


def _created(served: dict[str, Any]) -> tuple[list[str], list[bytes]]:
    """The analyses in the store and the RQ job records in Redis."""
    store = served["data_dir"] / "results"
    ids = sorted(p.name for p in store.iterdir()) if store.is_dir() else []
    return ids, sorted(served["redis"].keys("rq:job:*"))


def _post_callback(served: dict[str, Any], body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{served['url']}/_dash-update-component", json=body, timeout=120, **kwargs)


def test_dashboard_submit_without_the_users_token_creates_nothing(served: dict[str, Any]) -> None:
    before = _created(served)
    for token in (None, "a-wrong-token"):
        response = _post_callback(served, _submit_body(served, token, seed=11))
        assert response.status_code == 200, response.text  # the callback ran, and said why it did not submit
        text = response.text
        assert ("needs an API token" in text) if token is None else ("did not accept this token" in text), (
            text
        )
        assert TOKEN not in text
    assert _created(served) == before, "an analysis was created without the user's token"

    # The same callback with the user's token submits: the token is the user's, not the server's.
    response = _post_callback(served, _submit_body(served, TOKEN, seed=11))
    assert response.status_code == 200, response.text
    ids, jobs = _created(served)
    new = sorted(set(ids) - set(before[0]))
    assert len(new) == 1 and new[0] in response.text and len(jobs) > len(before[1])


def test_a_host_header_never_chooses_where_the_dashboard_calls(served: dict[str, Any]) -> None:
    from frontend import client

    bait = _Bait()
    try:
        first = client.api()
        steps_body = _callback_body(served["deps"], "new-model.value", {"new-model": "tiny"}, "new-range.max")
        hosts = [f"127.0.0.1:{bait.port}", f"localhost:{bait.port}"] + [
            f"127.0.0.{i}:{bait.port}" for i in range(2, 40)
        ]
        for i, host in enumerate(hosts):
            answer = _post_callback(served, steps_body, headers={"Host": host})
            assert answer.status_code == 200, answer.text
            assert (
                str(len(served["steps"]) - 1) in answer.text
            )  # the real API's five checkpoints, not the bait's two
            if i < 3:  # a write too: with the user's token, and a host that is not this server
                _post_callback(served, _submit_body(served, TOKEN, seed=12), headers={"Host": host})
        assert bait.seen == [], f"the dashboard called the address a Host header named: {bait.seen[:3]}"
        gc.collect()
        clients = [o for o in gc.get_objects() if type(o) is client.DashboardClient]
        assert clients == [first] and client.api() is first, f"{len(clients)} dashboard clients"
    finally:
        bait.close()


def _assert_security_headers(response: httpx.Response) -> None:
    h = response.headers
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, (response.url, csp)
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0], csp
    assert h.get("x-frame-options") == "DENY" and h.get("x-content-type-options") == "nosniff", dict(h)
    assert h.get("referrer-policy") == "same-origin", dict(h)


def test_security_headers_on_every_kind_of_answer(served: dict[str, Any]) -> None:
    url = served["url"]
    page = httpx.get(f"{url}/", timeout=60)
    assert page.status_code == 200 and "_dash-renderer" in page.text
    _assert_security_headers(page)
    # Every inline script Dash's page runs (its renderer, clientside callbacks, the page-title one) is
    # allowed by its hash, so no 'unsafe-inline' is needed.
    import base64
    import hashlib
    import re

    html = re.sub(r"<!--.*?-->", "", page.text, flags=re.S)  # Dash's IE-only warning is a comment to Chromium
    scripts = re.findall(
        r"<script(?: id=\"_dash-renderer\" type=\"application/javascript\")?>(.*?)</script>", html, re.S
    )
    assert len(scripts) >= 2 and "new DashRenderer" in scripts[-1]
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in page.headers["content-security-policy"], script[:200]
    answers = [
        httpx.get(f"{url}/api/v1/health", timeout=60),
        httpx.get(f"{url}/api/v1/models/tiny/checkpoints", timeout=60),
        httpx.get(f"{url}/api/v1/nothing-here", timeout=60),  # 404
        httpx.post(f"{url}/api/v1/analyses", json={"model": "tiny"}, timeout=60),  # 401
        httpx.get(f"{url}/_dash-layout", timeout=60),
        _post_callback(
            served, _callback_body(served["deps"], "new-model.value", {"new-model": "tiny"}, "new-range.max")
        ),
        httpx.post(f"{url}/api/v1/analyses", content=b"x" * (LIMIT + 1), timeout=60),  # 413
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 401, 200, 200, 413]
    for response in answers:
        _assert_security_headers(response)
    docs = httpx.get(f"{url}/docs", timeout=60)
    assert docs.status_code == 200 and "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert docs.headers["x-frame-options"] == "DENY"


def test_bodies_over_the_limit_are_refused_before_anything_reads_them(served: dict[str, Any]) -> None:
    url, before = served["url"], _created(served)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    big_texts = ["word " * 4000] * 4  # 80 kB of JSON: over the 64 KiB limit, within the text limits
    request = {"model": "tiny", "measures": ["loss"], "inputs": {"texts": big_texts, "seed": 13}}
    for response in (
        httpx.post(f"{url}/api/v1/analyses", json=request, headers=headers, timeout=60),
        # No Content-Length (chunked): counted as it arrives.
        httpx.post(
            f"{url}/api/v1/analyses",
            content=iter([b'{"model": "tiny", "inputs": {"texts": ["', b"w" * (LIMIT + 10), b'"]}}']),
            headers={**headers, "content-type": "application/json"},
            timeout=60,
        ),
        _post_callback(served, _submit_body(served, TOKEN, seed=13, texts="word " * 16000)),
    ):
        assert response.status_code == 413, response.text[:300]
        body = response.json()
        assert body["error"] == "too_large" and "PHASESCOPE_MAX_BODY_BYTES" in body["detail"], body
    assert _created(served) == before
    # Just under the limit is served as usual.
    small = {"model": "tiny", "measures": ["loss"], "inputs": {"texts": ["word " * 1000], "seed": 13}}
    assert httpx.post(f"{url}/api/v1/analyses", json=small, headers=headers, timeout=120).status_code == 202


def test_in_process_transport_without_a_server_loop(served: dict[str, Any], tmp_path: Path) -> None:
    """Outside a served request (a script, a test), the in-process client still reaches the same API."""
    from frontend import client

    assert client.api().checkpoints("tiny") == served["steps"]
