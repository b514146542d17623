"""Issue 15's measures on a local Hugging Face training run (a Trainer series of GPT-2 checkpoints).

The zoo tests check the physics; this checks that every new measure reads a real Hugging Face series
through the same paths a researcher's own run takes: the Trainer directory layout, the family
conversion, the neighbours' weights of a cross-checkpoint measure and the whole trajectory of a series
measure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phasescope.analysis.run import run_local
from phasescope.schemas import InputSpec, MeasureParams
from tests.helpers import hf_gpt2, save_hf_model

ISSUE_15 = [
    "trajectory",
    "trajectory_pca",
    "residual",
    "correlation",
    "meanfield",
    "hessian_density",
    "head_llc",
    "loss",
]


def test_every_issue_15_measure_runs_on_a_hugging_face_trainer_series(isolated_data_dir: Path) -> None:
    run = isolated_data_dir / "models" / "run"
    for step, seed in ((10, 1), (20, 2), (30, 3)):
        save_hf_model(hf_gpt2, run / f"checkpoint-{step}", seed=seed)
    params = MeasureParams(
        heavy_prompts=2,
        landscape_points=3,
        slq_steps=6,
        slq_probes=1,
        head_llc_chains=1,
        head_llc_draws=10,
    )
    table, _ = run_local(str(run), [10, 20, 30], ISSUE_15, InputSpec(n_prompts=4, seq_len=16), params)
    assert set(table["measure"]) == set(ISSUE_15)

    def rows(measure: str, quantity: str) -> object:
        return table[(table["measure"] == measure) & (table["quantity"] == quantity)]

    # Velocity needs a previous checkpoint: none at the first, finite and positive after it.
    velocity = rows("trajectory", "total_velocity").set_index("checkpoint")["value"]
    assert np.isnan(velocity.get(10, np.nan))
    assert (velocity.loc[[20, 30]] > 0).all()
    # Three checkpoints lie in a plane: its two components explain everything, and the loss at each
    # checkpoint's projection is the checkpoint's own loss (docs/measures.md, "Training dynamics").
    ratios = rows("trajectory_pca", "pca_explained_variance_ratio")["value"]
    assert ratios.sum() == pytest.approx(1.0, abs=1e-6)
    path = rows("trajectory_pca", "pca_path_loss").set_index("checkpoint")["value"].sort_index()
    own = rows("trajectory_pca", "pca_checkpoint_loss").set_index("checkpoint")["value"].sort_index()
    np.testing.assert_allclose(path.to_numpy(), own.to_numpy(), rtol=1e-4)
    # GPT-2 has MLPs: the mean-field check has a KS distance per layer and checkpoint.
    assert len(rows("meanfield", "preact_ks")) == 2 * 3
    assert rows("hessian_density", "trace")["value"].notna().all()
    # One restricted LLC per layer·head per checkpoint (2 layers × 4 heads).
    assert len(rows("head_llc", "head_llc")) == 8 * 3
