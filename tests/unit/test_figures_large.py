"""Figures of large analyses: built without plotly's validation (fast_figure) yet styled and placed as
before, long lines and wide heatmaps downsampled keeping the marked steps (docs/dashboard.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from frontend import figures as F
from frontend import figures_measures as M
from frontend.downsample import MAX_COLUMNS, MAX_LINE_POINTS


def _curves(n_steps: int, heads: int = 2) -> pd.DataFrame:
    steps = np.arange(n_steps) * 10
    rows = []
    for h in range(heads):
        value = 1 / (1 + np.exp(-(steps - steps[n_steps // 2]) / 50.0)) + 0.01 * h
        rows.append(pd.DataFrame({"checkpoint": steps, "layer": 0, "head": h, "value": value}))
    return pd.concat(rows, ignore_index=True)


def _white(fig) -> bool:
    layout = fig.to_plotly_json()["layout"]
    return layout["template"]["layout"]["plot_bgcolor"] == "white"


def test_curves_keep_the_template_and_drop_markers_on_long_lines() -> None:
    short = F.curves_figure(_curves(20), title="t", ytitle="y", shape=(1, 2))
    long = F.curves_figure(_curves(200), title="t", ytitle="y", shape=(1, 2))
    assert _white(short) and _white(long)
    assert short.data[0].mode == "lines+markers" and long.data[0].mode == "lines"
    assert len(long.data[0].x) == 200  # under the downsampling limit: every point


def test_a_very_long_line_is_downsampled_but_keeps_the_cursor_and_transition() -> None:
    frame = _curves(3000, heads=1)
    steps = frame["checkpoint"].to_numpy()
    cursor, moved = int(steps[1234]), int(steps[2222])
    fig = F.curves_figure(
        frame,
        title="t",
        ytitle="y",
        xscale="linear",
        shape=(1, 1),
        cursor=cursor,
        transition={"step": moved, "lo": moved - 10, "hi": moved + 10, "label": "x"},
    )
    kept = np.asarray(fig.data[0].customdata, dtype=float)
    assert len(kept) <= MAX_LINE_POINTS + 2
    assert {cursor, moved, steps[0], steps[-1]} <= set(kept.astype(int).tolist())
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert {s.x0 for s in lines} >= {float(cursor), float(moved)}


def test_overview_heatmap_of_many_checkpoints_keeps_the_transition_column() -> None:
    steps = np.arange(1, 1001) * 100
    order = pd.concat(
        [
            pd.DataFrame(
                {"checkpoint": steps, "layer": 0, "head": h, "value": (steps >= 43_100) * (h == 1) * 1.0}
            )
            for h in range(3)
        ],
        ignore_index=True,
    )
    loss = pd.DataFrame({"checkpoint": steps, "quantity": "loss", "value": 4 - (steps >= 43_100)})
    fig = F.overview_figure(order, loss, "heads.induction_score", transition={"step": 43_100}, cursor=90_000)
    heat = next(t for t in fig.data if t.type == "heatmap")
    columns = np.asarray(heat.customdata)[0].astype(int)
    assert len(columns) <= MAX_COLUMNS + 2
    assert {100, 100_000, 43_100, 90_000} <= set(columns.tolist())
    assert heat.xaxis == "x2" and heat.yaxis == "y2" and fig.layout.yaxis2.autorange == "reversed"
    assert _white(fig)
    assert fig.layout.xaxis2.type == "log" and fig.layout.xaxis2.title.text == "training step"


def test_thermo_panels_sit_on_their_own_axes_with_the_beta_lines() -> None:
    beta = np.geomspace(0.05, 20, 11)
    sweep = pd.concat(
        [
            pd.DataFrame({"layer": 0, "head": h, "beta": beta, "quantity": q, "value": beta * (h + 1)})
            for q in ("entropy", "heat_capacity", "internal_energy", "beta_f")
            for h in range(2)
        ],
        ignore_index=True,
    )
    stars = pd.DataFrame({"layer": 0, "head": [0, 1], "quantity": "beta_star", "value": [2.0, 3.0]})
    fig = M.thermo_figure(sweep, stars, (1, 2), checkpoint=5, beta=0.5)
    assert _white(fig)
    axes = {(t.xaxis, t.yaxis) for t in fig.data}
    assert axes == {("x", "y"), ("x2", "y2"), ("x3", "y3"), ("x4", "y4")}
    stars_drawn = [t for t in fig.data if t.mode == "markers"]
    assert len(stars_drawn) == 2 and all(t.xaxis == "x2" for t in stars_drawn)
    lines = [(s.xref, s.x0) for s in fig.layout.shapes]
    for axis in ("x", "x2", "x3", "x4"):
        assert (axis, 1.0) in lines and (axis, 0.5) in lines  # β = 1 and the β cursor on every panel
    assert all(fig.layout[f"xaxis{i}"].type == "log" for i in ("", "2", "3", "4"))


def test_the_data_revision_follows_the_data_not_the_cursor() -> None:
    # Plotly.react redraws a figure with a datarevision only when that revision changes: moving the
    # cursor must keep it, any change of a value must change it.
    frame = _curves(154, heads=3)
    a = F.curves_figure(frame, title="t", ytitle="y", shape=(1, 3), cursor=100)
    b = F.curves_figure(frame, title="t", ytitle="y", shape=(1, 3), cursor=1200)
    changed = frame.copy()
    changed.loc[7, "value"] += 1e-12
    c = F.curves_figure(changed, title="t", ytitle="y", shape=(1, 3), cursor=100)
    assert a.layout.datarevision == b.layout.datarevision
    assert a.layout.datarevision != c.layout.datarevision
    assert [s.x0 for s in a.layout.shapes] != [s.x0 for s in b.layout.shapes]  # the cursor moved
