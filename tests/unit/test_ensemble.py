"""Seed ensembles (phasescope.phases.ensemble) on synthetic sigmoids with known t* and w, and the zoo's
seed/schedule names (phasescope.zoo.variants) through every parser a model string meets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from phasescope.errors import InvalidRequest, ModelNotFound
from phasescope.phases.ensemble import collapse_quality, ensemble_report
from phasescope.zoo import ZOO, get_variant, parse_seeds, parse_series_name

STEPS = np.arange(0, 1001, 25)
BEFORE, AFTER = 4.0, 0.7


def _sigmoid(t_star: float, w: float) -> np.ndarray:
    x = np.log(np.maximum(STEPS, 1))
    return BEFORE + (AFTER - BEFORE) / (1 + np.exp(-(x - math.log(t_star)) / w))


def _table(
    measure: str, quantity: str, values: np.ndarray, layer: int | None, head: int | None
) -> pd.DataFrame:
    """A tidy table of one series over STEPS, built in one go (``tidy`` per row costs ~40 ms)."""
    n = len(values)
    return pd.DataFrame(
        {
            "measure": measure,
            "checkpoint": STEPS[:n].astype("int64"),
            "layer": pd.array([layer] * n, dtype="Int64"),
            "head": pd.array([head] * n, dtype="Int64"),
            "quantity": quantity,
            "value": np.asarray(values, float),
        }
    )


def _loss_table(values: np.ndarray) -> pd.DataFrame:
    return _table("loss", "loss", values, None, None)


def _heads_table(per_head: dict[int, np.ndarray], layer: int = 1) -> pd.DataFrame:
    return pd.concat(
        [_table("heads", "induction_score", v, layer, head) for head, v in per_head.items()],
        ignore_index=True,
    )


TRUTH = [(300.0, 0.10), (450.0, 0.20), (600.0, 0.15)]


def test_exact_sigmoids_collapse_to_one_curve_while_the_raw_curves_do_not() -> None:
    tables = {seed: _loss_table(_sigmoid(t, w)) for seed, (t, w) in enumerate(TRUTH)}
    (report,) = ensemble_report(tables, "loss.loss")
    assert report.n_detected == 3 and report.layer is None
    for entry, (t_star, w) in zip(report.seeds, TRUTH, strict=True):
        assert entry.detected and entry.head is None
        assert entry.t_star == pytest.approx(t_star, rel=0.01)
        assert entry.width == pytest.approx(w, rel=0.03)
        assert entry.before == pytest.approx(BEFORE, abs=0.02) and entry.after == pytest.approx(
            AFTER, abs=0.02
        )
        assert entry.step == pytest.approx(t_star, rel=0.02)
    assert report.step_mean == pytest.approx(np.mean([t for t, _ in TRUTH]), rel=0.02)
    assert report.step_sd == pytest.approx(np.std([t for t, _ in TRUTH], ddof=1), rel=0.05)
    assert report.step_min == pytest.approx(300, rel=0.02) and report.step_max == pytest.approx(600, rel=0.02)
    # Exact shapes: the collapse is exact up to the fit's grid; the uncollapsed curves are far apart.
    assert report.collapse_quality is not None and report.collapse_quality < 0.01
    assert report.uncollapsed_quality is not None and report.uncollapsed_quality > 0.2
    assert report.collapse_gain is not None and report.collapse_gain > 20
    assert report.u_range == (-3.0, 3.0)
    # The collapse points: each seed's normalised values are σ(u) at its own u.
    pts = report.points
    assert set(pts["label"]) == {"0", "1", "2"}
    expected = 1 / (1 + np.exp(-pts["u"]))
    inside = pts["u"].abs() <= 3
    assert np.abs(pts["m_norm"][inside] - expected[inside]).max() < 0.01


def test_identical_seeds_with_noise_have_a_spread_the_per_seed_errors_explain() -> None:
    rng = np.random.default_rng(5)
    tables = {s: _loss_table(_sigmoid(450.0, 0.15) + rng.normal(0, 0.03, len(STEPS))) for s in range(4)}
    (report,) = ensemble_report(tables, "loss.loss", n_boot=60)
    assert report.n_detected == 4
    assert all(abs(e.step - 450) < 30 for e in report.seeds)  # type: ignore[operator]
    # Same truth for every seed: the seed spread is of the order of the per-seed errors, not 10x it.
    assert report.spread_ratio is not None and report.spread_ratio < 3
    assert report.collapse_quality is not None and report.collapse_quality < 0.1


def test_spread_ratio_is_the_seed_sd_over_the_rms_of_the_stored_uncertainties() -> None:
    tables = {seed: _loss_table(_sigmoid(t, w)) for seed, (t, w) in enumerate(TRUTH)}

    def stored(t_star: float, w: float, sd: float) -> dict:
        half = math.log(9) * w
        return {
            "transitions": [
                {
                    "quantity": "loss",
                    "layer": None,
                    "head": None,
                    "step": t_star,
                    "uncertainty": sd,
                    "uncertainty_method": "prompt bootstrap (n=50)",
                    "step_ci_lo": t_star - 2 * sd,
                    "step_ci_hi": t_star + 2 * sd,
                    "window_lo": t_star * math.exp(-half),
                    "window_hi": t_star * math.exp(half),
                    "kind": "step",
                    "size": AFTER - BEFORE,
                }
            ]
        }

    findings = {
        seed: stored(t, w, sd) for seed, ((t, w), sd) in enumerate(zip(TRUTH, (10, 20, 20), strict=True))
    }
    (report,) = ensemble_report(tables, "loss.loss", findings=findings)
    assert [e.step for e in report.seeds] == [300.0, 450.0, 600.0]
    assert report.step_sd == pytest.approx(150.0)
    assert report.rms_uncertainty == pytest.approx(math.sqrt((100 + 400 + 400) / 3))
    assert report.spread_ratio == pytest.approx(150.0 / math.sqrt(300.0))
    assert report.seeds[0].step_ci_lo == 280.0 and report.seeds[0].uncertainty_method.startswith("prompt")


def test_a_seed_without_transition_is_reported_and_left_out() -> None:
    tables = {
        "a": _loss_table(_sigmoid(300, 0.1)),
        "b": _loss_table(_sigmoid(500, 0.1)),
        "flat": _loss_table(np.full(len(STEPS), 4.0) + np.random.default_rng(1).normal(0, 0.01, len(STEPS))),
    }
    (report,) = ensemble_report(tables, "loss.loss")
    flat = report.seeds[2]
    assert flat.label == "flat" and not flat.detected and flat.step is None and flat.reason
    assert report.n_detected == 2 and set(report.points["label"]) == {"a", "b"}
    assert report.collapse_quality is not None and report.collapse_quality < 0.01
    d = report.to_dict()
    assert d["seeds"][2]["step"] is None and len(d["points"]) == len(report.points)


def test_per_head_quantity_takes_each_seeds_most_changing_head_per_layer() -> None:
    flat = np.full(len(STEPS), 0.05)
    score = lambda t, w: 0.05 + 0.7 / (1 + np.exp(-(np.log(np.maximum(STEPS, 1)) - math.log(t)) / w))  # noqa: E731
    tables = {
        0: _heads_table({0: flat, 1: score(400, 0.1), 2: 0.05 + 0.3 * (score(400, 0.1) - 0.05) / 0.7}),
        1: _heads_table({0: score(520, 0.12), 1: flat, 2: flat}),
    }
    (report,) = ensemble_report(tables, "heads.induction_score")
    assert report.layer == 1
    assert [e.head for e in report.seeds] == [1, 0]
    assert report.seeds[0].t_star == pytest.approx(400, rel=0.01)
    assert report.seeds[1].t_star == pytest.approx(520, rel=0.01)
    assert report.seeds[0].after == pytest.approx(0.75, abs=0.01)


def test_unknown_order_parameter_and_missing_rows_are_clear_errors() -> None:
    tables = {0: _loss_table(_sigmoid(300, 0.1))}
    with pytest.raises(InvalidRequest) as err:
        ensemble_report(tables, "loss.nonsense")
    assert "loss.loss" in err.value.choices
    with pytest.raises(InvalidRequest, match="no table holds"):
        ensemble_report(tables, "heads.induction_score")


def test_collapse_quality_of_known_curves() -> None:
    u = np.linspace(-3, 3, 7)
    assert collapse_quality([(u, np.zeros(7)), (u, np.ones(7))], -3, 3) == pytest.approx(0.5)
    assert collapse_quality([(u, u), (u, u)], -3, 3) == pytest.approx(0.0)
    assert collapse_quality([(u, u)], -3, 3) is None
    assert collapse_quality([(u, u), (u, u)], 1, 1) is None


# --- seed and schedule variants of zoo series -------------------------------------------------------


def test_series_names_parse_to_their_one_canonical_variant() -> None:
    v = parse_series_name("zoo:induction-2l-seed3")
    assert (v.base, v.seed, v.every, v.name, v.model) == (
        "induction-2l",
        3,
        None,
        "induction-2l-seed3",
        "zoo:induction-2l-seed3",
    )
    assert parse_series_name("grokking-p59").checkpoint_steps == ZOO["grokking-p59"].checkpoint_steps
    dense = parse_series_name("induction-2l-seed2-every5")
    assert (dense.seed, dense.every) == (2, 5)
    # Union of the recipe's schedule (every 25) and the multiples of 5: 0, 5, ..., 1000.
    assert dense.checkpoint_steps == tuple(range(0, 1001, 5))
    # 75 recipe steps + 44 multiples of 40 it lacks (63 multiples, 8 below 300, 11 of 200 above).
    grok = parse_series_name("grokking-p59-every40").checkpoint_steps
    assert set(ZOO["grokking-p59"].checkpoint_steps) <= set(grok) and 2480 in grok and len(grok) == 119
    assert get_variant("induction-2l-seed3", seed=0).name == "induction-2l"
    assert get_variant("induction-2l", seed=4, every=10).name == "induction-2l-seed4-every10"


@pytest.mark.parametrize(
    ("name", "error", "says"),
    [
        ("zoo:induction-2l-seed0", InvalidRequest, "seed 0 is the plain name"),
        ("zoo:induction-2l-seed007", InvalidRequest, "no leading zeros"),
        ("zoo:induction-2l-seed10000", InvalidRequest, "outside 0..9999"),
        ("zoo:induction-2l-every1", InvalidRequest, "at most 501 checkpoints"),
        ("zoo:induction-2l-every2000", InvalidRequest, "3..1000"),
        ("zoo:induction-2l-every5-seed3", ModelNotFound, "unknown zoo series"),
        ("zoo:induction-3l-seed1", ModelNotFound, "unknown zoo series"),
        ("zoo:induction-2l-seed", ModelNotFound, "unknown zoo series"),
    ],
)
def test_bad_series_names_are_refused_with_what_to_write(name: str, error: type, says: str) -> None:
    from phasescope.models.loading import parse_model_spec

    with pytest.raises(error) as err:
        parse_model_spec(name)
    assert says in err.value.message and err.value.field == "model"


def test_model_spec_of_a_seed_points_at_its_own_directory() -> None:
    from phasescope.config import get_settings
    from phasescope.models.loading import parse_model_spec

    ref = parse_model_spec("zoo:induction-2l-seed3")
    assert ref.kind == "zoo" and ref.name == "induction-2l-seed3"
    assert ref.path == get_settings().zoo_dir / "induction-2l-seed3"
    assert parse_model_spec("zoo:induction-2l").path == get_settings().zoo_dir / "induction-2l"


def test_seed_selections() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7, 0,2,2") == [0, 2, 7]
    assert parse_seeds("0-2,5-6") == [0, 1, 2, 5, 6]
    for bad, says in (("4-0", "A ≤ B"), ("x", "neither"), ("0-99", "at most 64"), ("0-10000", "9999")):
        with pytest.raises(InvalidRequest, match=says):
            parse_seeds(bad)


def test_a_seed_and_a_dense_schedule_are_recorded_and_never_taken_for_another_series(tmp_path) -> None:
    from phasescope.models.series import read_manifest
    from phasescope.zoo import is_trained

    spec = ZOO["induction-1l"]
    out = tmp_path / "induction-1l-seed2-every5"
    spec.train(out, seed=2, progress=False, max_steps=12, every=5, name=out.name)
    manifest = read_manifest(out)
    assert manifest.steps == [0, 5, 10, 12] and manifest.seed == 2 and manifest.name == out.name
    assert manifest.training["checkpoint_every"] == 5
    assert manifest.task["train_seed"] == spec.task["train_seed"] + 2
    # A complete series must match its name, seed and whole schedule: this short run is none of them.
    for name in ("induction-1l-seed2-every5", "induction-1l", "induction-1l-seed2"):
        assert not is_trained(name, out_dir=out)
