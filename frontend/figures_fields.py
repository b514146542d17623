"""Figures of the Fields tab: the residual stream's flow through depth, attention and residual
correlation functions, and the mean-field check of MLP pre-activations.

Pure builders like ``frontend.figures``: tidy DataFrame slices in, ``plotly.graph_objects.Figure``
out, no I/O. Lines over training steps and layer·head heatmaps are the Dynamics tab's builders
(``frontend.figures_dynamics``). Definitions are in docs/measures.md ("Activation fields").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from frontend.figures_dynamics import step_lines_figure, wrap_title
from frontend.plotting import LABELS, empty_figure, fast_figure, head_color, style

__all__ = [
    "gaussian_overlay",
    "layer_lines_figure",
    "per_layer_figure",
    "position_heatmap_figure",
    "preact_hist_figure",
    "residual_depth_figure",
]

_DASHES = (None, "dash", "dot", "dashdot")


def _layer_color(layer: Any, n_layers: int) -> str:
    return head_color(int(layer), 0, max(1, n_layers), 1)


def layer_lines_figure(
    frame: pd.DataFrame,
    quantities: tuple[str, ...],
    *,
    measure: str,
    title: str,
    n_layers: int,
    ytitle: str | None = None,
    xscale: str = "log",
    yscale: str = "linear",
    cursor: int | None = None,
    transition: dict[str, Any] | None = None,
) -> go.Figure:
    """Per-layer quantities over training steps: one colour per layer, one dash per quantity.

    Args:
        frame: rows ``checkpoint, layer, quantity, value`` (dims (layer,)).
        quantities: the quantities drawn, solid, dashed, dotted, dash-dotted in this order.
        measure: their measure (for the registry's labels).
        title: the figure's title.
        n_layers: the model's layers (for the colours).
        ytitle: the value axis title (default: the first quantity's label and unit).
    """
    lines: list[dict[str, Any]] = []
    for dash, quantity in zip(_DASHES, quantities, strict=False):
        rows = frame[frame["quantity"] == quantity]
        suffix = "" if len(quantities) == 1 else f" {quantity.replace('_', ' ')}"
        for layer, one in rows.groupby("layer", sort=True):
            lines.append(
                {
                    "name": f"L{int(layer)}{suffix}",
                    "steps": one["checkpoint"].to_numpy(),
                    "values": one["value"].to_numpy(dtype=float),
                    "color": _layer_color(layer, n_layers),
                    "dash": dash,
                }
            )
    # Several quantities share the axis: it carries the first one's title, the legend names each line.
    ytitle = ytitle or LABELS.get(f"{measure}.{quantities[0]}", quantities[0])
    return step_lines_figure(
        lines, title=title, ytitle=ytitle, xscale=xscale, yscale=yscale, cursor=cursor, transition=transition
    )


def per_layer_figure(
    frame: pd.DataFrame,
    *,
    x: str,
    title: str,
    xtitle: str,
    ytitle: str,
    n_layers: int,
    yscale: str = "linear",
) -> go.Figure:
    """One line per layer against a coordinate (``index`` = distance r, ``position``) at one checkpoint."""
    if not len(frame):
        return empty_figure(f"{title}: no data for this selection")
    traces = []
    for layer, rows in frame.groupby("layer", sort=True):
        rows = rows.sort_values(x)
        name = f"L{int(layer)}"
        color = _layer_color(layer, n_layers)
        traces.append(
            {
                "type": "scatter",
                "x": rows[x].to_numpy(dtype=float),
                "y": rows["value"].to_numpy(dtype=float),
                "name": name,
                "mode": "lines+markers",
                "marker": {"size": 4, "color": color},
                "line": {"color": color, "width": 1.5},
                "hovertemplate": f"{name} · {x} %{{x}}<br>%{{y:.4g}}<extra></extra>",
            }
        )
    fig = fast_figure(traces)
    fig.update_xaxes(title_text=xtitle)
    fig.update_yaxes(title_text=wrap_title(ytitle), type="log" if yscale == "log" else "linear")
    return style(fig, title)


def residual_depth_figure(rows: pd.DataFrame, step: int) -> go.Figure:
    """The residual norm before and after each block against depth, at one checkpoint.

    Args:
        rows: ``residual`` rows of one checkpoint with ``resid_norm_pre`` and ``resid_norm_post``
            (dims (layer,)); ``resid_growth`` and ``block_share`` go in the hover when present.
        step: the checkpoint (for the title).
    """
    per_layer = rows[rows["position"].isna()] if "position" in rows else rows
    wide = per_layer.pivot_table(index="layer", columns="quantity", values="value", aggfunc="mean")
    if not len(wide) or not {"resid_norm_pre", "resid_norm_post"} <= set(wide.columns):
        return empty_figure(f"no residual norms at step {step}")
    layers = wide.index.to_numpy(dtype=float)
    extra = [q for q in ("resid_growth", "block_share") if q in wide.columns]
    custom = wide[extra].to_numpy(dtype=float) if extra else None
    hover = "".join(f"<br>{q.replace('_', ' ')} %{{customdata[{i}]:.3g}}" for i, q in enumerate(extra))
    traces = []
    for quantity, name, color, dash in (
        ("resid_norm_pre", "before the block", "#1f77b4", "dash"),
        ("resid_norm_post", "after the block", "#ff7f0e", None),
    ):
        trace: dict[str, Any] = {
            "type": "scatter",
            "x": layers,
            "y": wide[quantity].to_numpy(dtype=float),
            "name": name,
            "mode": "lines+markers",
            "marker": {"size": 7, "color": color},
            "line": {"color": color, "width": 2, "dash": dash},
            "hovertemplate": f"layer %{{x}} {name}<br>‖x‖ %{{y:.4g}}{hover}<extra></extra>",
        }
        if custom is not None:
            trace["customdata"] = custom
        traces.append(trace)
    fig = fast_figure(traces)
    fig.update_xaxes(title_text="layer (block)", dtick=1)
    fig.update_yaxes(title_text=wrap_title(LABELS.get("residual.resid_norm_post", "residual norm")))
    return style(fig, f"Residual norm through depth at step {step}")


def position_heatmap_figure(rows: pd.DataFrame, step: int) -> go.Figure:
    """The residual norm per layer (rows) and position (columns) at one checkpoint."""
    if not len(rows):
        return empty_figure(f"no per-position residual norms at step {step}")
    grid = rows.pivot_table(index="layer", columns="position", values="value", aggfunc="mean")
    trace = {
        "type": "heatmap",
        "z": grid.to_numpy(dtype=float),
        "x": grid.columns.to_numpy(dtype=float),
        "y": [f"L{int(layer)}" for layer in grid.index],
        "colorscale": "Viridis",
        "colorbar": {
            "title": {"text": wrap_title(LABELS.get("residual.resid_norm_position", "‖x‖")), "side": "right"}
        },
        "hovertemplate": "%{y} · position %{x}<br>‖x‖ %{z:.4g}<extra></extra>",
    }
    fig = fast_figure([trace], {"yaxis": {"autorange": "reversed", "title": {"text": "layer"}}})
    fig.update_xaxes(title_text="position (token index)")
    return style(fig, f"Residual norm per position at step {step}", height=max(360, 120 + 40 * len(grid)))


def gaussian_overlay(
    centres: np.ndarray, counts: np.ndarray, mean: float, std: float, n: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian of mean ``mean`` and standard deviation ``std`` on the histogram's scale.

    Whatever the histogram's normalisation (counts, fractions or a density), the curve has the same
    area as the bars: ``Σ counts · bin width`` times the normal density.

    Args:
        centres: the bins' centres (equal widths).
        counts: the histogram's values.
        mean: the pre-activations' mean.
        std: their standard deviation.
        n: points of the curve across the histogram's range.

    Returns:
        ``(x, y)`` of the curve.
    """
    width = float(np.median(np.diff(centres))) if len(centres) > 1 else 1.0
    x = np.linspace(centres[0] - width / 2, centres[-1] + width / 2, n)
    if not (math.isfinite(std) and std > 0):
        return x, np.full(n, np.nan)
    area = float(np.nansum(counts)) * width
    return x, area * np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def preact_hist_figure(rows: pd.DataFrame, step: int, n_layers: int, yscale: str = "linear") -> go.Figure:
    """MLP pre-activation histograms per layer at one checkpoint, each with the Gaussian of the same
    mean and variance (mean-field theory's prediction at initialisation) dashed over it.

    Args:
        rows: ``meanfield`` rows of one checkpoint: ``preact_hist`` (layer, index; x = bin centre),
            ``preact_mean``, ``preact_std`` and ``preact_ks`` (dims (layer,)).
        step: the checkpoint (for the title).
        n_layers: the model's layers (for the colours).
        yscale: "log" shows the tails.
    """
    hist = rows[rows["quantity"] == "preact_hist"] if len(rows) else rows
    if not len(hist):
        return empty_figure(f"no pre-activation histogram at step {step}")
    stats = rows[rows["quantity"] != "preact_hist"].pivot_table(
        index="layer", columns="quantity", values="value", aggfunc="first"
    )
    traces = []
    for layer, one in hist.groupby("layer", sort=True):
        one = one.sort_values("x")
        centres, counts = one["x"].to_numpy(dtype=float), one["value"].to_numpy(dtype=float)
        color, name = _layer_color(layer, n_layers), f"L{int(layer)}"
        ks = stats.loc[layer, "preact_ks"] if layer in stats.index and "preact_ks" in stats else float("nan")
        traces.append(
            {
                "type": "scatter",
                "x": centres,
                "y": counts,
                "name": f"{name} pre-activations" + (f" (KS {ks:.3f})" if math.isfinite(ks) else ""),
                "mode": "lines",
                "line": {"color": color, "width": 1.5, "shape": "hvh"},
                "legendgroup": name,
                "hovertemplate": f"{name} · bin %{{x:.3g}}<br>%{{y:.4g}}<extra></extra>",
            }
        )
        if layer in stats.index and {"preact_mean", "preact_std"} <= set(stats.columns):
            x, y = gaussian_overlay(
                centres, counts, float(stats.loc[layer, "preact_mean"]), float(stats.loc[layer, "preact_std"])
            )
            traces.append(
                {
                    "type": "scatter",
                    "x": x,
                    "y": y,
                    "name": f"{name} Gaussian, same mean and variance",
                    "mode": "lines",
                    "line": {"color": color, "width": 1.5, "dash": "dash"},
                    "legendgroup": name,
                    "hoverinfo": "skip",
                }
            )
    fig = fast_figure(traces)
    fig.update_xaxes(title_text="MLP pre-activation (bin centre)")
    fig.update_yaxes(
        title_text=wrap_title(LABELS.get("meanfield.preact_hist", "per bin")),
        type="log" if yscale == "log" else "linear",
    )
    return style(fig, f"MLP pre-activations at step {step} against the mean-field Gaussian")
