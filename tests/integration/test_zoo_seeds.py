"""The zoo's reference facts hold for every seed (issue 14): 3 seeds of induction-2l and grokking-p59.

Trained once and cached (``trained_zoo_seeds`` in tests/conftest.py). The facts are read from each
series' own training record (the manifest's history, measured on the checkpoints' weights) and
located with ``phasescope.phases.detect``, the detector the findings use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phasescope.models.series import read_manifest
from phasescope.phases.detect import detect_transitions
from phasescope.phases.ensemble import ensemble_report
from tests.conftest import ZOO_SEEDS

pytestmark = pytest.mark.slow


def _series(path: Path, key: str, measure: str = "loss", quantity: str = "loss") -> pd.DataFrame:
    """One history metric at the checkpoints, as a tidy table of ``measure.quantity``."""
    manifest = read_manifest(path)
    rows = {int(h["step"]): h for h in manifest.history}
    steps = list(manifest.steps)
    return pd.DataFrame(
        {
            "measure": measure,
            "checkpoint": np.array(steps, dtype="int64"),
            "layer": pd.array([None] * len(steps), dtype="Int64"),
            "head": pd.array([None] * len(steps), dtype="Int64"),
            "quantity": quantity,
            "value": [rows[s][key] for s in steps],
        }
    )


@pytest.mark.parametrize("seed", ZOO_SEEDS["induction-2l"])
def test_induction_loss_drops_half_way_between_steps_400_and_600(
    trained_zoo_seeds: dict[tuple[str, int], Path], seed: int
) -> None:
    path = trained_zoo_seeds[("induction-2l", seed)]
    manifest = read_manifest(path)
    assert manifest.seed == seed and manifest.name == (
        "induction-2l" if seed == 0 else f"induction-2l-seed{seed}"
    )
    (drop,) = detect_transitions(_series(path, "eval_loss"), kinds=("step",))
    assert 400 <= drop.step <= 600, drop
    assert drop.before > 3.5 and drop.after < 1.0  # plateau near ln 64, then the induction solution


JUMP_WINDOW = 200  # steps: grokking's jump takes 200-400 steps (docs/zoo.md), memorisation ~70


def _jump_window(steps: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """The ``JUMP_WINDOW``-step window (start, rise) over which ``values`` rise most, on a 10-step grid.

    A fixed window in linear t, not the largest rise between checkpoints: the schedule is 5x denser
    before step 300, where a rise per step is large but brief.
    """
    grid = np.arange(steps[0], steps[-1] - JUMP_WINDOW + 1, 10.0)
    rise = np.interp(grid + JUMP_WINDOW, steps, values) - np.interp(grid, steps, values)
    i = int(np.argmax(rise))
    return float(grid[i]), float(rise[i])


@pytest.mark.parametrize("seed", ZOO_SEEDS["grokking-p59"])
def test_grokking_test_accuracy_jumps_after_train_accuracy_reaches_one(
    trained_zoo_seeds: dict[tuple[str, int], Path], seed: int
) -> None:
    path = trained_zoo_seeds[("grokking-p59", seed)]
    manifest = read_manifest(path)
    assert manifest.seed == seed
    history = {int(h["step"]): h for h in manifest.history}  # a row for every step
    memorised = min(s for s, h in history.items() if h["train_acc"] >= 1.0)
    steps = np.array(manifest.steps, dtype=float)
    test_acc = np.array([history[int(s)]["test_acc"] for s in steps])
    # Not a sigmoid in ln t: test accuracy creeps up for a thousand steps before it jumps (seed 2 creeps
    # from 0.1 to 0.5, then jumps to 0.93 within 300 steps), so the jump is located in linear t.
    start, rise = _jump_window(steps, test_acc)
    assert history[memorised]["test_acc"] < 0.5  # memorised, not generalised
    assert rise > 0.25 and memorised < start, (memorised, start, rise)
    assert test_acc[-1] > 0.95


def test_induction_seeds_collapse_onto_one_curve(trained_zoo_seeds: dict[tuple[str, int], Path]) -> None:
    seeds = ZOO_SEEDS["induction-2l"]
    tables = {s: _series(trained_zoo_seeds[("induction-2l", s)], "eval_loss") for s in seeds}
    (report,) = ensemble_report(tables, "loss.loss")
    assert report.n_detected == len(seeds)
    assert 400 <= report.step_min and report.step_max <= 600  # type: ignore[operator]
    # One shape: normalised and centred, the seeds agree to a few percent of the drop.
    assert report.collapse_quality is not None and report.collapse_quality < 0.05
    assert report.uncollapsed_quality is not None
    assert report.collapse_quality < report.uncollapsed_quality
