"""Figures of the Dynamics tab: training as a trajectory (velocity, kinetic energy, distance from
initialisation, update cosines, phase space, the PCA plane) and the soft modes of the loss (Hessian
density, per-head LLC).

Pure builders like ``frontend.figures``: tidy DataFrame slices in, ``plotly.graph_objects.Figure``
out, no I/O. The two generic views here, lines over training steps (``step_lines_figure``) and a
layer·head × checkpoint heatmap (``heads_heatmap_figure``), are the Fields tab's too. Definitions of
every quantity are in docs/measures.md ("Training dynamics", "Hessian spectral density (soft modes)",
"Per-head local learning coefficient").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from frontend.downsample import column_indices, line_indices
from frontend.plotting import (
    LABELS,
    MARKER_POINTS,
    checkpoint_axis,
    empty_figure,
    fast_figure,
    head_color,
    head_label,
    log_ticks,
    mark_steps,
    step_axis,
    style,
    vline,
)

__all__ = [
    "MATRICES",
    "heads_heatmap_figure",
    "hessian_density_figure",
    "matrix_lines_figure",
    "pca_plane_figure",
    "phase_space_figure",
    "step_lines_figure",
    "wrap_title",
]

MATRICES = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_E", "W_pos", "W_U")
"""The weight matrices the trajectory measure reports, in the order the legends list them."""
_EMBEDDING_GREYS = {"W_E": "rgb(90,90,90)", "W_pos": "rgb(140,140,140)", "W_U": "rgb(60,60,60)"}
_CURRENT = {"color": "#d62728", "size": 13, "symbol": "circle-open", "line": {"width": 3}}


def wrap_title(text: str, width: int = 34) -> str:
    """An axis or colour-bar title over two lines when it is longer than ``width``: its unit on the second,
    or, without a unit, broken at the space nearest its middle.

    >>> wrap_title("kinetic energy ½‖Δθ_h/Δt‖² (weight units²/step²)")
    'kinetic energy ½‖Δθ_h/Δt‖²<br>(weight units²/step²)'
    """
    if len(text) <= width:
        return text
    if " (" in text:
        head, _, unit = text.rpartition(" (")
        return f"{head}<br>({unit}"
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - len(text) / 2))  # no unit: break at the middle space
    return f"{text[:cut]}<br>{text[cut + 1 :]}"


def step_lines_figure(
    lines: Sequence[dict[str, Any]],
    *,
    title: str | None,
    ytitle: str,
    xscale: str = "log",
    yscale: str = "linear",
    cursor: int | None = None,
    transition: dict[str, Any] | None = None,
) -> go.Figure:
    """Lines over training steps with the cursor and the marked transition (a slider step moves the cursor
    in the browser, frontend/assets/slider.js).

    Args:
        lines: one dict per line: ``name``, ``steps`` and ``values`` (same length), optional ``color``,
            ``dash``, ``width`` and ``se`` (± error bars, same length as ``values``).
        title: the figure's title.
        ytitle: the value axis title (label and unit, from the registry).
        xscale: "log" or "linear" step axis.
        yscale: "log" or "linear" value axis.
        cursor: the checkpoint the slider is on.
        transition: the marked transition (``frontend.data.transition``), or None.
    """
    marked = [v for v in (cursor, (transition or {}).get("step")) if v is not None]
    traces: list[dict[str, Any]] = []
    steps_all: set[int] = set()
    for line in lines:
        raw = np.asarray(line["steps"], dtype=float)
        values = np.asarray(line["values"], dtype=float)
        if not len(raw):
            continue
        order = np.argsort(raw, kind="stable")
        raw, values = raw[order], values[order]
        steps_all.update(int(s) for s in raw)
        kept = line_indices(raw, values, keep_x=marked)  # long lines keep their extremes (downsample.py)
        name = str(line["name"])
        trace: dict[str, Any] = {
            "type": "scatter",
            "x": step_axis(raw[kept], xscale),
            "y": values[kept],
            "name": name,
            "mode": "lines+markers" if len(kept) <= MARKER_POINTS else "lines",
            "marker": {"size": 4, "color": line.get("color")},
            "line": {"color": line.get("color"), "width": line.get("width", 1.5), "dash": line.get("dash")},
            "customdata": raw[kept],
            "hovertemplate": f"{name} · step %{{customdata}}<br>%{{y:.4g}}<extra></extra>",
        }
        if line.get("se") is not None:
            err = np.asarray(line["se"], dtype=float)[order][kept]
            trace["error_y"] = {"type": "data", "array": err, "visible": True}
        traces.append(trace)
    if not traces:
        return empty_figure(f"{title or ytitle}: no data for this selection")
    fig = fast_figure(traces)
    steps = sorted(steps_all)
    mark_steps(fig, xscale, steps, transition, cursor)
    checkpoint_axis(fig, xscale, steps)
    fig.update_yaxes(title_text=wrap_title(ytitle), type="log" if yscale == "log" else "linear")
    return style(fig, title)


def _matrix_color(layer: Any, matrix: str, n_layers: int) -> str:
    """A layer's hue and a matrix's shade (as heads have); the embeddings in greys."""
    if pd.isna(layer):
        return _EMBEDDING_GREYS.get(matrix, "rgb(100,100,100)")
    index = MATRICES.index(matrix) if matrix in MATRICES else 0
    return head_color(int(layer), index, max(1, n_layers), 6)


def matrix_lines_figure(
    frame: pd.DataFrame,
    quantity: str,
    *,
    title: str,
    n_layers: int,
    xscale: str = "log",
    yscale: str = "linear",
    cursor: int | None = None,
    transition: dict[str, Any] | None = None,
) -> go.Figure:
    """One line per weight matrix (per layer) of a trajectory quantity, and the whole model's in black.

    Args:
        frame: trajectory rows with ``quantity`` (dims layer, matrix; layer <NA> for W_E, W_pos, W_U)
            and, if present, ``total_<quantity>`` (the whole model, a scalar per checkpoint).
        quantity: e.g. ``"velocity"``, ``"kinetic_energy"``, ``"distance_from_init"``, ``"update_cosine"``.
        title: the figure's title.
        n_layers: the model's layers (for the colours).
    """
    rows = frame[frame["quantity"] == quantity]
    lines: list[dict[str, Any]] = []
    if len(rows) and "matrix" in rows:
        rank = {m: i for i, m in enumerate(MATRICES)}
        keys = rows[["layer", "matrix"]].drop_duplicates()
        keys = keys.assign(
            _l=keys["layer"].astype("Float64").fillna(1e9), _m=keys["matrix"].map(rank).fillna(99)
        ).sort_values(["_l", "_m"])
        for layer, matrix in zip(keys["layer"], keys["matrix"], strict=True):
            one = rows[
                (rows["matrix"] == matrix)
                & (rows["layer"].isna() if pd.isna(layer) else rows["layer"] == layer)
            ]
            name = str(matrix) if pd.isna(layer) else f"L{int(layer)} {matrix}"
            lines.append(
                {
                    "name": name,
                    "steps": one["checkpoint"].to_numpy(),
                    "values": one["value"].to_numpy(dtype=float),
                    "color": _matrix_color(layer, str(matrix), n_layers),
                }
            )
    total = frame[frame["quantity"] == f"total_{quantity}"]
    if len(total):
        lines.append(
            {
                "name": "whole model",
                "steps": total["checkpoint"].to_numpy(),
                "values": total["value"].to_numpy(dtype=float),
                "color": "black",
                "width": 3,
            }
        )
    return step_lines_figure(
        lines,
        title=title,
        ytitle=LABELS.get(f"trajectory.{quantity}", quantity.replace("_", " ")),
        xscale=xscale,
        yscale=yscale,
        cursor=cursor,
        transition=transition,
    )


def heads_heatmap_figure(
    frame: pd.DataFrame,
    *,
    title: str,
    colorbar: str,
    xscale: str = "log",
    cursor: int | None = None,
    transition: dict[str, Any] | None = None,
) -> go.Figure:
    """A phase diagram: one quantity over layer·head (rows) × checkpoint (columns), the cursor marked.

    Args:
        frame: rows ``checkpoint, layer, head, value`` (and ``se``: shown as ± in the hover).
        title: the figure's title.
        colorbar: the colour bar's title (label and unit).
    """
    rows = frame.dropna(subset=["layer", "head"]) if len(frame) else frame
    if not len(rows):
        return empty_figure(f"{title}: no data for this selection")
    grid = rows.pivot_table(
        index=["layer", "head"], columns="checkpoint", values="value", aggfunc="mean", dropna=False
    )
    steps = grid.columns.to_numpy()
    z = grid.to_numpy(dtype=float)
    marked = [v for v in (cursor, (transition or {}).get("step")) if v is not None]
    kept = column_indices(steps.astype(float), z, keep_x=marked)  # many checkpoints: the ones that change
    steps, z = steps[kept], z[:, kept]
    hover = "%{y} · step %{customdata[0]}<br>%{z:.4g}"
    custom = np.stack([np.broadcast_to(steps, z.shape), np.full(z.shape, np.nan)], axis=-1)
    if "se" in rows and rows["se"].notna().any():
        se = rows.pivot_table(
            index=["layer", "head"], columns="checkpoint", values="se", aggfunc="mean", dropna=False
        )
        se = se.reindex(index=grid.index, columns=grid.columns).to_numpy(dtype=float)[:, kept]
        custom[..., 1] = se
        hover += " ± %{customdata[1]:.2g}"
    trace = {
        "type": "heatmap",
        "z": z,
        "x": step_axis(steps, xscale),
        "y": [head_label(layer, head) for layer, head in grid.index],
        "colorscale": "Viridis",
        "customdata": custom,
        "colorbar": {"title": {"text": wrap_title(colorbar), "side": "right"}},
        "hovertemplate": hover + "<extra></extra>",
    }
    fig = fast_figure([trace], {"yaxis": {"autorange": "reversed", "title": {"text": "layer · head"}}})
    mark_steps(fig, xscale, steps.tolist(), transition, cursor)
    checkpoint_axis(fig, xscale, steps)
    return style(fig, title, height=max(320, min(900, 140 + 14 * len(grid))))


def phase_space_figure(
    loss: pd.DataFrame, kinetic: pd.DataFrame, *, cursor: int | None = None, xlog: bool = True
) -> go.Figure:
    """Loss (potential energy) against the whole model's kinetic energy, the path coloured by step.

    Args:
        loss: rows ``checkpoint, value`` of ``loss.loss``.
        kinetic: rows ``checkpoint, value`` of ``trajectory.total_kinetic_energy``.
        cursor: the slider's checkpoint, circled in red.
        xlog: a log kinetic-energy axis (it spans decades over training) when every value is positive.
    """
    both = (
        kinetic[["checkpoint", "value"]]
        .rename(columns={"value": "kinetic"})
        .merge(loss[["checkpoint", "value"]].rename(columns={"value": "loss"}), on="checkpoint")
        .dropna()
        .sort_values("checkpoint")
    )
    if not len(both):
        return empty_figure("phase space: no checkpoint has both a loss and a kinetic energy")
    steps = both["checkpoint"].to_numpy()
    # Colour by log step (transitions are read in log step), the colour bar labelled in steps.
    where = np.log10(step_axis(steps, "log"))
    vals, texts = log_ticks(steps)
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "x": both["kinetic"].to_numpy(dtype=float),
            "y": both["loss"].to_numpy(dtype=float),
            "name": "training path",
            "mode": "lines+markers",
            "line": {"color": "rgba(120,120,120,0.5)", "width": 1},
            "marker": {
                "size": 8,
                "color": where,
                "colorscale": "Viridis",
                "colorbar": {
                    "title": {"text": "training step", "side": "right"},
                    "tickvals": np.log10(vals).tolist() if vals else None,
                    "ticktext": texts or None,
                },
            },
            "customdata": steps,
            "hovertemplate": "step %{customdata}<br>kinetic energy %{x:.4g}<br>loss %{y:.4f} nats<extra></extra>",
        }
    ]
    note = ""
    if cursor is not None:
        now = both[both["checkpoint"] == cursor]
        if len(now):
            traces.append(
                {
                    "type": "scatter",
                    "x": now["kinetic"].to_numpy(dtype=float),
                    "y": now["loss"].to_numpy(dtype=float),
                    "name": f"step {cursor}",
                    "mode": "markers",
                    "marker": _CURRENT,
                    "hoverinfo": "skip",
                }
            )
        else:
            note = f" (step {cursor} has no kinetic energy: it needs a previous checkpoint)"
    fig = fast_figure(traces)
    positive = bool((both["kinetic"] > 0).all())
    fig.update_xaxes(
        title_text=wrap_title(LABELS.get("trajectory.total_kinetic_energy", "kinetic energy"), 60),
        type="log" if xlog and positive else "linear",
        dtick="D2" if xlog and positive else None,  # 1-2-5 labels, not every digit of a decade
    )
    fig.update_yaxes(title_text=LABELS.get("loss.loss", "loss (nats)"))
    fig.update_layout(showlegend=False)
    return style(fig, f"Phase space: loss against kinetic energy{note}")


def pca_plane_figure(
    surface: pd.DataFrame,
    coords: pd.DataFrame,
    ratios: pd.DataFrame,
    *,
    cursor: int | None = None,
    max_labels: int = 12,
) -> go.Figure:
    """The loss on the plane of the trajectory's first two principal components, with the path on it.

    Args:
        surface: rows ``x, y, value`` of ``trajectory_pca.pca_loss`` (one grid).
        coords: rows ``checkpoint, index, value`` of ``pca_coordinate`` (index 0: PC1, 1: PC2).
        ratios: rows ``index, value`` of ``pca_explained_variance_ratio``.
        cursor: the slider's checkpoint, circled in red.
        max_labels: at most this many points carry their step as text (plus the ends and the cursor).
    """
    traces: list[dict[str, Any]] = []
    if len(surface):
        grid = surface.pivot_table(index="y", columns="x", values="value", aggfunc="mean")
        traces.append(
            {
                "type": "contour",
                "x": grid.columns.to_numpy(dtype=float),
                "y": grid.index.to_numpy(dtype=float),
                "z": grid.to_numpy(dtype=float),
                "colorscale": "Viridis",
                "ncontours": 24,
                "colorbar": {
                    "title": {"text": LABELS.get("trajectory_pca.pca_loss", "loss (nats)"), "side": "right"}
                },
                "hovertemplate": "PC1 %{x:.3g}, PC2 %{y:.3g}<br>loss %{z:.4f}<extra></extra>",
                "name": "loss",
            }
        )
    path = coords.pivot_table(index="checkpoint", columns="index", values="value", aggfunc="mean")
    if len(path) and {0, 1} <= set(int(c) for c in path.columns):
        steps = path.index.to_numpy()
        every = max(1, math.ceil(len(steps) / max_labels))
        text = [
            str(s) if (i % every == 0 or i == len(steps) - 1 or s == cursor) else ""
            for i, s in enumerate(steps)
        ]
        traces.append(
            {
                "type": "scatter",
                "x": path[0].to_numpy(dtype=float),
                "y": path[1].to_numpy(dtype=float),
                "name": "checkpoints",
                "mode": "lines+markers+text",
                "text": text,
                "textposition": "top right",
                "textfont": {"size": 11, "color": "#111", "shadow": "1px 1px 2px white"},
                "line": {"color": "white", "width": 2},
                "marker": {"size": 6, "color": "white", "line": {"color": "black", "width": 1}},
                "customdata": steps,
                "hovertemplate": "step %{customdata}<br>PC1 %{x:.3g}, PC2 %{y:.3g}<extra></extra>",
            }
        )
        if cursor in path.index:
            traces.append(
                {
                    "type": "scatter",
                    "x": [float(path.loc[cursor, 0])],
                    "y": [float(path.loc[cursor, 1])],
                    "name": f"step {cursor}",
                    "mode": "markers",
                    "marker": _CURRENT,
                    "hoverinfo": "skip",
                }
            )
    if not traces:
        return empty_figure("PCA plane: no coordinates in this analysis")
    share = {int(i): float(v) for i, v in zip(ratios.get("index", []), ratios.get("value", []), strict=True)}
    explained = ", ".join(
        f"PC{i + 1} {share[i]:.1%}" for i in (0, 1) if i in share and math.isfinite(share[i])
    )
    fig = fast_figure(traces)
    coordinate = LABELS.get("trajectory_pca.pca_coordinate", "coordinate")
    fig.update_xaxes(title_text=wrap_title(f"PC1: {coordinate}", 60))
    fig.update_yaxes(title_text=wrap_title(f"PC2: {coordinate}"))
    fig.update_layout(showlegend=False)
    title = "Loss on the PCA plane" + (f" ({explained} of the variance)" if explained else "")
    return style(fig, title, height=480)


def hessian_density_figure(rows: pd.DataFrame, step: int, yscale: str = "linear") -> go.Figure:
    """The Hessian's eigenvalue density at one checkpoint, λ = 0 marked, its numbers in the title.

    Args:
        rows: the ``hessian_density`` rows of one checkpoint: ``density`` (x = eigenvalue) and the
            scalars ``mass_near_zero``, ``negative_mass``, ``trace`` (with ``se``), ``lambda_min``,
            ``lambda_max``.
        step: the checkpoint (for the title).
        yscale: "log" shows the tails.
    """
    density = rows[rows["quantity"] == "density"].sort_values("x") if len(rows) else rows
    if not len(density):
        return empty_figure(f"no Hessian density at step {step}")
    scalars = rows[rows["quantity"] != "density"].groupby("quantity")
    value = scalars["value"].first().to_dict()
    se = scalars["se"].first().to_dict() if "se" in rows else {}
    words = []
    for key, text in (("lambda_min", "λ_min {:.3g}"), ("lambda_max", "λ_max {:.3g}")):
        if key in value:
            words.append(text.format(value[key]))
    if "trace" in value:
        spread = se.get("trace")
        pm = f" ± {spread:.2g}" if spread is not None and math.isfinite(spread) else ""
        words.append(f"trace {value['trace']:.3g}{pm}")
    for key, text in (("mass_near_zero", "mass near 0 {:.1%}"), ("negative_mass", "negative {:.1%}")):
        if key in value:
            words.append(text.format(value[key]))
    fig = fast_figure(
        [
            {
                "type": "scatter",
                "x": density["x"].to_numpy(dtype=float),
                "y": density["value"].to_numpy(dtype=float),
                "name": "density",
                "mode": "lines",
                "fill": "tozeroy",
                "line": {"color": "#1f77b4", "width": 1.5},
                "hovertemplate": "λ %{x:.4g}<br>density %{y:.4g}<extra></extra>",
            }
        ]
    )
    fig.update_layout(shapes=[vline(0.0, "", {"color": "#888", "width": 1, "dash": "dot"})], showlegend=False)
    if words:  # the numbers in a box at the top right (a title this long runs under the toolbar)
        fig.add_annotation(
            text="<br>".join(words),
            x=0.99,
            y=0.98,
            xref="paper",
            yref="paper",
            xanchor="right",
            yanchor="top",
            showarrow=False,
            align="right",
            bgcolor="rgba(255,255,255,0.8)",
            font={"size": 11},
        )
    fig.update_xaxes(title_text="Hessian eigenvalue λ (nats / unit²)")
    fig.update_yaxes(
        title_text=wrap_title(LABELS.get("hessian_density.density", "density")),
        type="log" if yscale == "log" else "linear",
    )
    return style(fig, f"Hessian eigenvalue density at step {step}")
