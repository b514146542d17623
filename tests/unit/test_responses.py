"""The typed responses (phasescope.responses) stay in step with what the library produces."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from phasescope.models.shape import model_shape
from phasescope.phases.detect import Transition as DetectedTransition
from phasescope.phases.findings import find_transitions
from phasescope.responses import AnalysisSummary, Findings, Transition, marked_transition


def test_transition_declares_every_field_of_the_detector() -> None:
    assert set(Transition.model_fields) == {f.name for f in dataclasses.fields(DetectedTransition)}


def test_real_findings_parse_and_non_finite_floats_become_null() -> None:
    # A clean step in ln t at step ~400 over 12 checkpoints: the detector finds it.
    steps = [0, 25, 50, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000]
    rng = np.random.default_rng(0)
    x = np.log(np.maximum(steps, 1))
    value = 4.0 - 3.0 / (1 + np.exp(-(x - np.log(400)) / 0.08)) + rng.normal(0, 0.01, len(steps))
    table = pd.DataFrame(
        {
            "measure": "loss",
            "quantity": "loss",
            "checkpoint": steps,
            "layer": None,
            "head": None,
            "value": value,
        }
    )
    found = find_transitions(table, n_boot=20)
    findings = Findings.model_validate({**found, "marked": marked_transition(found["transitions"])})
    assert findings.marked == 0 and findings.transitions[0].quantity == "loss"
    assert 300 <= findings.transitions[0].step <= 500
    raw = {**found["transitions"][0], "uncertainty": math.nan, "snr": math.inf}
    parsed = Transition.model_validate(raw).model_dump(mode="json")
    assert parsed["uncertainty"] is None and parsed["snr"] is None


def test_marked_prefers_the_loss_then_the_earliest() -> None:
    assert marked_transition([]) is None
    assert marked_transition([{"quantity": "beta_star"}, {"quantity": "loss"}, {"quantity": "loss"}]) == 1
    assert marked_transition([{"quantity": "beta_star"}, {"quantity": "induction_score"}]) == 0


def test_model_shape_counts_layers_and_heads_and_keeps_the_declared_widths() -> None:
    rows = pd.DataFrame({"layer": [0, 1, 2, None], "head": [0, 7, 3, None]})
    shape = model_shape({"d_model": 64, "n_layers": None}, rows)
    assert shape == {
        "n_layers": 3,
        "n_heads": 8,
        "d_model": 64,
        "d_head": None,
        "n_ctx": None,
        "d_vocab": None,
    }
    assert model_shape(None, pd.DataFrame({"layer": [None], "head": [None]})) is None
    assert model_shape({"n_layers": 2, "n_heads": 4}, None)["n_heads"] == 4  # type: ignore[index]


def test_undeclared_keys_are_refused() -> None:
    links = {"self": "/a", "results": "/a/results", "dashboard": "/d"}
    with pytest.raises(ValidationError, match="surprise"):
        AnalysisSummary.model_validate({"links": {**links, "surprise": 1}})
