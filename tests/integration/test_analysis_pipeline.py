"""The worker/CLI path on a real (tiny) TransformerLens series: hooks, measures, tables, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from phasescope.analysis.run import capture_attention, measure_checkpoint, run_local
from phasescope.models.loading import ModelCache, load_model
from phasescope.schemas import InputSpec
from tests.helpers import NULL_SERIES, tiny_series

MEASURES = ["entropy", "heads", "loss", "spectra", "thermo"]


@pytest.fixture()
def series(isolated_data_dir: Path) -> str:
    path = isolated_data_dir / "models" / "tiny"
    tiny_series(path, steps=(0, 10, 20), **NULL_SERIES)  # the numbers below rely on a null model
    return str(path)


def test_scores_are_true_pre_softmax(series: str) -> None:
    loaded = load_model(series, 10)
    tokens = torch.randint(0, 40, (3, 24), generator=torch.Generator().manual_seed(1))
    _, scores = capture_attention(loaded.model, tokens)
    _, cache = loaded.model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    patterns = torch.stack([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(2)])
    assert torch.allclose(torch.softmax(scores, dim=-1), patterns, atol=1e-6)
    finite = torch.isfinite(scores)
    # Causal: exactly the upper triangle is masked, and the scores are not the pattern.
    assert finite.sum().item() == 2 * 3 * 4 * (24 * 25 // 2)
    assert not torch.allclose(scores.masked_fill(~finite, 0), patterns, atol=1e-3)


def test_measure_checkpoint_emits_every_measure(series: str) -> None:
    loaded = load_model(series, 20)
    table = measure_checkpoint(loaded, MEASURES, InputSpec(n_prompts=4, seed=3))
    assert set(table["measure"]) == set(MEASURES)
    assert (table["checkpoint"] == 20).all()
    # NaN is allowed only where a value is undefined by design (a censored β*).
    nan_rows = table[table["value"].isna()]
    assert set(nan_rows["quantity"]) <= {"beta_star", "beta_star_bound"}
    loss = table[(table["measure"] == "loss") & (table["quantity"] == "loss")]["value"].item()
    # A random 40-token model is close to uniform: loss near ln 40.
    assert abs(loss - torch.log(torch.tensor(40.0)).item()) < 1.0


def test_sweep_reuses_architecture_and_matches_fresh_loads(series: str) -> None:
    inputs = InputSpec(n_prompts=4)
    swept, timings = run_local(series, [0, 10, 20], ["entropy", "loss"], inputs)
    assert sorted(timings) == [0, 10, 20]
    fresh = measure_checkpoint(load_model(series, 10), ["entropy", "loss"], inputs)
    pd.testing.assert_frame_equal(
        swept[swept["checkpoint"] == 10].reset_index(drop=True), fresh.reset_index(drop=True)
    )
    cache = ModelCache()
    first = cache.get(series, 0)
    second = cache.get(series, 10)
    assert first.model is second.model  # weights swapped in place, architecture kept


def _cli(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PHASESCOPE_DATA_DIR": str(env_dir)}
    return subprocess.run(
        [sys.executable, "-m", "phasescope", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_analyze_writes_tables_and_summary(series: str, isolated_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli(
        "analyze",
        series,
        "--measure",
        "loss,heads",
        "--checkpoints",
        "0,20",
        "--out",
        str(out),
        "--quiet",
        env_dir=isolated_data_dir,
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table["checkpoint"].unique()) == [0, 20]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoints"] == [0, 20]
    assert set(summary["digest"]) == {"0", "20"}


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("analyze", "zoo:nope"), "unknown zoo series"),
        (("analyze", "/etc"), "outside the configured model roots"),
        (("analyze", "SERIES", "--checkpoints", "5"), "no checkpoint at step 5"),
        (("analyze", "SERIES", "--measure", "magic"), "measures"),
        (("models", "/tmp"), "outside the configured model roots"),
    ],
)
def test_cli_user_mistakes_are_one_line(
    args: tuple[str, ...], fragment: str, series: str, isolated_data_dir: Path
) -> None:
    result = _cli(*[series if a == "SERIES" else a for a in args], env_dir=isolated_data_dir)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_landscape_measures_through_the_pipeline(series: str) -> None:
    from phasescope.schemas import MeasureParams

    loaded = load_model(series, 20)
    other = load_model(series, 10)
    params = MeasureParams(
        heavy_prompts=3,
        landscape_points=5,
        landscape_dims=2,
        sharpness_k=2,
        hutchinson_samples=4,
        llc_chains=2,
        llc_draws=10,
        energy_bins=20,
    )
    table = measure_checkpoint(
        loaded,
        ["landscape", "sharpness", "llc", "energies", "loss"],
        InputSpec(n_prompts=6, seed=1),
        params,
        other=other,
    )
    assert set(table["measure"]) == {"landscape", "sharpness", "llc", "energies", "loss"}
    surface = table[table["quantity"] == "loss_surface"]
    assert len(surface) == 25
    # The grid centre is the checkpoint itself: its loss on the same (first 3) prompts.
    centre = surface[(surface["x"] == 0) & (surface["y"] == 0)]["value"].item()
    from phasescope.analysis.run import build_batch
    from phasescope.measures.landscape import batch_loss, model_params

    batch = build_batch(loaded, InputSpec(n_prompts=6, seed=1))
    first3 = type(batch)(batch.tokens[:3], batch.target_mask[:3])
    assert centre == pytest.approx(
        batch_loss(loaded.model, model_params(loaded.model), first3).item(), rel=1e-5
    )
    line = table[table["quantity"] == "loss_interpolation"]
    assert len(line) > 2 and line["x"].min() == 0 and line["x"].max() == 1
    eig = table[table["quantity"] == "hessian_eigenvalue"]
    assert len(eig) == 2 and eig["value"].is_monotonic_decreasing
    hist = table[table["quantity"] == "energy_hist"]
    # Every allowed (causal) score of every head falls in one bin.
    per_head = hist.groupby(["layer", "head"])["value"].sum()
    assert (per_head == 6 * 24 * 25 / 2).all()
