"""The tidy table contract, request ids and checkpoint selection."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from phasescope.errors import CheckpointNotFound, InvalidRequest
from phasescope.measures.tables import BASE_COLUMNS, concat_tables, tidy
from phasescope.schemas import (
    AnalysisRequest,
    CheckpointRange,
    CheckpointSpacing,
    InputSpec,
    MeasureParams,
    analysis_id,
    select_steps,
)

STEPS = list(range(0, 1001, 25))


def test_tidy_flattens_in_c_order_with_coordinates() -> None:
    values = torch.arange(12.0).reshape(2, 3, 2)
    table = tidy(
        "thermo",
        "heat_capacity",
        values,
        ("layer", "head", "beta"),
        checkpoint=7,
        coords={"beta": [0.5, 2.0]},
    )
    assert list(table.columns[:6]) == BASE_COLUMNS
    row = table[(table["layer"] == 1) & (table["head"] == 2) & (table["beta"] == 2.0)]
    assert row["value"].item() == values[1, 2, 1].item()
    assert (table["checkpoint"] == 7).all()


def test_concat_keeps_missing_coordinates_as_na() -> None:
    a = tidy("loss", "loss", 1.5, checkpoint=3)
    b = tidy(
        "spectra",
        "esd_alpha",
        torch.tensor([2.5]),
        ("matrix",),
        coords={"matrix": ["W_Q"]},
        fixed={"layer": 0},
    )
    both = concat_tables([a, b])
    assert both["layer"].isna().tolist() == [True, False]
    assert both["matrix"].tolist()[1] == "W_Q"
    assert str(both["layer"].dtype) == "Int64"


def test_tidy_rejects_wrong_dims() -> None:
    with pytest.raises(ValueError, match="axes"):
        tidy("x", "y", torch.ones(2, 2), ("layer",))


def test_same_request_same_id_regardless_of_order_and_defaults() -> None:
    a = AnalysisRequest(model="zoo:induction-2l", measures=["thermo", "entropy"])
    b = AnalysisRequest.model_validate(
        {
            "model": "zoo:induction-2l",
            "measures": ["entropy", "thermo", "entropy"],
            "checkpoints": "all",
            "params": {"n_beta": 61},
        }
    )
    assert analysis_id(a) == analysis_id(b)
    c = AnalysisRequest(model="zoo:induction-2l", measures=["entropy"])
    assert analysis_id(a) != analysis_id(c)
    assert len(analysis_id(a)) == 24


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"model": "zoo:x", "measures": ["nonsense"]}, "measures"),
        ({"model": "zoo:x", "inputs": {"n_prompts": 100000}}, "max_prompts"),
        ({"model": "zoo:x", "inputs": {"seq_len": 100000}}, "max_seq_len"),
        ({"model": "zoo:x", "params": {"n_beta": 100000}}, "max_beta_points"),
        ({"model": "zoo:x", "inputs": {"texts": []}}, "texts is empty"),
        ({"model": "zoo:x", "checkpoints": list(range(1000))}, "max_checkpoints"),
        ({"model": "zoo:x", "surprise": 1}, "surprise"),
    ],
)
def test_invalid_requests_name_what_to_change(payload: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        AnalysisRequest.model_validate(payload)
    assert fragment in str(info.value)


def test_select_steps_forms() -> None:
    assert select_steps("all", STEPS) == STEPS
    assert select_steps("last", STEPS) == [1000]
    assert select_steps([25, 50], STEPS) == [25, 50]
    assert select_steps(CheckpointRange(start=100, stop=200, every=2), STEPS) == [100, 150, 200]
    spaced = select_steps(CheckpointSpacing(count=5, spacing="linear"), STEPS)
    assert spaced == [0, 250, 500, 750, 1000]
    log = select_steps(CheckpointSpacing(count=6, spacing="log"), STEPS)
    assert log[0] == 0 and log[-1] == 1000 and log == sorted(log)
    # Log spacing puts more checkpoints early than linear spacing does.
    assert sum(s < 250 for s in log) > sum(
        s < 250 for s in select_steps(CheckpointSpacing(count=6, spacing="linear"), STEPS)
    )


def test_select_steps_errors_list_choices() -> None:
    with pytest.raises(CheckpointNotFound) as info:
        select_steps([30], STEPS, "zoo:induction-2l")
    assert info.value.choices == STEPS
    assert "30" in info.value.message
    with pytest.raises(InvalidRequest, match="picks none"):
        select_steps(CheckpointRange(start=5000), STEPS)


def test_input_and_param_defaults_are_valid() -> None:
    assert InputSpec().seq_len == 64
    assert MeasureParams().n_beta % 2 == 1


def test_default_measures_hash_like_the_same_list_given_explicitly() -> None:
    default = AnalysisRequest(model="zoo:induction-2l")
    explicit = AnalysisRequest(
        model="zoo:induction-2l", measures=["thermo", "loss", "heads", "spectra", "entropy"]
    )
    assert analysis_id(default) == analysis_id(explicit)
