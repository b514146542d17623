"""head_llc through the API at its defaults: accepted on a zoo series of eight heads, alone and with
every measure, and refused at POST (422 naming the field) on a series that declares more heads."""

from __future__ import annotations

from phasescope.measures import measure_names
from tests.helpers import tiny_series
from tests.integration.service import http


def test_head_llc_defaults_are_accepted_and_too_many_heads_refused_at_post(start_stack, data_dir):
    # A zoo-like series under the zoo's name: 2 layers × 4 heads (as zoo:induction-2l), 64 prompts.
    tiny_series(data_dir / "zoo" / "induction-2l")
    tiny_series(data_dir / "models" / "wide", steps=(0, 10), n_heads=8, d_head=4)  # 2 layers × 8 heads
    stack = start_stack(workers=0)  # nothing runs: what is checked is what POST accepts
    url = f"{stack.url}/api/v1/analyses"
    for measures in (["head_llc"], "all"):
        r = http.post(url, json={"model": "zoo:induction-2l", "measures": measures})
        assert r.status_code == 202, r.text
        request = r.json()["request"]
        assert "head_llc" in request["measures"]
        assert (request["params"]["head_llc_chains"], request["params"]["head_llc_draws"]) == (2, 50)
        if measures == "all":
            assert request["measures"] == sorted(measure_names())
    # 16 heads over head_llc_max_heads = 8: refused before anything is queued, naming the field.
    r = http.post(url, json={"model": "wide", "measures": ["head_llc"]})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_request" and body["field"] == "params.head_llc_max_heads", body
    assert "16 heads" in body["detail"] and "head_llc_max_heads" in body["detail"]
    raised = {"model": "wide", "measures": ["head_llc"], "params": {"head_llc_max_heads": 16}}
    assert http.post(url, json=raised).status_code == 202
