"""The measure registry: every entry is wired everywhere, and a measure registered in a test appears
everywhere (API schema, validation, dispatch, findings, dashboard, CLI) and is gone afterwards."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import plotly
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from phasescope.measures import (
    KINDS,
    Measure,
    OrderParameter,
    Quantity,
    WorkSizes,
    default_measures,
    get_measure,
    label,
    measure_names,
    measures,
    order_parameters,
    register_measure,
    registered,
    unregister_measure,
)
from phasescope.schemas import AnalysisRequest, MeasureParams
from tests.helpers import tiny_series

DOCS = Path(__file__).parents[2] / "docs" / "measures.md"
BUILTINS = (
    "loss",
    "heads",
    "entropy",
    "thermo",
    "spectra",
    "energies",
    "landscape",
    "sharpness",
    "llc",
    "residual",
    "correlation",
    "meanfield",
    "hessian_density",
    "head_llc",
    "trajectory",
    "trajectory_pca",
)


# --- a measure of the test's own: the largest attention probability of each head ---------------------


def attention_peak(data) -> pd.DataFrame:  # noqa: ANN001  (a phasescope.analysis.adapters.MeasureInput)
    """Mean over prompts and query rows of max_k A[q, k], per (layer, head): 1 for a head that always
    attends to one key, 1/n for a uniform one."""
    from phasescope.measures.tables import tidy

    peak = data.patterns.amax(dim=-1).mean(dim=(1, 3))  # [layer, batch, head, query] → [layer, head]
    return tidy("peak", "attention_peak", peak, ("layer", "head"), checkpoint=data.step)


PEAK = Measure(
    name="peak",
    kind="activation",
    compute="tests.unit.test_registry:attention_peak",
    summary="largest attention probability per head (a test's measure)",
    cost=lambda s, p: 0.25 * s.att,
    quantities=(
        Quantity("attention_peak", "largest attention probability", "probability", offered=("overview",)),
    ),
    order_parameters=(OrderParameter("peak", "attention_peak"),),
    tab="overview",
)


@contextmanager
def only(*entries: Measure) -> Iterator[None]:
    """The registry holds ``entries`` alone inside the block; the built-ins come back in their order."""
    hidden = [unregister_measure(name) for name in measure_names()]
    try:
        with registered(*entries):
            yield
    finally:
        for entry in hidden:
            register_measure(entry)


@pytest.fixture()
def series(isolated_data_dir: Path) -> str:
    path = isolated_data_dir / "models" / "tiny"
    # With MLPs, so that every measure applies (meanfield reads MLP pre-activations).
    tiny_series(path, steps=(0, 10, 20), attn_only=False, d_mlp=64)
    return str(path)


# --- the built-in entries ---------------------------------------------------------------------------


def test_builtins_are_declared_once_in_order() -> None:
    assert measure_names() == BUILTINS
    assert default_measures() == ("loss", "heads", "entropy", "thermo", "spectra")
    assert measure_names(kind="landscape") == ("landscape", "sharpness", "llc", "hessian_density", "head_llc")
    assert label("thermo.beta_star") == "β* (peak of C(β), inverse temperature)"
    assert label("loss.loss") == "loss (nats)" and label("no.such") == "no.such"
    with pytest.raises(KeyError, match="registered: loss, heads"):
        get_measure("vibes")
    with pytest.raises(ValueError, match="already registered"):
        register_measure(get_measure("loss"))
    with pytest.raises(ValueError, match="lowercase identifiers other than 'all'"):
        register_measure(Measure("all", "weights", "m:f", "", lambda s, p: 0.0, ()))
    with pytest.raises(ValueError, match="not one of its quantities"):
        Measure("x", "weights", "m:f", "", lambda s, p: 0.0, (), order_parameters=(OrderParameter("x", "y"),))


@pytest.mark.parametrize("name", BUILTINS)
def test_entry_is_complete(name: str) -> None:
    from frontend.urlstate import TABS

    entry = get_measure(name)
    assert entry.kind in KINDS and entry.tab in TABS and entry.summary
    assert callable(entry.function())  # what the worker calls: the dotted name resolves
    assert set(entry.params) <= set(MeasureParams.model_fields)
    assert set(entry.cost_params) <= set(entry.params)
    units = entry.cost(WorkSizes(16, 64, 16), MeasureParams())
    assert units > 0 and math.isfinite(units)
    # Its definitions are in docs/measures.md, in the section it names.
    headings = [line for line in DOCS.read_text().splitlines() if line.startswith("#")]
    assert any(entry.docs in h for h in headings), entry.docs
    for quantity in entry.quantities:
        assert quantity.label and quantity.title.startswith(quantity.label)


@pytest.mark.parametrize("name", BUILTINS)
def test_request_validation_accepts_each_measure(name: str) -> None:
    assert AnalysisRequest(model="zoo:induction-2l", measures=[name]).measures == [name]


def test_unknown_measure_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError) as caught:
        AnalysisRequest(model="zoo:induction-2l", measures=["entropy", "vibes"])
    error = caught.value.errors()[0]
    assert error["loc"] == ("measures", 1)
    assert (
        "unknown measure 'vibes'; choose from loss, heads, entropy" in error["msg"]
        and "'all'" in error["msg"]
    )


def test_all_is_every_registered_measure() -> None:
    everything = sorted(BUILTINS)
    assert AnalysisRequest(model="x", measures="all").measures == everything
    assert AnalysisRequest(model="x", measures=["all"]).measures == everything
    assert AnalysisRequest(model="x", measures=["loss", "all"]).measures == everything
    # Expanded before hashing: "all" and the list it means are the same analysis.
    assert (
        AnalysisRequest(model="x", measures="all").canonical()
        == AnalysisRequest(model="x", measures=everything).canonical()
    )
    with registered(PEAK):
        assert AnalysisRequest(model="x", measures="all").measures == sorted([*BUILTINS, "peak"])


def _step_table(op: OrderParameter, t0: float = 400.0) -> pd.DataFrame:
    """A clean step of ``op`` at ``t0`` (logistic in ln t), plus a flat decoy row where it filters."""
    steps = np.unique(np.geomspace(25, 6400, 14).round()).astype(int)
    rise = 1.0 / (1.0 + np.exp(-(np.log(steps) - math.log(t0)) / 0.15))
    # A deterministic wiggle well under the step, so the fit has a residual to bootstrap.
    value = 1.0 + 2.0 * rise + 0.01 * np.sin(np.arange(len(steps)) * 2.3)
    quantity = get_measure(op.measure).quantity(op.quantity)
    per_head = "head" in quantity.dims
    rows = pd.DataFrame(
        {
            "measure": op.measure,
            "checkpoint": steps,
            "layer": pd.array([0 if per_head else pd.NA] * len(steps), dtype="Int64"),
            "head": pd.array([0 if per_head else pd.NA] * len(steps), dtype="Int64"),
            "quantity": op.quantity,
            "value": value,
        }
    )
    for column, wanted in op.where:
        decoy = rows.assign(value=5.0)
        rows = pd.concat([rows.assign(**{column: wanted}), decoy.assign(**{column: wanted + 1})])
    return rows.reset_index(drop=True)


@pytest.mark.parametrize("op", order_parameters(), ids=lambda op: op.key)
def test_findings_test_each_order_parameter(op: OrderParameter) -> None:
    from phasescope.phases.findings import find_transitions

    found = find_transitions(_step_table(op), n_boot=10)
    ours = [t for t in found["transitions"] if t["quantity"] == op.quantity]
    assert len(ours) == 1, found
    assert ours[0]["kind"] == "step" and abs(math.log(ours[0]["step"] / 400.0)) < 0.2
    assert ours[0]["before"] < ours[0]["after"]  # the filtered rows, not the flat decoy
    assert get_measure(op.measure).quantity(op.quantity).words in found["summary"]


def test_a_tiny_real_run_emits_only_declared_quantities_and_each_has_a_dashboard_label(series: str) -> None:
    """Every quantity a real run of every measure emits is declared, so the dashboard can title it."""
    from frontend.figures import LABELS
    from phasescope.analysis.adapters_dynamics import Neighbours, SeriesReader, parameters
    from phasescope.analysis.run import build_batch, measure_checkpoint, measure_series
    from phasescope.measures.tables import concat_tables
    from phasescope.models.loading import load_model
    from phasescope.schemas import InputSpec

    params = MeasureParams(
        heavy_prompts=2,
        landscape_points=3,
        sharpness_k=1,
        hutchinson_samples=2,
        llc_chains=1,
        llc_draws=10,
        head_llc_chains=1,
        head_llc_draws=10,
    )
    loaded, other = load_model(series, 20), load_model(series, 10)
    # The cross-checkpoint kind reads the analysis's earlier checkpoints, the series kind all of them.
    near = Neighbours((10, parameters(other.model)), None, (0, parameters(load_model(series, 0).model)))
    inputs = InputSpec(n_prompts=4, seq_len=16)
    table = measure_checkpoint(loaded, BUILTINS, inputs, params, other=other, neighbours=near)
    with SeriesReader(series, [0, 10, 20], loaded.model) as reader:
        whole = measure_series(loaded, BUILTINS, params, build_batch(loaded, inputs), reader)
    table = concat_tables([table, whole])
    assert set(table["measure"]) == set(BUILTINS)
    for measure, rows in table.groupby("measure"):
        entry = get_measure(str(measure))
        declared = {q.name: q for q in entry.quantities}
        emitted = set(rows["quantity"])
        assert emitted <= set(declared), (measure, emitted - set(declared))
        for name in emitted:
            key = f"{measure}.{name}"
            assert LABELS[key] == declared[name].title
            # The coordinates it varies along are the ones declared.
            varying = {
                c
                for c in ("layer", "head", "position", "index", "beta", "matrix", "x", "y")
                if c in rows and rows.loc[rows["quantity"] == name, c].notna().any()
            }
            assert varying - {"x", "y", "beta"} <= set(declared[name].dims), (key, varying)


# --- a measure registered by a test ------------------------------------------------------------------


def test_a_registered_measure_appears_in_the_api_schema_and_is_gone_afterwards() -> None:
    from backend.main import create_app

    def enum() -> list[str]:
        schema = create_app().openapi()["components"]["schemas"]["AnalysisRequest"]["properties"]["measures"]
        listed = next(s for s in schema["anyOf"] if s.get("type") == "array")
        assert {"const": "all", "type": "string"} in schema["anyOf"]
        return listed["items"]["enum"]

    assert enum() == list(BUILTINS)
    with registered(PEAK):
        assert enum() == [*BUILTINS, "peak"]
        assert AnalysisRequest(model="x", measures=["peak"]).measures == ["peak"]
    assert "peak" not in measure_names() and enum() == list(BUILTINS)
    with pytest.raises(ValidationError, match="unknown measure 'peak'"):
        AnalysisRequest(model="x", measures=["peak"])


def test_a_registered_measure_is_dispatched_costed_and_keyed(series: str) -> None:
    from phasescope.analysis.run import measure_checkpoint
    from phasescope.models.loading import load_model
    from phasescope.schemas import InputSpec
    from phasescope.service.cost import drivers, estimate
    from phasescope.service.reuse import measure_keys

    loaded = load_model(series, 20)
    with registered(PEAK):
        table = measure_checkpoint(loaded, ["peak", "entropy"], InputSpec(n_prompts=4))
        request = AnalysisRequest(model=series, measures=["peak"])
        cost = estimate(request).by_measure
        keys = measure_keys(request.model_dump(mode="json"), 20, "w")
        assert "peak" in drivers()["inputs.seq_len"]
    peak = table[table["measure"] == "peak"]
    assert len(peak) == 2 * 4  # the tiny series' layers × heads
    # A probability's maximum over keys: between 1/n (uniform over 24 keys) and 1.
    assert peak["value"].between(1 / 24, 1).all()
    assert cost == {"forward": 1.0, "peak": pytest.approx(0.25)}  # 16 × 64 tokens: one unit each
    assert list(keys) == ["peak"] and re.fullmatch("[0-9a-f]{24}", keys["peak"])


def test_a_registered_measure_gets_findings_and_dashboard_options() -> None:
    from frontend.data import order_options
    from frontend.figures import LABELS
    from phasescope.phases.findings import find_transitions

    with registered(PEAK):
        op = order_parameters()[-1]
        assert op.key == "peak.attention_peak"
        found = find_transitions(_step_table(op), n_boot=10)
        assert [t["quantity"] for t in found["transitions"]] == ["attention_peak"]
        assert order_options(["heads", "peak"]) == [
            "heads.induction_score",
            "heads.prev_token_score",
            "peak.attention_peak",
        ]
        assert LABELS["peak.attention_peak"] == "largest attention probability (probability)"
    assert order_options(["peak"]) == [] and "peak.attention_peak" not in LABELS


def test_a_registered_measure_is_offered_by_the_new_analysis_form() -> None:
    import dash

    from frontend.server import create_combined_app

    create_combined_app()
    page = next(p for p in dash.page_registry.values() if p["path"] == "/new")

    def offered() -> list[str]:
        tree = json.loads(json.dumps(page["layout"](), cls=plotly.utils.PlotlyJSONEncoder))
        found: list[str] = []

        def walk(node: object) -> None:
            if isinstance(node, dict):
                if node.get("props", {}).get("id") == "new-measures":
                    found.extend(o["value"] for o in node["props"]["options"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(tree)
        return found

    assert offered() == list(BUILTINS)
    with registered(PEAK):
        assert offered() == [*BUILTINS, "peak"]
    assert offered() == list(BUILTINS)


def test_cli_help_lists_every_registered_measure() -> None:
    from phasescope.cli import app

    def help_text() -> str:
        result = CliRunner().invoke(app, ["analyze", "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        # Rich draws the options in a box: drop its borders and join the wrapped lines.
        return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())

    text = help_text()
    for entry in measures():
        assert f"{entry.name}: {entry.summary}" in text
    assert "Default: loss,heads,entropy,thermo,spectra." in text
    with registered(PEAK):
        assert "peak: largest attention probability per head" in help_text()
    assert "peak:" not in help_text()


def test_cli_measure_all_runs_every_registered_measure(series: str, tmp_path: Path) -> None:
    """With only the test's measure registered, ``--measure all`` runs exactly it."""
    from phasescope.cli import app

    with only(PEAK):
        result = CliRunner().invoke(
            app,
            [
                "analyze",
                series,
                "--measure",
                "all",
                "--checkpoints",
                "10,20",
                "--out",
                str(tmp_path),
                "--quiet",
            ],
        )
    assert result.exit_code == 0, result.output
    assert measure_names() == BUILTINS  # the built-ins are back, in order
    assert json.loads((tmp_path / "request.json").read_text())["request"]["measures"] == ["peak"]
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert set(table["measure"]) == {"peak"} and set(table["checkpoint"]) == {10, 20}


def test_registered_restores_the_registry_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), registered(PEAK):
        raise RuntimeError
    assert measure_names() == BUILTINS
