"""GET /api/v1/ensembles over real analyses of three seeds of zoo:induction-2l (real API, Redis, workers).

The seed series come from the cached ``trained_zoo_seeds``; each is submitted under its own model
string (``zoo:induction-2l-seed1``), so this also checks that a seed's name works through the API's
validation, the weights identity and the workers' loading.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frontend import figures_ensemble as FE
from phasescope.models.series import checkpoint_filename
from phasescope.schemas import AnalysisRequest
from phasescope.service.client import Client
from phasescope.service.store import ResultStore
from tests.integration.service import http

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
STEPS = list(range(0, 1001, 50))  # 21 checkpoints: 4-5 inside the drop (steps ~400-600)


def _model(seed: int) -> str:
    return "zoo:induction-2l" if seed == 0 else f"zoo:induction-2l-seed{seed}"


def test_ensemble_of_three_seeds_and_its_errors(
    start_stack, data_dir: Path, trained_zoo_seeds: dict[tuple[str, int], Path]
) -> None:
    for seed in SEEDS[:-1]:
        shutil.copytree(trained_zoo_seeds[("induction-2l", seed)], data_dir / "zoo" / _model(seed)[4:])
    stack = start_stack(workers=2)
    # The last seed is trained by the service's workers (zoo train --service), and its weights are
    # the cached ones bit for bit: one torch thread, wherever it runs.
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "phasescope",
            "zoo",
            "train",
            "induction-2l",
            "--seeds",
            str(SEEDS[-1]),
            "--service",
        ],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert trained.returncode == 0, trained.stderr + stack.logs()
    assert f"{_model(SEEDS[-1])} trained in" in trained.stdout
    served, cached = data_dir / "zoo" / _model(SEEDS[-1])[4:], trained_zoo_seeds[("induction-2l", SEEDS[-1])]
    for step in (0, 500, 1000):
        name = checkpoint_filename(step)
        assert (served / name).read_bytes() == (cached / name).read_bytes()
    with Client(stack.url) as api:
        ids = [api.submit(_model(s), checkpoints=STEPS, measures=["loss"])["id"] for s in SEEDS]
        assert len(set(ids)) == 3  # three seeds, three weights identities
        for aid in ids:
            assert api.wait(aid, timeout=600, poll=0.5, progress=False)["status"] == "finished", stack.logs()
    base = f"{stack.url}/api/v1/ensembles"

    got = http.get(base, params={"analyses": ",".join(ids), "quantity": "loss.loss"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["quantity"] == "loss.loss" and body["analyses"] == ids
    (layer,) = body["layers"]
    assert layer["layer"] is None and layer["n_detected"] == 3
    assert [s["model"] for s in layer["seeds"]] == [_model(s) for s in SEEDS]
    for s in layer["seeds"]:
        assert s["detected"] and 400 <= s["step"] <= 600, s
        assert s["step_sd"] is not None and s["step_sd"] > 0 and s["width"] > 0
        assert s["before"] > 3.5 and s["after"] < 1.0
    assert 400 <= layer["step_min"] <= layer["step_mean"] <= layer["step_max"] <= 600
    assert layer["step_sd"] > 0 and layer["spread_ratio"] > 0
    points = layer["points"]
    assert set(points["id"]) == set(ids) and len(points["u"]) == len(points["m_norm"]) == 3 * (len(STEPS) - 1)
    assert layer["collapse_quality"] < layer["uncollapsed_quality"]

    # The same as CSV: one row per collapse point, with its seed's model and step.
    csv = http.get(base, params={"analyses": ",".join(ids), "quantity": "loss.loss", "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(csv.text))
    assert len(table) == len(points["u"]) and set(table["model"]) == {_model(s) for s in SEEDS}
    assert np.allclose(table.groupby("id")["step"].first()[ids], [s["step"] for s in layer["seeds"]])
    # The dashboard's figures of this answer: one curve per seed (+ σ(u)), one step per seed.
    names = {aid: _model(s) for aid, s in zip(ids, SEEDS, strict=True)}
    collapse = FE.collapse_figure(layer, names, "loss.loss")
    assert [t.name for t in collapse.data] == ["σ(u)", *[_model(s) for s in SEEDS]]
    steps = FE.steps_figure(layer, names)
    assert list(steps.data[0].y) == [s["step"] for s in layer["seeds"]]
    assert len(FE.raw_figure(layer, names, "loss.loss").data) == 3

    # The Ensemble page itself, against this API: three figure cards, each with its CSV link.
    from frontend import client as dashboard_client
    from frontend.app import create_dash_app

    create_dash_app()  # registers the pages
    from frontend.pages import ensemble as page

    dashboard = dashboard_client.configure(api_url=stack.url)
    try:
        cards = page._ensemble(ids, "loss.loss", "log")
        hint = page._ensemble(ids[:1], "loss.loss", "log")
        view = page.layout(analyses=",".join(ids))
    finally:
        dashboard.close()  # its connection pool, not left to the garbage collector
    graphs = {c.children[1].id["name"]: c.children[1].figure for c in cards}
    assert set(graphs) == {"ensemble-collapse", "ensemble-steps", "ensemble-raw"}
    assert len(graphs["ensemble-collapse"].data) == 1 + len(SEEDS)
    csv_link = cards[0].children[0].children[-1].href
    assert http.get(stack.url + csv_link).text == csv.text
    assert "at least two" in hint.children
    assert view.children[2].children[0].children[1].value == ids

    def error(params: dict[str, str], status: int, field: str) -> dict:
        response = http.get(base, params=params)
        assert response.status_code == status, response.text
        err = response.json()
        assert err["field"] == field and str(data_dir) not in response.text
        return err

    error({"analyses": ids[0], "quantity": "loss.loss"}, 422, "analyses")
    error({"analyses": ",".join([ids[0], ids[0]]), "quantity": "loss.loss"}, 422, "analyses")
    error({"analyses": f"{ids[0]},../../etc", "quantity": "loss.loss"}, 422, "analyses")
    error({"analyses": ",".join([ids[0]] + ["0" * 24] * 1), "quantity": "loss.loss"}, 404, "id")
    err = error({"analyses": ",".join(ids), "quantity": "loss.nonsense"}, 422, "quantity")
    assert "heads.induction_score" in err["choices"]
    error({"analyses": ",".join(ids), "quantity": "heads.induction_score"}, 422, "quantity")
    # An analysis that is stored but not finished (no parts yet): refused, not half-read.
    pending = ResultStore(data_dir / "results")
    request = AnalysisRequest(model=_model(1), measures=["loss"], checkpoints=[0, 50])
    pending.save_request("f" * 24, request)
    err = error({"analyses": f"{ids[0]},{'f' * 24}", "quantity": "loss.loss"}, 422, "analyses")
    assert "not finished" in err["detail"]
