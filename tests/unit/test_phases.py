"""Transition detection on synthetic order parameters: sigmoids in ln t, flat plateaus, drifts, peaks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from phasescope.phases.describe import co_moving, summarise
from phasescope.phases.detect import Transition, detect_transitions

STEPS = np.arange(0, 1001, 25)
INTERVAL = 25


def sigmoid(mid: float, width: float, before: float, after: float) -> np.ndarray:
    """A transition from ``before`` to ``after`` centred at step ``mid``, ``width`` wide in ln t."""
    x = np.log(np.maximum(STEPS, 1))
    return before + (after - before) / (1 + np.exp(-(x - np.log(mid)) / width))


def frame(
    quantity: str, values: np.ndarray, layer: int | None = None, head: int | None = None, **extra
) -> pd.DataFrame:  # noqa: ANN003
    return pd.DataFrame(
        {
            "measure": "synthetic",
            "checkpoint": STEPS,
            "layer": layer,
            "head": head,
            "quantity": quantity,
            "value": values,
            **extra,
        }
    ).astype({"layer": "Int64", "head": "Int64"})


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mid", [330.0, 480.0, 610.0])
def test_noisy_sigmoid_midpoint_is_found_within_one_checkpoint_interval(seed: int, mid: float) -> None:
    rng = np.random.default_rng(seed)
    loss = sigmoid(mid, 0.08, 4.1, 0.7) + rng.normal(0, 0.05, len(STEPS))
    (t,) = detect_transitions(frame("loss", loss), n_boot=30)
    assert abs(t.step - mid) <= INTERVAL
    assert t.kind == "step" and t.step_lo <= t.step <= t.step_hi and t.step_hi - t.step_lo == INTERVAL
    assert t.before == pytest.approx(4.1, abs=0.1) and t.after == pytest.approx(0.7, abs=0.1)
    assert t.size == pytest.approx(-3.4, abs=0.15)
    assert t.uncertainty > 0 and t.uncertainty_method == "residual bootstrap (n=30)"
    assert t.window_lo < mid < t.window_hi and not t.coarse


@pytest.mark.parametrize("seed", range(20))
def test_flat_noisy_plateau_has_no_transition(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    plateau = 4.1 + rng.normal(0, 0.05, len(STEPS))
    assert detect_transitions(frame("loss", plateau), n_boot=10) == []


def test_slow_drift_slow_slide_and_early_transient_are_not_transitions() -> None:
    rng = np.random.default_rng(7)
    x = np.log(np.maximum(STEPS, 1))
    drift = 4.1 - 0.15 * x + rng.normal(0, 0.02, len(STEPS))  # a steady slide over the whole run
    early = 4.1 + 0.4 * np.exp(-STEPS / 20) + rng.normal(0, 0.02, len(STEPS))  # settles within 2 checkpoints
    # The one-layer induction control: a real but slow slide, 4.16 → 3.2 nats over steps ~150–690.
    slow = sigmoid(320, 0.35, 4.16, 3.2) + rng.normal(0, 0.04, len(STEPS))
    table = pd.concat([frame("drift", drift), frame("early", early), frame("slow", slow)])
    assert detect_transitions(table, n_boot=10) == []


def test_two_co_moving_series_are_grouped_and_summarised() -> None:
    rng = np.random.default_rng(3)
    parts = [frame("loss", sigmoid(480, 0.06, 4.1, 0.7) + rng.normal(0, 0.03, len(STEPS)))]
    for head in range(4):
        score = sigmoid(470 + 5 * head, 0.06, 0.1, 0.7) + rng.normal(0, 0.02, len(STEPS))
        parts.append(frame("induction_score", score, layer=1, head=head))
    parts.append(
        frame("entropy_mean", sigmoid(150, 0.1, 2.0, 1.0) + rng.normal(0, 0.02, len(STEPS)), layer=1, head=0)
    )
    found = detect_transitions(pd.concat(parts), n_boot=20)
    assert len(found) == 6
    groups = co_moving(found)
    assert [sorted({t.quantity for t in g}) for g in groups] == [
        ["entropy_mean"],
        ["induction_score", "loss"],
    ]
    text = summarise(found)
    assert "layer 1 heads 0–3: induction transition at step" in text
    assert "loss −3.4 nats" in text and "induction score 0.1 → 0.7" in text
    assert summarise([]) == "no transition"
    json.dumps([t.to_dict() for t in found])  # JSON-able for the results store


def test_a_sharpness_peak_inside_the_transition_window_moves_with_it() -> None:
    rng = np.random.default_rng(4)
    x = np.log(np.maximum(STEPS, 1))
    bump = np.exp(-0.5 * ((x - np.log(500)) / 0.08) ** 2)
    sharp = sigmoid(500, 0.05, 1.0, 2.0) + 1.8 * bump + rng.normal(0, 0.05, len(STEPS))
    loss = sigmoid(470, 0.06, 4.1, 0.7) + rng.normal(0, 0.03, len(STEPS))
    found = detect_transitions(
        pd.concat([frame("loss", loss), frame("hessian_eigenvalue", sharp)]), n_boot=20
    )
    peak = next(t for t in found if t.quantity == "hessian_eigenvalue")
    step = next(t for t in found if t.quantity == "loss")
    assert peak.kind == "peak" and abs(peak.step - 500) <= INTERVAL
    assert peak.peak == pytest.approx(3.3, abs=0.25) and peak.before == pytest.approx(1.0, abs=0.1)
    assert step.window_lo <= peak.step <= step.window_hi
    assert len(co_moving(found)) == 1
    assert "sharpness peaks at" in summarise(found)


def test_prompt_bootstrap_and_seed_spread() -> None:
    rng = np.random.default_rng(5)
    per_prompt = sigmoid(480, 0.08, 4.1, 0.7)[1:, None] + rng.normal(0, 0.3, (len(STEPS) - 1, 16))
    table = frame("loss", np.r_[4.1, per_prompt.mean(1)])
    (t,) = detect_transitions(table, per_prompt=per_prompt, n_boot=30)
    assert t.uncertainty_method == "prompt bootstrap (n=30)" and 0 < t.uncertainty < 3 * INTERVAL
    keyed = detect_transitions(table, per_prompt={("loss", None, None): per_prompt}, n_boot=30)
    assert keyed[0].uncertainty_method.startswith("prompt bootstrap")
    with pytest.raises(ValueError, match="per_prompt"):
        detect_transitions(table, per_prompt=per_prompt[:-1])

    seeds = pd.concat(
        [
            frame("loss", sigmoid(mid, 0.08, 4.1, 0.7) + rng.normal(0, 0.03, len(STEPS)), seed=s)
            for s, mid in enumerate([460.0, 480.0, 500.0])
        ]
    )
    (t,) = detect_transitions(seeds)
    assert t.uncertainty_method == "seed spread (n=3)" and abs(t.step - 480) <= INTERVAL
    assert t.uncertainty == pytest.approx(20, rel=0.35)


def test_a_jump_between_two_checkpoints_is_reported_as_that_interval() -> None:
    rng = np.random.default_rng(6)
    jump = np.where(STEPS < 490, 4.1, 0.7) + rng.normal(0, 0.03, len(STEPS))  # between 475 and 500
    (t,) = detect_transitions(frame("loss", jump), n_boot=20)
    assert t.coarse and (t.step_lo, t.step_hi) == (475, 500)
    assert "between steps 475 and 500" in summarise([t])
    (d,) = detect_transitions(frame("loss", jump), method="derivative", n_boot=20)
    assert (d.step_lo, d.step_hi) == (475, 500) and d.method.startswith("max |dm/d ln t|")


def test_bad_tables_are_refused() -> None:
    twice = pd.concat([frame("loss", np.ones(len(STEPS))), frame("loss", np.ones(len(STEPS)))])
    with pytest.raises(ValueError, match="several values per checkpoint"):
        detect_transitions(twice)
    short = frame("loss", np.ones(len(STEPS))).iloc[:5]
    with pytest.raises(ValueError, match="need at least"):
        detect_transitions(short)


def test_transition_fields_and_no_torch_import() -> None:
    assert "uncertainty" in Transition.__dataclass_fields__
    code = "import sys, phasescope.phases.detect; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reported_levels_stay_inside_the_measured_range() -> None:
    """Grokking-like series that are not sigmoids: the levels said must be ones that were measured."""
    rng = np.random.default_rng(0)
    # Test accuracy: chance until ~600, then saturating at exactly 1.0 (a sigmoid fit overshoots it).
    accuracy = np.minimum(sigmoid(600, 0.04, 0.02, 1.25), 1.0) + rng.normal(0, 0.003, len(STEPS))
    accuracy = np.clip(accuracy, 0.0, 1.0)
    # Test loss: rises while the training set is memorised, then collapses to ~0 at generalisation.
    loss = sigmoid(100, 0.3, 4.0, 12.0) + sigmoid(650, 0.05, 0.0, -12.0) + rng.normal(0, 0.05, len(STEPS))
    loss = np.maximum(loss, 1e-4)
    found = detect_transitions(
        pd.concat([frame("accuracy_test", accuracy), frame("loss_test", loss)]), n_boot=10
    )
    acc = next(t for t in found if t.quantity == "accuracy_test")
    test_loss = next(t for t in found if t.quantity == "loss_test" and t.size < 0)
    assert 500 <= acc.step <= 700 and 550 <= test_loss.step <= 750
    assert accuracy.min() <= acc.before < acc.after <= 1.0 and acc.after == pytest.approx(1.0, abs=0.02)
    assert loss.min() <= test_loss.after <= 0.5
    assert test_loss.before <= loss.max()
    text = summarise(found)
    assert "1.06" not in text and "−0.2" not in text


def test_grokking_is_named_memorisation_then_generalisation() -> None:
    rng = np.random.default_rng(1)
    noise = lambda: rng.normal(0, 0.02, len(STEPS))  # noqa: E731
    grokking = pd.concat(
        [
            frame("loss_train", sigmoid(100, 0.06, 4.0, 0.01) + noise()),
            frame("accuracy_train", sigmoid(100, 0.06, 0.02, 1.0) + noise()),
            frame("accuracy_test", sigmoid(700, 0.04, 0.05, 1.0) + noise()),
        ]
    )
    text = summarise(detect_transitions(grokking, n_boot=10))
    assert text.index("memorisation ") < text.index("generalisation (grokking) transition "), text
    assert "train loss" in text and "test accuracy" in text

    together = pd.concat(
        [
            frame("loss_train", sigmoid(400, 0.06, 4.0, 0.01) + noise()),
            frame("accuracy_test", sigmoid(400, 0.06, 0.05, 1.0) + noise()),
        ]
    )
    text = summarise(detect_transitions(together, n_boot=10))
    assert "memorisation" not in text and "grokking" not in text and text.startswith("transition "), text


# --- issue 14: intervals from the data ---------------------------------------------------------------


GEOMETRIC = np.unique(np.round(np.geomspace(25, 1000, 24)))  # 24 checkpoints: fast fits


def _draw(seed: int, n_prompts: int = 64, sigma: float = 0.4) -> tuple[float, np.ndarray]:
    """A loss step at a random midpoint with Gaussian per-prompt noise: ``(mid, [checkpoint, prompt])``."""
    rng = np.random.default_rng(seed)
    mid = rng.uniform(400, 560)
    mean = 4.1 - 3.4 / (1 + np.exp(-(np.log(GEOMETRIC) - np.log(mid)) / 0.1))
    return mid, mean[:, None] + rng.normal(0, sigma, (len(GEOMETRIC), n_prompts))


def test_prompt_bootstrap_interval_covers_the_true_midpoint_at_about_its_nominal_rate() -> None:
    """200 seeded draws: the 95% interval holds the true midpoint in 0.87–0.99 of them.

    Over 200 draws the binomial spread of the coverage is √(0.95·0.05/200) ≈ 0.015. The percentile
    bootstrap of a fitted midpoint under-covers a little with few prompts (the resamples' variance is
    (n−1)/n of the truth, and 2.5/97.5% percentiles of 100 resamples are rough: 0.915 measured here,
    0.90 with 16 prompts), so the band reaches 5 spreads below 0.95 and 2.5 above. An interval that
    ignored the prompt noise, or one as wide as a checkpoint interval, lands far outside it.
    """
    hits, widths = 0, []
    for seed in range(200):
        mid, per_prompt = _draw(seed)
        table = pd.DataFrame(
            {
                "checkpoint": GEOMETRIC,
                "layer": pd.NA,
                "head": pd.NA,
                "quantity": "loss",
                "value": per_prompt.mean(1),
            }
        )
        (t,) = detect_transitions(table, per_prompt=per_prompt, kinds=("step",), n_boot=100, seed=seed)
        assert t.uncertainty_method == "prompt bootstrap (n=100)" and not t.coarse
        assert t.step_ci_lo <= t.step <= t.step_ci_hi
        hits += t.step_ci_lo <= mid <= t.step_ci_hi
        widths.append((t.step_ci_hi - t.step_ci_lo) / t.step)
    assert 0.87 <= hits / 200 <= 0.99, hits
    assert np.median(widths) < 0.05  # far finer than the checkpoint spacing (17% here): the data place it


def test_residual_bootstrap_gives_a_percentile_interval_and_a_coarse_one_holds_its_interval() -> None:
    rng = np.random.default_rng(8)
    loss = sigmoid(480, 0.08, 4.1, 0.7) + rng.normal(0, 0.05, len(STEPS))
    (t,) = detect_transitions(frame("loss", loss), n_boot=60)
    assert t.uncertainty_method == "residual bootstrap (n=60)"
    assert t.step_ci_lo < t.step < t.step_ci_hi and t.step_ci_lo < 480 < t.step_ci_hi
    jump = np.where(STEPS < 490, 4.1, 0.7) + rng.normal(0, 0.03, len(STEPS))
    (c,) = detect_transitions(frame("loss", jump), n_boot=20)
    assert c.coarse and c.step_ci_lo <= 475 and c.step_ci_hi >= 500
    assert "between steps 475 and 500" in summarise([c])


def test_on_dense_checkpoints_steps_inside_each_others_windows_move_together() -> None:
    """Checkpoints 5 steps apart: the loss (484) and the induction heads (472) are 12 steps apart, more
    than one interval, yet each is inside the other's window: one induction transition."""
    steps = np.arange(5, 1001, 5)
    x = np.log(steps)
    rng = np.random.default_rng(9)

    def rows(quantity: str, mid: float, before: float, after: float, head: int | None) -> pd.DataFrame:
        value = before + (after - before) / (1 + np.exp(-(x - np.log(mid)) / 0.08))
        return pd.DataFrame(
            {"checkpoint": steps, "layer": None if head is None else 1, "head": head, "quantity": quantity}
            | {"value": value + rng.normal(0, 0.01, len(steps))}
        )

    table = pd.concat(
        [rows("loss", 484, 4.1, 0.7, None), *(rows("induction_score", 472, 0.1, 0.7, h) for h in range(2))]
    )
    found = detect_transitions(table, kinds=("step",), n_boot=20)
    assert len(found) == 3 and len(co_moving(found)) == 1
    assert summarise(found).startswith("layer 1 heads 0–1: induction transition at step")
