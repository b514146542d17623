"""The Dynamics tab's figures, built from synthetic tidy tables that follow the issue-15 contract
(common names and dims of ``trajectory``, ``trajectory_pca``, ``hessian_density``, ``head_llc``):
the right traces with the right numbers, the cursor where the slider is, and a clear note when a
measure is missing. No browser, no server."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from frontend import figures_dynamics as D
from frontend.plotting import step_axis
from frontend.tabs_dynamics import layer_rows, missing_note, render_dynamics, tab_measures
from phasescope.measures import Measure, Quantity, measures, registered
from phasescope.measures.tables import concat_tables, tidy

STEPS = [0, 100, 200, 400, 500, 600, 800, 1000]
N_LAYERS, N_HEADS = 2, 4
LAYER_MATRICES = ["W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"]


def _trajectory(steps: list[int] = STEPS) -> pd.DataFrame:
    """Per-matrix, per-head and whole-model rows; velocities NaN at the first step (no previous one),
    update cosines NaN at the first two, a burst of motion at step 500."""
    parts = []
    rng = np.random.default_rng(0)
    for i, s in enumerate(steps):
        burst = 1.0 + 9.0 * (s == 500)
        speed = np.where(i == 0, np.nan, burst * (1 + rng.random((N_LAYERS, 6))))
        cosine = np.where(i < 2, np.nan, rng.uniform(-1, 1, (N_LAYERS, 6)))
        for q, values in (
            ("velocity", speed),
            ("kinetic_energy", 0.5 * speed**2),
            ("distance_from_init", np.full((N_LAYERS, 6), 0.1 * s)),
            ("update_cosine", cosine),
        ):
            parts.append(
                tidy(
                    "trajectory",
                    q,
                    values,
                    ("layer", "matrix"),
                    checkpoint=s,
                    coords={"matrix": LAYER_MATRICES},
                )
            )
            parts.append(
                tidy(
                    "trajectory",
                    q,
                    values[0, :3],
                    ("matrix",),
                    checkpoint=s,
                    coords={"matrix": ["W_E", "W_pos", "W_U"]},
                )
            )
            parts.append(
                tidy("trajectory", f"total_{q}", float(np.nansum(values)) if i else np.nan, checkpoint=s)
            )
        heads = np.where(
            i == 0, np.nan, burst * np.arange(N_LAYERS * N_HEADS, dtype=float).reshape(N_LAYERS, N_HEADS)
        )
        parts.append(tidy("trajectory", "head_kinetic_energy", heads, ("layer", "head"), checkpoint=s))
    return concat_tables(parts)


def _loss(steps: list[int] = STEPS) -> pd.DataFrame:
    return concat_tables([tidy("loss", "loss", 4.1 if s < 450 else 0.7, checkpoint=s) for s in steps])


def test_matrix_lines_have_one_line_per_matrix_and_the_whole_model() -> None:
    table = _trajectory()
    fig = D.matrix_lines_figure(
        table[table["quantity"].isin(["velocity", "total_velocity"])],
        "velocity",
        title="Velocity",
        n_layers=N_LAYERS,
        cursor=500,
    )
    names = [t.name for t in fig.data]
    assert len(names) == N_LAYERS * 6 + 3 + 1
    assert names[0] == "L0 W_Q" and names[-4:] == ["W_E", "W_pos", "W_U", "whole model"]
    total = table[table["quantity"] == "total_velocity"].sort_values("checkpoint")
    whole = fig.data[-1]
    np.testing.assert_allclose(whole.y, total["value"], equal_nan=True)
    np.testing.assert_allclose(
        whole.x, step_axis(total["checkpoint"], "log")
    )  # log step axis, 0 at half of 100
    one = table[(table["quantity"] == "velocity") & (table["matrix"] == "W_V") & (table["layer"] == 1)]
    np.testing.assert_allclose(
        fig.data[names.index("L1 W_V")].y, one.sort_values("checkpoint")["value"], equal_nan=True
    )
    cursors = [s for s in fig.layout.shapes if s.name == "cursor"]
    assert len(cursors) == 1 and cursors[0].x0 == 500  # moved in the browser by assets/slider.js
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "training step"
    # The layer filter keeps that layer's matrices and the whole model, not the embeddings.
    meta = {"n_layers": N_LAYERS, "n_heads": N_HEADS}
    rows, note = layer_rows(table, meta, {"layer": 1, "head": "all"}, per=6, keep_unlayered=True)
    assert set(rows["layer"].dropna()) == {1} and rows["layer"].isna().sum() == 0 and note == ""
    rows, _ = layer_rows(
        table[table["quantity"].isin(["velocity", "total_velocity"])],
        meta,
        {"layer": "all", "head": "all"},
        per=6,
        keep_unlayered=True,
    )
    assert len(D.matrix_lines_figure(rows, "velocity", title="v", n_layers=2).data) == 16


def test_head_kinetic_energy_heatmap_is_the_phase_diagram() -> None:
    heads = _trajectory()
    heads = heads[heads["quantity"] == "head_kinetic_energy"]
    fig = D.heads_heatmap_figure(
        heads, title="Kinetic energy per head", colorbar="kinetic energy", cursor=400
    )
    (heatmap,) = [t for t in fig.data if isinstance(t, go.Heatmap)]
    z = np.asarray(heatmap.z, dtype=float)
    assert z.shape == (N_LAYERS * N_HEADS, len(STEPS)) and list(heatmap.y)[:2] == ["L0H0", "L0H1"]
    assert np.isnan(z[:, 0]).all()  # step 0 has no velocity
    at_500 = STEPS.index(500)
    assert np.nanargmax(z[-1]) == at_500 and z[-1, at_500] == pytest.approx(10 * 7)  # the burst, L1H3
    cursors = [s for s in fig.layout.shapes if s.name == "cursor"]
    assert cursors and cursors[0].x0 == 400
    # A long colour-bar title puts its unit on a second line (else it runs off the figure).
    long = D.heads_heatmap_figure(
        heads, title="t", colorbar="kinetic energy ½‖Δθ_h/Δt‖² (weight units²/step²)"
    )
    assert long.data[0].colorbar.title.text == "kinetic energy ½‖Δθ_h/Δt‖²<br>(weight units²/step²)"
    assert D.wrap_title("loss (nats)") == "loss (nats)"
    assert D.wrap_title("KS distance from the Gaussian of the same mean and variance") == (
        "KS distance from the Gaussian<br>of the same mean and variance"
    )
    # Standard errors (head_llc's chain spread) go into the hover.
    llc = heads.assign(quantity="head_llc", se=0.25)
    fig = D.heads_heatmap_figure(llc, title="LLC", colorbar="LLC")
    assert "±" in fig.data[0].hovertemplate
    assert np.asarray(fig.data[0].customdata)[0, 1, 1] == pytest.approx(0.25)
    assert (
        "no data"
        in D.heads_heatmap_figure(heads.iloc[0:0], title="t", colorbar="c").layout.annotations[0].text
    )


def test_phase_space_is_loss_against_total_kinetic_energy() -> None:
    kinetic = _trajectory()
    kinetic = kinetic[kinetic["quantity"] == "total_kinetic_energy"]
    fig = D.phase_space_figure(_loss(), kinetic, cursor=500)
    path, current = fig.data
    valid = kinetic.dropna(subset=["value"]).sort_values("checkpoint")  # step 0 has no kinetic energy
    np.testing.assert_allclose(path.x, valid["value"])
    assert list(path.y) == [4.1 if s < 450 else 0.7 for s in valid["checkpoint"]]
    assert list(path.customdata) == valid["checkpoint"].tolist()
    # Coloured by log step, the colour bar labelled in steps.
    np.testing.assert_allclose(path.marker.color, np.log10(valid["checkpoint"].to_numpy(dtype=float)))
    assert "1000" in path.marker.colorbar.ticktext
    at = float(valid.loc[valid["checkpoint"] == 500, "value"].iloc[0])
    assert list(current.x) == [at] and list(current.y) == [0.7] and current.name == "step 500"
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.title.text == "loss (nats)"
    # At step 0 there is no kinetic energy: nothing circled, and the title says why.
    fig0 = D.phase_space_figure(_loss(), kinetic, cursor=0)
    assert len(fig0.data) == 1 and "needs a previous checkpoint" in fig0.layout.title.text
    empty = D.phase_space_figure(_loss().iloc[0:0], kinetic)
    assert "no checkpoint has both" in empty.layout.annotations[0].text


def _pca(steps: list[int] = STEPS) -> pd.DataFrame:
    """A path on the plane, the loss a bowl on a 5×4 grid, stored at the last checkpoint."""
    parts = []
    for i, s in enumerate(steps):
        parts.append(
            tidy(
                "trajectory_pca",
                "pca_coordinate",
                np.array([3.0 - i, 0.5 * i * (i - 7)]),
                ("index",),
                checkpoint=s,
            )
        )
        parts.append(tidy("trajectory_pca", "pca_path_loss", 4.0 - 0.4 * i, checkpoint=s))
        parts.append(tidy("trajectory_pca", "pca_checkpoint_loss", 4.0 - 0.4 * i + 0.01, checkpoint=s))
    xs, ys = np.linspace(-6, 4, 5), np.linspace(-7, 1, 4)
    bowl = (xs[:, None] ** 2 + ys[None, :] ** 2) / 10
    parts.append(
        tidy("trajectory_pca", "pca_loss", bowl, ("x", "y"), checkpoint=steps[-1], coords={"x": xs, "y": ys})
    )
    parts.append(
        tidy(
            "trajectory_pca",
            "pca_explained_variance_ratio",
            np.array([0.7, 0.2]),
            ("index",),
            checkpoint=steps[-1],
        )
    )
    return concat_tables(parts)


def test_pca_plane_has_the_loss_contour_and_the_path_of_the_checkpoints() -> None:
    table = _pca()
    q = table.groupby("quantity")
    fig = D.pca_plane_figure(
        q.get_group("pca_loss"),
        q.get_group("pca_coordinate"),
        q.get_group("pca_explained_variance_ratio"),
        cursor=200,
    )
    contour, path, current = fig.data
    assert isinstance(contour, go.Contour)
    bowl = q.get_group("pca_loss")
    assert np.asarray(contour.z).shape == (4, 5)  # y rows × x columns
    i, j = 2, 3
    expected = bowl[(bowl["x"] == contour.x[j]) & (bowl["y"] == contour.y[i])]["value"].item()
    assert np.asarray(contour.z)[i, j] == pytest.approx(expected)
    coords = q.get_group("pca_coordinate")
    for axis, index in (("x", 0), ("y", 1)):
        want = coords[coords["index"] == index].sort_values("checkpoint")["value"].to_numpy()
        np.testing.assert_allclose(getattr(path, axis), want)
    assert list(path.customdata) == STEPS and list(path.text)[0] == "0" and "1000" in path.text
    assert list(current.x) == [1.0] and current.name == "step 200"  # 3 − 2
    assert "PC1 70.0%" in fig.layout.title.text and "PC2 20.0%" in fig.layout.title.text
    # Without the grid the path is still drawn; without anything the figure says so.
    (only,) = D.pca_plane_figure(bowl.iloc[0:0], coords, bowl.iloc[0:0]).data
    assert only.name == "checkpoints" and "of the variance" not in fig.layout.title.text[:0]
    assert (
        "no coordinates"
        in D.pca_plane_figure(bowl.iloc[0:0], coords.iloc[0:0], bowl.iloc[0:0]).layout.annotations[0].text
    )


def _density(step: int = 500) -> pd.DataFrame:
    grid = np.linspace(-1, 10, 111)
    density = np.exp(-0.5 * ((grid - 0.0) / 0.1) ** 2) + 0.01
    parts = [tidy("hessian_density", "density", density, ("x",), checkpoint=step, coords={"x": grid})]
    for q, v in (("mass_near_zero", 0.8), ("negative_mass", 0.05), ("lambda_min", -0.9), ("lambda_max", 9.5)):
        parts.append(tidy("hessian_density", q, v, checkpoint=step))
    trace = tidy("hessian_density", "trace", 12.5, checkpoint=step).assign(se=0.75)
    return concat_tables([*parts, trace])


def test_hessian_density_at_the_checkpoint_with_its_numbers() -> None:
    rows = _density()
    fig = D.hessian_density_figure(rows, 500, "log")
    (line,) = fig.data
    density = rows[rows["quantity"] == "density"]
    np.testing.assert_allclose(line.x, density["x"]) and np.testing.assert_allclose(line.y, density["value"])
    assert "step 500" in fig.layout.title.text
    title = fig.layout.annotations[0].text  # the numbers, in a box at the top right
    for words in (
        "λ_min -0.9",
        "λ_max 9.5",
        "trace 12.5 ± 0.75",
        "mass near 0 80.0%",
        "negative 5.0%",
    ):
        assert words in title, (words, title)
    assert (
        fig.layout.yaxis.type == "log" and D.hessian_density_figure(rows, 500).layout.yaxis.type == "linear"
    )
    assert [s.x0 for s in fig.layout.shapes] == [0.0]  # λ = 0 marked, and no cursor: this is one checkpoint
    assert (
        "no Hessian density at step 7"
        in D.hessian_density_figure(rows.iloc[0:0], 7).layout.annotations[0].text
    )


def test_step_lines_draw_error_bars_and_skip_empty_lines() -> None:
    fig = D.step_lines_figure(
        [
            {"name": "a", "steps": [100, 0, 200], "values": [2.0, 1.0, 3.0], "se": [0.2, 0.1, 0.3]},
            {"name": "empty", "steps": [], "values": []},
        ],
        title="t",
        ytitle="y",
        xscale="linear",
        yscale="log",
    )
    (trace,) = fig.data
    assert list(trace.x) == [0, 100, 200] and list(trace.y) == [1.0, 2.0, 3.0]
    assert list(trace.error_y.array) == [0.1, 0.2, 0.3] and fig.layout.yaxis.type == "log"
    assert "no data" in D.step_lines_figure([], title="t", ytitle="y").layout.annotations[0].text


def _meta(measures: list[str]) -> dict:
    return {
        "measures": measures,
        "n_layers": N_LAYERS,
        "n_heads": N_HEADS,
        "finished": True,
        "findings": None,
    }


# A measure of the test's own on the Dynamics tab: the tab's notes come from the registry (Measure.tab).
WOBBLE = Measure(
    name="wobble",
    kind="weights",
    compute="tests.unit.test_figures_dynamics:_trajectory",
    summary="a test's measure on the Dynamics tab",
    cost=lambda s, p: 1.0,
    quantities=(Quantity("wobble", "wobble", "", ()),),
    tab="dynamics",
)


def test_the_tab_says_not_measured_when_the_analysis_ran_none_of_its_measures() -> None:
    meta = _meta(["loss", "heads"])
    state = {"layer": "all", "head": "all", "xscale": "log", "yscale": "linear"}
    with registered(WOBBLE):
        assert tab_measures(meta, "dynamics") == []
        (note,) = render_dynamics("a" * 16, meta, state, 0)
    assert note.id == "dynamics-empty"
    assert "Training dynamics not measured in this analysis (it ran: loss, heads)" in note.children
    for name in [m.name for m in measures(tab="dynamics")] + ["wobble"]:
        assert f"“{name}”" in note.children, name


def test_a_partial_analysis_names_the_views_it_lacks() -> None:
    with registered(WOBBLE):
        others = [m.name for m in measures(tab="dynamics") if m.name != "wobble"]
        meta = _meta(["loss", "wobble"])
        assert tab_measures(meta, "dynamics") == ["wobble"]
        said = missing_note(meta, "dynamics").children
        assert "“wobble”" not in said and all(f"“{name}”" in said for name in others)
        if "trajectory_pca" in others:
            assert "the loss on the trajectory's PCA plane (“trajectory_pca”)" in said
        assert missing_note(_meta(["wobble", *others]), "dynamics") is None
        lacking = missing_note(_meta(others), "dynamics").children
        assert "wobble (“wobble”)" in lacking  # a measure with no words of its own is named by its name


def test_many_layers_narrow_to_the_last_one_with_a_note() -> None:
    rows = tidy(
        "trajectory", "velocity", np.ones((12, 6)), ("layer", "matrix"), coords={"matrix": LAYER_MATRICES}
    )
    meta = {"n_layers": 12, "n_heads": 12}
    kept, note = layer_rows(rows, meta, {"layer": "all", "head": "all"}, per=6)
    assert set(kept["layer"]) == {11} and "showing layer 11" in note
    kept, note = layer_rows(rows, meta, {"layer": 3, "head": "all"}, per=6)
    assert set(kept["layer"]) == {3} and note == ""
    assert math.isclose(kept["value"].sum(), 6)
