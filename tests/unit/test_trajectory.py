"""Training dynamics (docs/measures.md, "Training dynamics"): the trajectory's mechanics against exact
synthetic paths, and the principal-plane PCA against a direct decomposition and a planar path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phasescope.measures.trajectory import HEAD_MATRICES, matrix_of, motion, trajectory_table
from phasescope.measures.trajectory_pca import (
    gram_matrix,
    plane_point,
    trajectory_pca,
    trajectory_pca_table,
)
from tests.helpers import tiny_model

Params = dict[str, torch.Tensor]


def _params(seed: int = 0) -> Params:
    model = tiny_model(seed=seed)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _direction(like: Params, seed: int) -> Params:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in like.items()}


def _norm(params: Params, names: list[str] | None = None) -> float:
    return math.sqrt(sum(float((params[n] ** 2).sum()) for n in (names or params)))


def _line(theta0: Params, v: Params, t: float) -> Params:
    return {n: theta0[n] + t * v[n] for n in theta0}


def _value(table: pd.DataFrame, quantity: str, **where: object) -> np.ndarray:
    rows = table[table["quantity"] == quantity]
    for column, value in where.items():
        rows = rows[rows[column] == value] if value is not None else rows[rows[column].isna()]
    return rows["value"].to_numpy(float)


# --- the mechanics of a path ----------------------------------------------------------------------


def test_a_straight_line_at_constant_speed_has_cosine_one_and_constant_velocity_with_uneven_steps() -> None:
    theta0, v = _params(), _direction(_params(), 1)
    steps = [0, 3, 10, 30, 31]  # uneven Δt: 3, 7, 20, 1
    path = {s: _line(theta0, v, s) for s in steps}
    speed = _norm(v)
    tables = []
    for i, s in enumerate(steps):
        near = {
            "prev": (steps[i - 1], path[steps[i - 1]]) if i >= 1 else None,
            "prevprev": (steps[i - 2], path[steps[i - 2]]) if i >= 2 else None,
        }
        tables.append(trajectory_table(path[s], s, init=(0, theta0), **near))
    table = pd.concat(tables)
    for s in steps:
        at = table[table["checkpoint"] == s]
        velocity = _value(at, "total_velocity")[0]
        cosine = _value(at, "total_update_cosine")[0]
        # Exact: ‖θ_t − θ_0‖ = t‖v‖, relative to ‖θ_0‖.
        assert _value(at, "total_distance_from_init")[0] == pytest.approx(s * speed, rel=1e-12)
        assert _value(at, "total_relative_distance_from_init")[0] == pytest.approx(
            s * speed / _norm(theta0), rel=1e-12
        )
        if s == 0:
            assert math.isnan(velocity) and math.isnan(cosine)
            continue
        assert velocity == pytest.approx(speed, rel=1e-12)
        assert _value(at, "total_kinetic_energy")[0] == pytest.approx(0.5 * speed**2, rel=1e-12)
        # Every matrix and head moves at its own constant speed, in a straight line.
        w_q = _value(at, "velocity", layer=1, matrix="W_Q")[0]
        assert w_q == pytest.approx(_norm(v, ["blocks.1.attn.W_Q"]), rel=1e-12)
        if s == 3:
            assert math.isnan(cosine) and np.isnan(_value(at, "head_update_cosine")).all()
        else:
            assert cosine == pytest.approx(1.0, abs=1e-12)
            assert _value(at, "update_cosine") == pytest.approx(1.0, abs=1e-12)
            assert _value(at, "head_update_cosine") == pytest.approx(1.0, abs=1e-12)


def test_reversing_the_path_gives_cosine_minus_one_and_distances_are_exact_per_matrix() -> None:
    theta0, v = _params(), _direction(_params(), 2)
    out, back = _line(theta0, v, 2.0), _line(theta0, v, 1.0)
    table = trajectory_table(back, 3, prev=(2, out), prevprev=(0, theta0), init=(0, theta0))
    assert _value(table, "total_update_cosine")[0] == pytest.approx(-1.0, abs=1e-12)
    w_e = "embed.W_E"
    assert _value(table, "distance_from_init", layer=None, matrix="W_E")[0] == pytest.approx(
        _norm(v, [w_e]), rel=1e-12
    )


def test_head_slices_sum_to_the_matrices() -> None:
    """‖ΔW_Q‖² = Σ_h ‖ΔW_Q[h]‖², and a head's kinetic energy sums its slices of Q, K, V, O."""
    theta0, v = _params(), _direction(_params(), 3)
    current = {
        n: p + 0.1 * v[n] * (1 + torch.arange(p.numel()).reshape(p.shape) % 3) for n, p in theta0.items()
    }
    w_q = "blocks.0.attn.W_Q"
    heads = motion(current[w_q], theta0[w_q], None, theta0[w_q], keep=1)
    whole = motion(current[w_q], theta0[w_q], None, theta0[w_q])
    assert heads.step2.shape == (2,)
    assert float(heads.step2.sum()) == pytest.approx(float(whole.step2), rel=1e-13)
    assert float(heads.dist2.sum()) == pytest.approx(float(whole.dist2), rel=1e-13)
    table = trajectory_table(current, 1, prev=(0, theta0), init=(0, theta0))
    for layer in (0, 1):
        per_head = _value(table, "head_kinetic_energy", layer=layer).sum()
        per_matrix = sum(_value(table, "kinetic_energy", layer=layer, matrix=m)[0] for m in HEAD_MATRICES)
        assert per_head == pytest.approx(per_matrix, rel=1e-12)
    # The whole model includes every parameter (biases too), so it is at least the matrices' sum.
    everything = _value(table, "total_kinetic_energy")[0]
    assert everything >= _value(table, "kinetic_energy").sum() * (1 - 1e-12)
    assert everything == pytest.approx(
        0.5 * sum(float(((current[n] - theta0[n]) ** 2).sum()) for n in theta0)
    )


def test_names_and_refusals() -> None:
    assert matrix_of("blocks.3.mlp.W_out") == (3, "W_out") and matrix_of("pos_embed.W_pos") == (None, "W_pos")
    assert matrix_of("blocks.0.ln1.w") is None
    theta = _params()
    with pytest.raises(ValueError, match="not before"):
        trajectory_table(theta, 5, prev=(5, theta))
    with pytest.raises(ValueError, match="has no parameter"):
        trajectory_table(theta, 5, prev=(1, {}))


# --- the principal plane ---------------------------------------------------------------------------


def _planar(steps: list[int], seed: int = 0) -> tuple[Params, dict[int, Params]]:
    """θ_k = θ_0 + a_k u + b_k w with (a_k, b_k) off one line: a trajectory in a 2-plane."""
    theta0 = _params(seed)
    u, w = _direction(theta0, 10), _direction(theta0, 11)
    rng = np.random.default_rng(seed)
    coeffs = rng.normal(size=(len(steps), 2)) * 0.05
    path = {
        s: {n: theta0[n] + a * u[n] + b * w[n] for n in theta0}
        for s, (a, b) in zip(steps, coeffs, strict=True)
    }
    return theta0, path


def _reader(steps: list[int], path: dict[int, Params]):  # noqa: ANN202
    return lambda name: torch.stack([path[s][name] for s in steps])


def test_pca_of_a_planar_trajectory_recovers_the_plane_exactly() -> None:
    steps = [0, 5, 10, 20, 40, 80]
    theta0, path = _planar(steps)
    names = list(theta0)
    pca = trajectory_pca(_reader(steps, path), names)
    assert float(pca.explained.sum()) == pytest.approx(1.0, abs=1e-12)
    assert (pca.explained > 0).all() and float(pca.explained[0]) >= float(pca.explained[1])
    d1, d2 = pca.directions
    assert _norm(d1) == pytest.approx(1.0, rel=1e-12) and _norm(d2) == pytest.approx(1.0, rel=1e-12)
    assert abs(sum(float((d1[n] * d2[n]).sum()) for n in names)) < 1e-12
    for k, s in enumerate(steps):
        a, b = (float(c) for c in pca.coordinates[k])
        back = plane_point(pca, a, b)
        assert max(float((back[n] - path[s][n]).abs().max()) for n in names) < 1e-12


def test_the_gram_accumulation_tensor_by_tensor_equals_a_direct_pca() -> None:
    steps = [0, 1, 2, 3, 4]
    theta0 = _params()
    path = {
        s: {
            n: p + torch.randn(p.shape, generator=torch.Generator().manual_seed(s), dtype=p.dtype) * 0.1
            for n, p in theta0.items()
        }
        for s in steps
    }
    names = list(theta0)
    read = _reader(steps, path)
    stacked = torch.cat([read(n).reshape(len(steps), -1) for n in names], dim=1)  # [K, D]
    centred = stacked - stacked.mean(dim=0)
    assert torch.allclose(gram_matrix(read, names), centred @ centred.T, rtol=1e-12, atol=1e-12)
    _, sigma, vh = torch.linalg.svd(centred, full_matrices=False)
    pca = trajectory_pca(read, names)
    assert torch.allclose(pca.explained, sigma[:2] ** 2 / (sigma**2).sum(), rtol=1e-10)
    for j in range(2):
        direct = centred @ vh[j]  # coordinates on the j-th right singular vector
        ours = pca.coordinates[:, j]
        assert torch.allclose(ours.abs(), direct.abs(), rtol=1e-9, atol=1e-12)
        flat = torch.cat([pca.directions[j][n].reshape(-1) for n in names])
        assert abs(float(flat @ vh[j])) == pytest.approx(1.0, abs=1e-10)


def test_on_a_planar_trajectory_each_projection_has_the_checkpoint_s_own_loss() -> None:
    """A real tiny HookedTransformer (float64): the loss at each projection is the checkpoint's."""
    from phasescope.analysis.inputs import repeated_random_tokens

    steps = [0, 10, 20, 30]
    _, path = _planar(steps, seed=1)
    model = tiny_model(seed=1)
    batch = repeated_random_tokens(3, 4, 12, 0)
    table = trajectory_pca_table(model, batch, steps, _reader(steps, path), n_points=3)
    own = table[table["quantity"] == "pca_checkpoint_loss"].set_index("checkpoint")["value"]
    projected = table[table["quantity"] == "pca_path_loss"].set_index("checkpoint")["value"]
    assert list(own.index) == steps and own.nunique() == len(steps)  # different points, different losses
    np.testing.assert_allclose(projected.loc[steps], own.loc[steps], rtol=1e-10)
    surface = table[table["quantity"] == "pca_loss"]
    assert len(surface) == 9 and set(surface["checkpoint"]) == {30}
    # The grid covers every checkpoint's projection.
    coords = table[table["quantity"] == "pca_coordinate"].pivot(
        index="checkpoint", columns="index", values="value"
    )
    assert surface["x"].min() < coords[0].min() and surface["x"].max() > coords[0].max()
    assert surface["y"].min() < coords[1].min() and surface["y"].max() > coords[1].max()
    ratio = _value(table, "pca_explained_variance_ratio")
    assert ratio.sum() == pytest.approx(1.0, abs=1e-9)


def test_a_straight_trajectory_has_one_component() -> None:
    theta0, v = _params(), _direction(_params(), 4)
    steps = [0, 1, 2, 5]
    path = {s: _line(theta0, v, s) for s in steps}
    pca = trajectory_pca(_reader(steps, path), list(theta0))
    assert float(pca.explained[0]) == pytest.approx(1.0, abs=1e-12) and float(pca.explained[1]) == 0.0
    assert _norm(pca.directions[1]) == 0.0
    # Coordinates along d₁ are the steps' positions on the line, centred, increasing.
    first = pca.coordinates[:, 0].numpy()
    np.testing.assert_allclose(np.diff(first), np.diff(steps) * _norm(v), rtol=1e-10)


def test_run_local_on_a_tiny_series_emits_every_declared_quantity(isolated_data_dir: Path) -> None:
    """The measures end to end in one process: the loop's kept neighbours equal a direct computation."""
    from phasescope.analysis.run import run_local
    from phasescope.measures.registry import get_measure
    from phasescope.models.loading import load_model
    from phasescope.schemas import InputSpec, MeasureParams
    from tests.helpers import tiny_series

    path = isolated_data_dir / "models" / "tiny"
    steps = tiny_series(path, steps=(0, 10, 30, 40))
    params = MeasureParams(heavy_prompts=2, landscape_points=3)
    table, _ = run_local(
        str(path), steps, ["trajectory", "trajectory_pca"], InputSpec(n_prompts=4, seq_len=16), params
    )
    for name in ("trajectory", "trajectory_pca"):
        declared = {q.name for q in get_measure(name).quantities}
        assert set(table.loc[table["measure"] == name, "quantity"]) == declared
    # tiny_series drifts along one line, one step of the index at a time: cosine 1, Δθ constant.
    totals = table[table["quantity"] == "total_velocity"].set_index("checkpoint")["value"]
    theta = {
        s: {n: p.detach() for n, p in load_model(str(path), s).model.named_parameters()} for s in (0, 10)
    }
    step_norm = _norm({n: (theta[10][n] - theta[0][n]).double() for n in theta[0]})
    assert totals.loc[10] == pytest.approx(step_norm / 10, rel=1e-6)
    assert totals.loc[30] == pytest.approx(step_norm / 20, rel=1e-6)  # same Δθ over Δt = 20
    cosines = table[table["quantity"] == "total_update_cosine"].set_index("checkpoint")["value"]
    assert cosines.loc[[30, 40]].to_numpy() == pytest.approx(1.0, abs=1e-5)
    ratio = table[table["quantity"] == "pca_explained_variance_ratio"]["value"]
    assert ratio.iloc[0] == pytest.approx(1.0, abs=1e-4)  # a straight path: one component
