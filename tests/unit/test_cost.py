"""The cost model: every request field is priced or says why it is free, and more never costs less."""

from __future__ import annotations

import typing

import pytest

from phasescope.config import get_settings
from phasescope.errors import InvalidRequest
from phasescope.measures.registry import measure_names, measures
from phasescope.schemas import AnalysisRequest, InputSpec, MeasureParams
from phasescope.service.cost import FREE, check_request, drivers, estimate, job_timeout_s

MEASURE_NAMES = measure_names()
DRIVERS = drivers()

# Requests the fields are raised from: every measure, defaults; and one where every size binds
# (more prompts than heavy_prompts, so that raising heavy_prompts changes what runs).
BASES = [
    {"model": "tiny", "measures": list(MEASURE_NAMES)},
    {"model": "tl:gpt2", "measures": list(MEASURE_NAMES), "inputs": {"n_prompts": 200, "seq_len": 96}},
    {"model": "tiny", "measures": ["entropy"], "inputs": {"texts": ["a b c " * 100]}},
]
# Increasing values of each field up to the schema's own limits (choices: cheapest first).
RAISED: dict[str, list[typing.Any]] = {
    "dtype": ["float32", "bfloat16", "float16"],
    "inputs.texts": [["x" * 20_000] * 3, ["x" * 20_000] * 200],
    "inputs.n_prompts": [17, 100, 256],
    "inputs.seq_len": [65, 200, 1024],
    "inputs.seed": [1, 2**31 - 1],
    "inputs.prompt_style": ["raw"],
    "params.beta_min": [0.5, 1.0],
    "params.beta_max": [100.0, 1000.0],
    "params.n_beta": [63, 201, 400],
    "params.energy_bins": [100, 500],
    "params.heavy_prompts": [100, 4096],
    "params.landscape_dims": [1, 2],
    "params.landscape_points": [12, 41],
    "params.landscape_radius": [2.0, 10.0],
    "params.landscape_seed": [7],
    "params.sharpness_k": [4, 20],
    "params.sharpness_method": ["lanczos", "power"],
    "params.hutchinson_samples": [17, 256],
    "params.llc_chains": [5, 16],
    "params.llc_draws": [101, 2000],
    "params.llc_lr": [0.01, 0.1],
    "params.llc_localization": [1000.0, 1e6],
    "params.slq_steps": [25, 200],
    "params.slq_probes": [5, 64],
    "params.head_llc_max_heads": [9, 4096],
    "params.head_llc_chains": [3, 16],
    "params.head_llc_draws": [51, 2000],
}


PRICED_BY_ESTIMATE = {"model", "checkpoints", "measures"}  # the default prompts, the count, the sum


def _fields() -> list[str]:
    top = [n for n in AnalysisRequest.model_fields if n not in PRICED_BY_ESTIMATE | {"inputs", "params"}]
    return (
        top
        + [f"inputs.{n}" for n in InputSpec.model_fields]
        + [f"params.{n}" for n in MeasureParams.model_fields]
    )


def _with(base: dict, field: str, value: typing.Any) -> AnalysisRequest:
    if "." not in field:
        return AnalysisRequest.model_validate({**base, field: value})
    section, name = field.split(".")
    body = {**base, section: {**base.get(section, {}), name: value}}
    return AnalysisRequest.model_validate(body)


def _value(request: AnalysisRequest, field: str) -> typing.Any:
    obj: typing.Any = request
    for part in field.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_field_is_priced_or_free():
    """A new field of InputSpec or MeasureParams must drive a cost (a measure's cost_params) or be in FREE
    (and in RAISED here)."""
    fields = set(_fields())
    assert fields == set(DRIVERS) | set(FREE), fields ^ (set(DRIVERS) | set(FREE))
    assert not set(DRIVERS) & set(FREE)
    assert fields == set(RAISED)
    for entry in measures():
        # Every cost driver is a real parameter, and one the measure reads.
        assert set(entry.cost_params) <= set(MeasureParams.model_fields), entry.name
        assert set(entry.cost_params) <= set(entry.params), entry.name
    for field, named in DRIVERS.items():
        assert set(named) <= set(MEASURE_NAMES), field


@pytest.mark.parametrize("field", sorted(RAISED))
def test_raising_a_field_never_lowers_the_cost_and_drivers_raise_it(field):
    for base in BASES:
        start = AnalysisRequest.model_validate(base)
        previous = estimate(start).per_checkpoint
        current = _value(start, field)
        for value in RAISED[field]:
            if isinstance(value, int | float) and isinstance(current, int | float) and value <= current:
                continue  # not a raise from this base
            cost = estimate(_with(base, field, value)).per_checkpoint
            assert cost >= previous, (field, value, base)
            previous = cost
    # A driver raises the cost of a request with one of its measures; a free field changes nothing.
    base = BASES[1] if field != "inputs.texts" else BASES[2]
    low = estimate(_with(base, field, RAISED[field][0])).per_checkpoint
    top = estimate(_with(base, field, RAISED[field][-1])).per_checkpoint
    if field in DRIVERS:
        assert top > low, (field, RAISED[field])
    else:
        assert top == low, field


def test_each_measure_and_each_checkpoint_adds_cost():
    one = AnalysisRequest(model="tiny", measures=["loss"])
    for measure in MEASURE_NAMES:
        more = AnalysisRequest(model="tiny", measures=sorted({"loss", measure}))
        assert estimate(more).per_checkpoint >= estimate(one).per_checkpoint
        if measure != "loss":
            assert estimate(more).per_checkpoint > estimate(one).per_checkpoint, measure
    assert estimate(one, 10).total == pytest.approx(10 * estimate(one, 1).total)


def test_formulas_at_the_documented_points():
    # Defaults on a text model (16 prompts of 64 tokens): the shared forward pass is one unit.
    default = estimate(AnalysisRequest(model="tiny", measures=["entropy"]))
    assert default.by_measure == {"forward": 1.0, "entropy": 0.5}
    # The landscape grid: points^dims forward passes on min(heavy_prompts, P) prompts.
    grid = AnalysisRequest(
        model="tiny",
        measures=["landscape"],
        inputs={"n_prompts": 32, "seq_len": 128},
        params={"landscape_points": 21, "landscape_dims": 2, "heavy_prompts": 8},
    )
    assert estimate(grid).by_measure["landscape"] == pytest.approx(21**2 * 8 * 128 / 1024)
    # LLC: one initial loss plus chains × draws SGLD steps of three forward passes each.
    llc = AnalysisRequest(model="tiny", measures=["llc"], params={"llc_chains": 2, "llc_draws": 50})
    assert estimate(llc).by_measure["llc"] == pytest.approx(1 + 3 * 2 * 50)


def test_head_llc_and_all_at_their_defaults_fit_the_ceilings_on_the_zoo():
    """head_llc has its own sampler size (head_llc_chains × head_llc_draws), priced per head on
    head_llc_max_heads: a default request of it, or of every measure, on zoo:induction-2l (41
    checkpoints, 64 prompts) is under max_job_units and max_analysis_units."""
    s = get_settings()
    head = AnalysisRequest(model="zoo:induction-2l", measures=["head_llc"])
    # heavy = 64 prompts × 64 tokens / 1024 = 4 units; 8 heads × (1 + 3 · 2 chains · 50 draws).
    assert estimate(head).by_measure["head_llc"] == pytest.approx(4 * 8 * (1 + 3 * 2 * 50))
    # The llc measure's sampler size does not price head_llc (nor the other way round).
    more = AnalysisRequest(model="zoo:induction-2l", measures=["head_llc"], params={"llc_draws": 2000})
    assert estimate(more).by_measure == estimate(head).by_measure
    everything = AnalysisRequest(model="zoo:induction-2l", measures="all")
    assert "head_llc" in everything.measures
    cost = check_request(everything, 41)
    assert cost.per_checkpoint <= s.max_job_units and cost.total <= s.max_analysis_units
    # At the llc measure's sampler size (4 × 100) head_llc alone would be over the job ceiling.
    as_llc = AnalysisRequest(
        model="zoo:induction-2l", measures=["head_llc"], params={"head_llc_chains": 4, "head_llc_draws": 100}
    )
    with pytest.raises(InvalidRequest) as caught:
        check_request(as_llc, 1)
    assert caught.value.field in ("params.head_llc_draws", "params.head_llc_chains")


def test_job_timeout_grows_with_the_work_and_is_capped(monkeypatch):
    monkeypatch.setenv("PHASESCOPE_JOB_TIMEOUT_MAX_S", "5000")
    get_settings.cache_clear()
    try:
        small = AnalysisRequest(model="tiny", measures=["loss"])
        big = AnalysisRequest(model="tiny", measures=["loss", "thermo"], params={"n_beta": 301})
        huge = AnalysisRequest(model="tiny", measures=["llc"], params={"llc_chains": 16, "llc_draws": 2000})
        s = get_settings()
        assert job_timeout_s(small) == s.job_timeout_base_s + int(s.job_timeout_per_unit_s * 1.5 + 0.999)
        assert job_timeout_s(small) < job_timeout_s(big) < 5000
        assert job_timeout_s(huge) == 5000  # 96,001 units would be 11 days at 10 s each
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"measures": ["llc"], "params": {"llc_chains": 16, "llc_draws": 2000}}, "params.llc_draws"),
        (
            {"measures": ["landscape"], "params": {"landscape_points": 41}, "inputs": {"n_prompts": 64}},
            "params.landscape_points",
        ),
        (
            {"measures": ["thermo"], "inputs": {"n_prompts": 256}, "params": {"n_beta": 101}},
            "inputs.n_prompts",
        ),
        ({"measures": ["spectra"], "inputs": {"n_prompts": 256, "seq_len": 1024}}, "inputs.seq_len"),
        (
            {
                "measures": ["sharpness"],
                "params": {"sharpness_method": "power", "sharpness_k": 20, "hutchinson_samples": 256},
            },
            "params.sharpness_k",
        ),
        ({"measures": ["llc", "loss"]}, "measures"),
    ],
)
def test_over_the_job_ceiling_names_the_dominant_parameter(monkeypatch, body, field):
    monkeypatch.setenv("PHASESCOPE_MAX_JOB_UNITS", "50")
    get_settings.cache_clear()
    try:
        request = AnalysisRequest.model_validate({"model": "tiny", **body})
        with pytest.raises(InvalidRequest) as caught:
            check_request(request, 1)
        assert caught.value.field == field, caught.value.message
        assert "max_job_units" in caught.value.message and "limit of 50 " in caught.value.message
    finally:
        get_settings.cache_clear()


def test_over_the_analysis_ceiling_names_the_checkpoints(monkeypatch):
    monkeypatch.setenv("PHASESCOPE_MAX_ANALYSIS_UNITS", "100")
    get_settings.cache_clear()
    try:
        request = AnalysisRequest(model="tiny", measures=["loss"])
        assert check_request(request, 60).total == pytest.approx(90)
        with pytest.raises(InvalidRequest) as caught:
            check_request(request, 80)
        assert caught.value.field == "checkpoints" and "max_analysis_units" in caught.value.message
    finally:
        get_settings.cache_clear()
