"""Pure figure builders: tidy DataFrame slices in, ``plotly.graph_objects.Figure`` out.

No I/O and no Dash here, so every builder is unit-tested without a browser. The conventions shared
by all figures (colours, step axes, template, cursor lines) live in ``frontend.plotting``; axis
titles carry units, and ``uirevision`` is set so zoom survives updates. The primitives other modules
read from here (``LABELS``, ``head_color``, ``step_axis``, ...) stay importable from this module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from frontend.downsample import column_indices, line_indices
from frontend.plotting import (
    BAND_LINES,
    LABELS,
    MARKER_POINTS,
    WEBGL_POINTS,
    band_trace,
    checkpoint_axis,
    empty_figure,
    fast_figure,
    head_color,
    head_label,
    interval_text,
    log_ticks,
    mark_steps,
    row_intervals,
    step_axis,
    step_shapes,
    style,
)

__all__ = [
    "LABELS",
    "MARKER_POINTS",
    "WEBGL_POINTS",
    "compare_figure",
    "curves_figure",
    "empty_figure",
    "fast_figure",
    "head_color",
    "head_label",
    "line_traces",
    "log_ticks",
    "overview_figure",
    "pattern_figure",
    "profile_figure",
    "step_axis",
]


@functools.cache
def _overview_grid_layout() -> str:
    import json

    grid = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.3, 0.7], vertical_spacing=0.04)
    return json.dumps(grid.layout.to_plotly_json())


def _overview_grid() -> dict[str, Any]:
    """The overview's two-row grid (loss above, heatmap below, x shared), as a fresh layout dict."""
    import json

    return json.loads(_overview_grid_layout())


def overview_figure(
    order: pd.DataFrame,
    loss: pd.DataFrame | None,
    quantity: str,
    *,
    transition: dict[str, Any] | None = None,
    cursor: int | None = None,
    xscale: str = "log",
) -> go.Figure:
    """The phase diagram: loss over checkpoints above a heatmap of an order parameter per head.

    Args:
        order: rows ``checkpoint, layer, head, value`` of one quantity.
        loss: rows ``checkpoint, quantity, value`` of the loss measure (``loss``, ``loss_se``, splits),
            or None when the loss was not measured.
        quantity: ``measure.quantity`` of ``order`` (for the colour-bar title).
        transition: ``{"step", "lo", "hi", "label"}`` marked on both panels (None: nothing marked).
        cursor: the checkpoint the slider is on.
        xscale: "log" or "linear".
    """
    # Traces on the grid's axes by name (row 1: x, y; row 2: x2, y2), one Figure built at the end.
    traces: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    steps: list[int] = sorted(order["checkpoint"].unique().tolist()) if len(order) else []
    marked = [v for v in (cursor, (transition or {}).get("step")) if v is not None]
    if loss is not None and len(loss):
        for name, rows in loss[_is_loss_curve(loss["quantity"])].groupby("quantity", sort=True):
            rows = rows.sort_values("checkpoint")
            x = step_axis(rows["checkpoint"], xscale)
            values = rows["value"].to_numpy(dtype=float)
            lo, hi, is_ci = _loss_interval(loss, rows, str(name))
            band = band_trace(x, lo, hi, None, group=str(name))
            if band is not None:
                traces.append(band)
            traces.append(
                {
                    "type": "scatter",
                    "x": x,
                    "y": values,
                    "name": str(name),
                    "legendgroup": str(name),
                    "mode": "lines+markers",
                    "marker": {"size": 4},
                    "customdata": rows["checkpoint"].to_numpy(),
                    "text": interval_text(lo, hi, is_ci, values),
                    "hovertemplate": "step %{customdata}<br>%{y:.4f} nats%{text}<extra>"
                    + str(name)
                    + "</extra>",
                    "xaxis": "x",
                    "yaxis": "y",
                }
            )
        steps = steps or sorted(loss["checkpoint"].unique().tolist())
    else:
        annotations.append(
            {
                "text": "loss not measured in this analysis",
                "x": 0.5,
                "y": 0.5,
                "xref": "x domain",
                "yref": "y domain",
                "showarrow": False,
                "font": {"color": "#888"},
            }
        )
    yaxis2: dict[str, Any] = {}
    if len(order):
        order = order.dropna(subset=["layer", "head"])
        grid = order.pivot_table(
            index=["layer", "head"], columns="checkpoint", values="value", aggfunc="mean"
        )
        labels = [head_label(layer, head) for layer, head in grid.index]
        cols = grid.columns.to_numpy()
        z = grid.to_numpy(dtype=float)
        # Many checkpoints: keep the columns where something changes, and the marked steps.
        kept = column_indices(cols.astype(float), z, keep_x=marked)
        cols, z = cols[kept], z[:, kept]
        custom: Any = np.broadcast_to(cols, z.shape)
        hover = "%{y} · step %{customdata}<br>%{z:.4g}<extra></extra>"
        se = _grid_se(order, grid)
        if se is not None:  # each cell's standard error over prompts, in its hover
            custom = np.stack([np.broadcast_to(cols, z.shape), se[:, kept]], axis=-1)
            hover = "%{y} · step %{customdata[0]}<br>%{z:.4g} ± %{customdata[1]:.2g} (se)<extra></extra>"
        traces.append(
            {
                "type": "heatmap",
                "z": z,
                "x": step_axis(cols, xscale),
                "y": labels,
                "colorscale": "Viridis",
                "customdata": custom,
                "colorbar": {
                    "title": {"text": LABELS.get(quantity, quantity), "side": "right"},
                    "len": 0.7,
                    "y": 0.35,
                },
                "hovertemplate": hover,
                "xaxis": "x2",
                "yaxis": "y2",
            }
        )
        yaxis2 = {"autorange": "reversed", "title": {"text": "layer · head"}}
    if transition and transition.get("step") is not None:
        at = float(step_axis([transition["step"]], xscale)[0])
        annotations.append(
            {
                "x": math.log10(at) if xscale == "log" else at,
                "y": 1,
                "yref": "y domain",
                "xref": "x",
                "text": transition.get("label") or f"transition ≈ step {transition['step']}",
                "showarrow": False,
                "yanchor": "bottom",
                "font": {"color": "#d62728"},
            }
        )
    layout = _overview_grid()
    layout["annotations"] = [*layout.get("annotations", []), *annotations]
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "loss (nats)"}}
    layout["yaxis2"] = {**layout["yaxis2"], **yaxis2}
    # The marks in the layout before the figure is built (adding shapes later validates each again).
    layout["shapes"] = [s for row in (1, 2) for s in step_shapes(xscale, steps, transition, cursor, row)]
    fig = fast_figure(traces, layout)
    checkpoint_axis(fig, xscale, steps, axis="xaxis2")
    checkpoint_axis(fig, xscale, steps, axis="xaxis")
    fig.update_layout(xaxis_title_text=None)
    n_heads = len(order.groupby(["layer", "head"])) if len(order) else 4
    return style(fig, height=max(460, min(900, 200 + 14 * n_heads)))


def _is_loss_curve(names: pd.Series) -> pd.Series:
    """The loss measure's quantities drawn as curves: the losses, not their standard errors (``*_se``),
    susceptibilities (``*_chi``) or per-prompt values (``*_prompt``)."""
    return names.str.startswith("loss") & ~names.str.endswith(("_se", "_chi", "_prompt"))


def _loss_interval(
    loss: pd.DataFrame, rows: pd.DataFrame, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A loss curve's interval per point: its rows' own se/ci columns, else (older results) the
    ``loss_se`` rows for ``loss`` (value ± se); NaN where there is none."""
    got = row_intervals(rows)
    nan = np.full(len(rows), np.nan)
    if got is not None:
        return got
    if name == "loss":
        se = loss[loss["quantity"] == "loss_se"].set_index("checkpoint")["value"]
        if len(se):
            band = rows["checkpoint"].map(se).to_numpy(dtype=float)
            values = rows["value"].to_numpy(dtype=float)
            return values - band, values + band, np.zeros(len(rows), dtype=bool)
    return nan, nan, np.zeros(len(rows), dtype=bool)


def _grid_se(order: pd.DataFrame, grid: pd.DataFrame) -> np.ndarray | None:
    """The ``se`` of each heatmap cell (rows and columns of ``grid``), or None when no row has one."""
    if "se" not in order.columns or not order["se"].notna().any():
        return None
    se = order.pivot_table(index=["layer", "head"], columns="checkpoint", values="se", aggfunc="mean")
    return se.reindex(index=grid.index, columns=grid.columns).to_numpy(dtype=float)


def curves_figure(
    frame: pd.DataFrame,
    *,
    x: str = "checkpoint",
    title: str | None,
    ytitle: str,
    xtitle: str = "training step",
    xscale: str = "log",
    yscale: str = "linear",
    shape: tuple[int, int] = (1, 1),
    transition: dict[str, Any] | None = None,
    cursor: int | None = None,
    error: pd.Series | None = None,
) -> go.Figure:
    """One line per (layer, head) of ``frame`` (columns ``layer, head, <x>, value``), coloured per head.

    Args:
        x: the column on the x axis (``checkpoint``, ``position``, ``index``, ``beta``).
        shape: ``(n_layers, n_heads)`` of the model, for the colours.
        error: optional ± error per row of ``frame`` (same index), drawn as error bars; without it,
            the rows' own ``se``/``ci_lo``/``ci_hi`` are drawn as bands (``line_traces``).
    """
    if not len(frame):
        return empty_figure("no data for this selection")
    marked = [v for v in (cursor, (transition or {}).get("step")) if v is not None and x == "checkpoint"]
    traces = line_traces(frame, x=x, xscale=xscale, shape=shape, marked=marked, error=error)
    fig = fast_figure(traces)
    if x == "checkpoint":
        mark_steps(fig, xscale, frame["checkpoint"].unique().tolist(), transition, cursor)
        checkpoint_axis(fig, xscale, frame["checkpoint"].unique())
    fig.update_xaxes(title_text=xtitle, type="log" if xscale == "log" else "linear")
    fig.update_yaxes(title_text=ytitle, type="log" if yscale == "log" else "linear")
    return style(fig, title)


def line_traces(
    frame: pd.DataFrame,
    *,
    x: str = "checkpoint",
    xscale: str = "log",
    shape: tuple[int, int] = (1, 1),
    marked: Sequence[float] = (),
    error: pd.Series | None = None,
    axis: str = "",
    legend: bool = True,
) -> list[dict[str, Any]]:
    """The traces of one line per (layer, head) of ``frame``, each with its interval.

    A line whose rows carry ``se``/``ci_lo``/``ci_hi`` gets a band in its colour (the 95% interval,
    else ± se; frontend.plotting.row_intervals) and the interval in its hover; with more than
    ``BAND_LINES`` lines the interval is in the hover only.

    Args:
        frame: rows ``layer, head, <x>, value`` (and the uncertainty columns where present).
        x: the column on the x axis.
        xscale: "log" or "linear" (a checkpoint x axis only).
        shape: ``(n_layers, n_heads)`` for the colours.
        marked: x values a downsampled line must keep (transition, cursor).
        error: ± error per row (same index) drawn as error bars instead of the rows' own intervals.
        axis: the subplot's axes suffix ("", "2", ...).
        legend: whether the lines appear in the legend.

    Returns:
        Trace dicts for :func:`frontend.plotting.fast_figure`: per line its band (if any), then the line.
    """
    kind = "scattergl" if len(frame) > WEBGL_POINTS else "scatter"
    groups = frame.groupby(["layer", "head"], sort=True, dropna=False)
    spread = row_intervals(frame) if error is None else None
    if spread is not None:
        frame = frame.assign(_lo=spread[0], _hi=spread[1], _ci=spread[2])
        groups = frame.groupby(["layer", "head"], sort=True, dropna=False)
    bands = spread is not None and groups.ngroups <= BAND_LINES
    traces: list[dict[str, Any]] = []
    for (layer, head), rows in groups:
        rows = rows.sort_values(x)
        raw = rows[x].to_numpy(dtype=float)
        values = rows["value"].to_numpy(dtype=float)
        # A long line keeps its extremes and the marked steps, not every point (frontend/downsample.py).
        kept = line_indices(raw, values, keep_x=marked)
        has_head = not (pd.isna(layer) or pd.isna(head))
        name = head_label(layer, head) if has_head else ("all" if pd.isna(layer) else f"L{int(layer)}")
        color = head_color(int(layer), int(head), *shape) if has_head else None
        xs = step_axis(raw[kept], xscale) if x == "checkpoint" else raw[kept]
        trace: dict[str, Any] = {
            "type": kind,
            "x": xs,
            "y": values[kept],
            "name": name,
            "legendgroup": name,
            "showlegend": legend,
            # A marker is one SVG node per point: on long lines they cost the browser more than they show.
            "mode": "lines+markers" if len(kept) <= MARKER_POINTS else "lines",
            "marker": {"size": 4, "color": color},
            "line": {"color": color, "width": 1.5},
            "customdata": raw[kept],
            "hovertemplate": f"{name} · {x} %{{customdata}}<br>%{{y:.4g}}<extra></extra>",
            "xaxis": f"x{axis}",
            "yaxis": f"y{axis}",
        }
        if error is not None:
            err = error.loc[rows.index].to_numpy(dtype=float)[kept]
            trace["error_y"] = {"type": "data", "array": err, "visible": True}
        if spread is not None:
            lo, hi = rows["_lo"].to_numpy(dtype=float)[kept], rows["_hi"].to_numpy(dtype=float)[kept]
            trace["text"] = interval_text(lo, hi, rows["_ci"].to_numpy(dtype=bool)[kept], values[kept])
            trace["hovertemplate"] = f"{name} · {x} %{{customdata}}<br>%{{y:.4g}}%{{text}}<extra></extra>"
            band = band_trace(xs, lo, hi, color, axis=axis, group=name) if bands else None
            if band is not None:
                traces.append(band)
        traces.append(trace)
    return traces


def profile_figure(
    frame: pd.DataFrame, checkpoint: int, shape: tuple[int, int], yscale: str = "linear"
) -> go.Figure:
    """Entropy per query position at one checkpoint, one line per head."""
    return curves_figure(
        frame,
        x="position",
        title=f"Entropy by position at step {checkpoint}",
        ytitle="attention entropy S (nats)",
        xtitle="query position (token index)",
        xscale="linear",
        yscale=yscale,
        shape=shape,
    )


def pattern_figure(pattern: Sequence[Sequence[float]], tokens: Sequence[str], title: str) -> go.Figure:
    """One attention pattern, queries down and keys across, the tokens on both axes."""
    z = np.asarray(pattern, dtype=float)
    n = z.shape[0]
    ticks = [f"{i}:{t!s}"[:14] for i, t in enumerate(tokens[:n])]
    text = (
        [[f"query {q} {tokens[q]!r} → key {k} {tokens[k]!r}" for k in range(n)] for q in range(n)]
        if n <= 128
        else None
    )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(n)),
            y=list(range(n)),
            colorscale="Blues",
            zmin=0,
            zmax=1,
            text=text,
            colorbar={"title": {"text": "attention p"}},
            hovertemplate="%{text}<br>p = %{z:.3f}<extra></extra>",
        )
    )
    step = max(1, n // 32)
    fig.update_xaxes(
        title_text="key (token)",
        tickvals=list(range(0, n, step)),
        ticktext=ticks[::step],
        tickangle=-60,
        side="bottom",
        constrain="domain",
    )
    fig.update_yaxes(
        title_text="query (token)",
        tickvals=list(range(0, n, step)),
        ticktext=ticks[::step],
        autorange="reversed",
        scaleanchor="x",
    )
    return style(fig, title, height=620)


def compare_figure(
    series: dict[str, pd.DataFrame], ytitle: str, *, xscale: str = "log", yscale: str = "linear"
) -> go.Figure:
    """Two (or more) analyses' curves on one checkpoint axis; each frame has ``checkpoint, value``
    (and ``se``/``ci_lo``/``ci_hi`` where a point has an interval: drawn as a band)."""
    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, (label, frame) in enumerate(series.items()):
        rows = frame.sort_values("checkpoint")
        x = step_axis(rows["checkpoint"], xscale)
        color = palette[i % 4]
        spread = row_intervals(rows)
        text = None
        if spread is not None:
            band = band_trace(x, spread[0], spread[1], color, group=label)
            if band is not None:
                fig.add_trace(go.Scatter(band))
            text = interval_text(*spread, rows["value"].to_numpy(dtype=float))
        fig.add_trace(
            go.Scatter(
                x=x,
                y=rows["value"],
                name=label,
                legendgroup=label,
                mode="lines+markers",
                line={"color": color},
                customdata=rows["checkpoint"],
                text=text,
                hovertemplate=f"{label}<br>step %{{customdata}}: %{{y:.4g}}"
                + ("%{text}" if text is not None else "")
                + "<extra></extra>",
            )
        )
    if not series:
        return empty_figure("choose two analyses to compare")
    checkpoint_axis(
        fig, xscale, np.unique(np.concatenate([f["checkpoint"].to_numpy() for f in series.values()]))
    )
    fig.update_yaxes(title_text=ytitle, type="log" if yscale == "log" else "linear")
    return style(fig, None, height=460)
