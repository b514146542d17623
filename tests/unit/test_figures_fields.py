"""The Fields tab's figures, built from synthetic tidy tables that follow the issue-15 contract
(names and dims of ``residual``, ``correlation``, ``meanfield``): the right traces with the right
numbers, and a clear note when a measure is missing. No browser, no server."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from frontend import figures_fields as G
from frontend.figures_dynamics import wrap_title
from frontend.plotting import LABELS
from frontend.tabs_dynamics import missing_note
from frontend.tabs_fields import PER_CHECKPOINT, render_fields
from phasescope.measures import Measure, Quantity, measures, registered
from phasescope.measures.tables import concat_tables, tidy

STEPS = [0, 100, 200, 400, 500, 600, 800, 1000]
N_LAYERS, N_POS = 2, 6


def _residual(steps: list[int] = STEPS) -> pd.DataFrame:
    parts = []
    for s in steps:
        pre = np.array([1.0, 2.0]) * (1 + s / 1000)
        post = pre * np.array([2.0, 1.5])
        for q, v in (
            ("resid_norm_pre", pre),
            ("resid_norm_post", post),
            ("resid_growth", post / pre),
            ("block_share", np.array([0.9, 0.6])),
            ("attn_share", np.array([0.5, 0.4])),
            ("mlp_share", np.array([0.6, 0.3])),
        ):
            parts.append(tidy("residual", q, v, ("layer",), checkpoint=s))
        by_position = np.outer(post, 1 + np.arange(N_POS) / 10)
        parts.append(
            tidy("residual", "resid_norm_position", by_position, ("layer", "position"), checkpoint=s)
        )
    return concat_tables(parts)


def test_residual_norm_through_depth_at_one_checkpoint() -> None:
    rows = _residual()
    at = rows[rows["checkpoint"] == 500]
    fig = G.residual_depth_figure(at, 500)
    before, after = fig.data
    assert list(before.x) == [0, 1] and before.name == "before the block" and after.name == "after the block"
    np.testing.assert_allclose(before.y, [1.5, 3.0])
    np.testing.assert_allclose(after.y, [3.0, 4.5])
    # The growth and the block's share are in the hover, per layer.
    np.testing.assert_allclose(np.asarray(after.customdata)[:, 0], [2.0, 1.5])
    assert "resid growth" in after.hovertemplate and "step 500" in fig.layout.title.text
    assert (
        "no residual norms at step 3" in G.residual_depth_figure(at.iloc[0:0], 3).layout.annotations[0].text
    )


def test_per_position_norm_heatmap() -> None:
    rows = _residual()
    at = rows[(rows["checkpoint"] == 1000) & (rows["quantity"] == "resid_norm_position")]
    fig = G.position_heatmap_figure(at, 1000)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (N_LAYERS, N_POS) and list(fig.data[0].y) == ["L0", "L1"]
    np.testing.assert_allclose(z[1], 2.0 * 2 * 1.5 * (1 + np.arange(N_POS) / 10))


def test_block_shares_per_layer_over_training() -> None:
    rows = _residual()
    shares = rows[rows["quantity"].isin(["block_share", "attn_share", "mlp_share"])]
    fig = G.layer_lines_figure(
        shares,
        ("block_share", "attn_share", "mlp_share"),
        measure="residual",
        title="shares",
        n_layers=N_LAYERS,
        cursor=400,
    )
    assert [t.name for t in fig.data] == [
        "L0 block share",
        "L1 block share",
        "L0 attn share",
        "L1 attn share",
        "L0 mlp share",
        "L1 mlp share",
    ]
    assert [t.line.dash for t in fig.data[::2]] == [None, "dash", "dot"]  # one dash per quantity
    assert fig.data[0].line.color == fig.data[2].line.color != fig.data[1].line.color  # one colour per layer
    assert list(fig.data[1].y) == [0.6] * len(STEPS)
    # The axis carries the first quantity's title (its unit on a second line when it is long).
    assert fig.layout.yaxis.title.text == wrap_title(LABELS.get("residual.block_share", "block_share"))
    assert [s.x0 for s in fig.layout.shapes if s.name == "cursor"] == [400]
    growth = G.layer_lines_figure(
        rows[rows["quantity"] == "resid_growth"], ("resid_growth",), measure="residual", title="g", n_layers=2
    )
    assert [t.name for t in growth.data] == ["L0", "L1"] and list(growth.data[0].y) == [2.0] * len(STEPS)


def test_residual_correlation_curves_per_layer() -> None:
    r = np.arange(8)
    c = np.stack([np.exp(-r / 2.0), np.exp(-r / 5.0)])  # ξ = 2 and 5
    rows = tidy("correlation", "residual_correlation", c, ("layer", "index"), checkpoint=500)
    fig = G.per_layer_figure(rows, x="index", title="C(r)", xtitle="r", ytitle="C", n_layers=2, yscale="log")
    assert [t.name for t in fig.data] == ["L0", "L1"] and list(fig.data[1].x) == list(r)
    # On the log axis each curve is a line of slope −1/ξ.
    slope = np.polyfit(fig.data[1].x, np.log(fig.data[1].y), 1)[0]
    assert slope == pytest.approx(-1 / 5.0) and fig.layout.yaxis.type == "log"
    assert (
        "no data"
        in G.per_layer_figure(rows.iloc[0:0], x="index", title="t", xtitle="", ytitle="", n_layers=2)
        .layout.annotations[0]
        .text
    )


def _meanfield(step: int = 500, seed: int = 0) -> pd.DataFrame:
    """Histograms as densities (area 1), from Gaussian samples in layer 0 and Laplace ones in layer 1."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(-5, 5, 41)
    centres = (edges[:-1] + edges[1:]) / 2
    parts = []
    for layer, sample in enumerate((rng.normal(0.5, 1.2, 20000), rng.laplace(0.0, 0.7, 20000))):
        density, _ = np.histogram(sample, bins=edges, density=True)
        parts.append(
            tidy(
                "meanfield",
                "preact_hist",
                density,
                ("index",),
                checkpoint=step,
                coords={"x": centres},
                fixed={"layer": layer},
            ).assign(x=centres)
        )
        for q, v in (
            ("preact_mean", sample.mean()),
            ("preact_std", sample.std()),
            ("preact_ks", 0.01 + 0.05 * layer),
        ):
            parts.append(tidy("meanfield", q, v, checkpoint=step, fixed={"layer": layer}))
    return concat_tables(parts)


def test_gaussian_overlay_has_the_histograms_area_whatever_its_normalisation() -> None:
    centres = np.linspace(-4.875, 4.875, 40)  # width 0.25
    for counts in (np.full(40, 3.0), np.full(40, 0.1)):
        x, y = G.gaussian_overlay(centres, counts, mean=0.3, std=0.8, n=4001)
        area = float(np.sum(counts)) * 0.25
        assert np.trapezoid(y, x) == pytest.approx(area, rel=1e-6)
        assert x[np.argmax(y)] == pytest.approx(0.3, abs=0.01)
        assert y.max() == pytest.approx(area / (0.8 * math.sqrt(2 * math.pi)), rel=1e-4)
    _, flat = G.gaussian_overlay(centres, np.ones(40), mean=0.0, std=0.0)
    assert np.isnan(flat).all()  # no spread: no curve, rather than a spike


def test_preactivation_histograms_with_the_mean_field_gaussian() -> None:
    rows = _meanfield()
    fig = G.preact_hist_figure(rows, 500, N_LAYERS, "log")
    names = [t.name for t in fig.data]
    assert names == [
        "L0 pre-activations (KS 0.010)",
        "L0 Gaussian, same mean and variance",
        "L1 pre-activations (KS 0.060)",
        "L1 Gaussian, same mean and variance",
    ]
    hist0 = rows[(rows["quantity"] == "preact_hist") & (rows["layer"] == 0)].sort_values("x")
    np.testing.assert_allclose(fig.data[0].y, hist0["value"]) and np.testing.assert_allclose(
        fig.data[0].x, hist0["x"]
    )
    assert fig.data[1].line.dash == "dash" and fig.data[0].line.color == fig.data[1].line.color

    # Gaussian samples: the curve follows the bars; Laplace ones: the curve misses their peak.
    def gap(layer: int) -> float:
        hist, curve = fig.data[2 * layer], fig.data[2 * layer + 1]
        return float(np.max(np.abs(np.interp(hist.x, curve.x, curve.y) - np.asarray(hist.y))))

    assert gap(0) < 0.03 < 0.15 < gap(1)
    assert fig.layout.yaxis.type == "log" and "step 500" in fig.layout.title.text
    assert (
        "no pre-activation histogram" in G.preact_hist_figure(rows.iloc[0:0], 5, 2).layout.annotations[0].text
    )


# A measure of the test's own on the Fields tab: the tab's notes come from the registry (Measure.tab).
FIZZ = Measure(
    name="fizz",
    kind="activation",
    compute="tests.unit.test_figures_fields:_residual",
    summary="a test's measure on the Fields tab",
    cost=lambda s, p: 1.0,
    quantities=(Quantity("fizz", "fizz", "", ("layer",)),),
    tab="fields",
)


def test_the_fields_tab_says_what_is_not_measured() -> None:
    meta = {"measures": ["loss", "entropy"], "n_layers": 2, "n_heads": 4, "finished": True, "findings": None}
    state = {"layer": "all", "head": "all", "xscale": "log", "yscale": "linear"}
    with registered(FIZZ):
        (note,) = render_fields("b" * 16, meta, state, 0)
        names = [m.name for m in measures(tab="fields")]
        partial = missing_note({**meta, "measures": ["fizz"]}, "fields")
    assert note.id == "fields-empty" and "Activation fields not measured in this analysis" in note.children
    assert all(f"“{name}”" in note.children for name in names) and "fizz" in names
    assert partial is None if names == ["fizz"] else "“fizz”" not in partial.children
    # The slider redraws exactly the figures that show one checkpoint.
    assert PER_CHECKPOINT == {
        "fields-resid-depth",
        "fields-resid-position",
        "fields-attention-mass",
        "fields-residual-correlation",
        "fields-preact-hist",
    }
