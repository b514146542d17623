"""Figure builders for the thermodynamics, spectra and landscape tabs (DataFrame slices in, Figures out).

Same conventions as ``frontend.figures``: colours per (layer, head), units on every axis, no I/O.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from frontend.plotting import (
    MARKER_POINTS,
    add_shapes,
    checkpoint_axis,
    empty_figure,
    error_bars,
    fast_figure,
    head_color,
    head_label,
    interval_text,
    mark_steps,
    row_intervals,
    step_axis,
    style,
    vline,
)
from phasescope.measures import label as axis_title

# More weight-matrix lines than this and α's error bars move into the hover text.
ALPHA_BARS_LINES = 12

# More β* lines than this and their error bars move into the hover text.
BETA_BARS_LINES = 12

__all__ = ["alpha_figure", "beta_star_figure", "esd_figure", "surface_figure", "thermo_figure"]


def _intervals_of(frame: pd.DataFrame, quantity: str, keys: list[str]) -> pd.DataFrame:
    """``lo``, ``hi``, ``is_ci`` of one quantity's rows (frontend.plotting.row_intervals), indexed by
    ``keys``; empty when its rows carry no interval."""
    rows = frame[frame["quantity"] == quantity] if len(frame) else frame
    spread = row_intervals(rows) if len(rows) else None
    if spread is None:
        return pd.DataFrame(columns=["lo", "hi", "is_ci"])
    out = pd.DataFrame({"lo": spread[0], "hi": spread[1], "is_ci": spread[2]}, index=rows.index)
    out.index = pd.MultiIndex.from_frame(rows[keys])
    return out[~out.index.duplicated()]


def _aligned(spread: pd.DataFrame, keys: pd.MultiIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``spread`` (from ``_intervals_of``) at ``keys``: NaN (no interval) where it has no row."""
    if not len(spread):
        nan = np.full(len(keys), np.nan)
        return nan, nan, np.zeros(len(keys), dtype=bool)
    got = spread.reindex(keys)
    return (
        got["lo"].to_numpy(dtype=float),
        got["hi"].to_numpy(dtype=float),
        got["is_ci"].fillna(False).to_numpy(dtype=bool),
    )


def thermo_figure(
    sweep: pd.DataFrame,
    stars: pd.DataFrame,
    shape: tuple[int, int],
    checkpoint: int,
    beta: float = 1.0,
    yscale: str = "linear",
) -> go.Figure:
    """S(β), C(β), U(β), βF(β) per head at one checkpoint; β = 1 and the chosen β marked, β* on C.

    Args:
        sweep: rows ``layer, head, beta, quantity, value`` for entropy, heat_capacity, internal_energy, beta_f.
        stars: rows ``layer, head, quantity, value`` for beta_star, beta_star_censored, beta_star_bound.
    """
    # Panel titles are the registry's axis titles of the thermo quantities.
    panels = [
        (q, axis_title(f"thermo.{q}")) for q in ("entropy", "heat_capacity", "internal_energy", "beta_f")
    ]
    if not len(sweep):
        return empty_figure("thermodynamics not measured in this analysis")
    star = (
        stars.pivot_table(index=["layer", "head"], columns="quantity", values="value") if len(stars) else None
    )
    spread = _intervals_of(stars, "beta_star", ["layer", "head"])
    # One Figure from plain dicts (fast_figure): panel i sits on axes x<i+1>, y<i+1> of the 2×2 grid.
    traces: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    for i, (quantity, _) in enumerate(panels):
        axis = "" if i == 0 else str(i + 1)
        rows_q = sweep[sweep["quantity"] == quantity]
        for (layer, head), rows in rows_q.groupby(["layer", "head"], sort=True):
            rows = rows.sort_values("beta")
            color = head_color(int(layer), int(head), *shape)
            name = head_label(layer, head)
            traces.append(
                {
                    "type": "scatter",
                    "x": rows["beta"].to_numpy(dtype=float),
                    "y": rows["value"].to_numpy(dtype=float),
                    "name": name,
                    "legendgroup": name,
                    "showlegend": i == 0,
                    "mode": "lines",
                    "line": {"color": color, "width": 1.5},
                    "hovertemplate": f"{name} · β %{{x:.3g}}<br>%{{y:.4g}}<extra></extra>",
                    "xaxis": f"x{axis}",
                    "yaxis": f"y{axis}",
                }
            )
            if quantity == "heat_capacity" and star is not None and (layer, head) in star.index:
                marker = _star_marker(star.loc[(layer, head)], rows, name, color)
                # An interval for a located peak only (a censored one is a bound, not a number).
                located = marker is not None and "β* =" in marker["hovertemplate"]
                if located and (layer, head) in spread.index:
                    lo, hi, ci = (spread.loc[(layer, head), c] for c in ("lo", "hi", "is_ci"))
                    text = interval_text(
                        np.array([lo]), np.array([hi]), np.array([ci]), np.array(marker["x"])
                    )
                    marker["hovertemplate"] = marker["hovertemplate"].replace("<extra>", f"{text[0]}<extra>")
                if marker is not None:
                    traces.append({**marker, "xaxis": "x2", "yaxis": "y2"})
        shapes.append(vline(1.0, axis, {"color": "#222", "dash": "dash", "width": 1}))
        if abs(beta - 1.0) > 1e-9:
            shapes.append(vline(beta, axis, {"color": "#9467bd", "dash": "dot", "width": 1.5}))
    fig = fast_figure(traces, _thermo_grid(tuple(t for _, t in panels)))
    add_shapes(fig, shapes)
    ticks = [
        v
        for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
        if sweep["beta"].min() / 1.01 <= v <= sweep["beta"].max() * 1.01
    ]
    fig.update_xaxes(
        type="log",
        title_text="inverse temperature β (β = 1: the model)",
        tickvals=ticks,
        ticktext=[f"{v:g}" for v in ticks],
    )
    fig.update_yaxes(type="log" if yscale == "log" else "linear")
    return style(
        fig, f"Attention thermodynamics at step {checkpoint} (averaged over rows with ≥ 2 keys)", height=620
    )


@functools.cache
def _thermo_grid_layout(titles: tuple[str, ...]) -> str:
    import json

    grid = make_subplots(
        rows=2, cols=2, subplot_titles=list(titles), horizontal_spacing=0.09, vertical_spacing=0.14
    )
    return json.dumps(grid.layout.to_plotly_json())


def _thermo_grid(titles: tuple[str, ...]) -> dict[str, Any]:
    """The thermo figure's 2×2 grid with its panel titles, as a fresh layout dict (built once)."""
    import json

    return json.loads(_thermo_grid_layout(titles))


def _star_marker(star: pd.Series, rows: pd.DataFrame, name: str, color: str) -> dict[str, Any] | None:
    """β* on one head's C(β) curve: a star, or an open triangle on the grid's edge when censored."""
    censored = float(star.get("beta_star_censored", 0) or 0)
    if censored == 0 and pd.notna(star.get("beta_star")):
        b = float(star["beta_star"])
        c = float(np.interp(math.log(b), np.log(rows["beta"].to_numpy()), rows["value"].to_numpy()))
        return {
            "type": "scatter",
            "x": [b],
            "y": [c],
            "mode": "markers",
            "legendgroup": name,
            "showlegend": False,
            "marker": {"symbol": "star", "size": 11, "color": color, "line": {"width": 1, "color": "#222"}},
            "hovertemplate": f"{name}: β* = {b:.3g}<extra></extra>",
        }
    if pd.notna(star.get("beta_star_bound")):
        b = float(star["beta_star_bound"])
        sign = "≥" if censored > 0 else "≤"
        c = float(rows["value"].iloc[-1] if censored > 0 else rows["value"].iloc[0])
        return {
            "type": "scatter",
            "x": [b],
            "y": [c],
            "mode": "markers",
            "legendgroup": name,
            "showlegend": False,
            "marker": {
                "symbol": "triangle-right-open" if censored > 0 else "triangle-left-open",
                "size": 11,
                "color": color,
            },
            "hovertemplate": f"{name}: β* {sign} {b:.3g} (censored: peak on the grid's edge)<extra></extra>",
        }
    return None


def beta_star_figure(
    stars: pd.DataFrame,
    shape: tuple[int, int],
    *,
    xscale: str = "log",
    transition: dict[str, Any] | None = None,
    cursor: int | None = None,
) -> go.Figure:
    """β* per head over checkpoints; censored peaks drawn as open triangles at the grid edge."""
    if not len(stars):
        return empty_figure("thermodynamics not measured in this analysis")
    wide = stars.pivot_table(
        index=["layer", "head", "checkpoint"], columns="quantity", values="value"
    ).reset_index()
    traces: list[dict[str, Any]] = []
    keys = ["layer", "head", "checkpoint"]
    spread = _intervals_of(stars, "beta_star", keys)
    groups = wide.groupby(["layer", "head"], sort=True)
    # Error bars are one SVG node per point: with many heads the interval is in the hover only.
    bars = groups.ngroups <= BETA_BARS_LINES
    for (layer, head), rows in groups:
        rows = rows.sort_values("checkpoint")
        name, color = head_label(layer, head), head_color(int(layer), int(head), *shape)
        x = step_axis(rows["checkpoint"], xscale)
        values = rows["beta_star"].to_numpy(dtype=float) if "beta_star" in rows else None
        trace = {
            "type": "scatter",
            "x": x,
            "y": values,
            "name": name,
            "legendgroup": name,
            "mode": "lines+markers" if len(rows) <= MARKER_POINTS else "lines",
            "line": {"color": color, "width": 1.5},
            "marker": {"size": 5},
            "customdata": rows["checkpoint"].to_numpy(),
            "hovertemplate": f"{name} · step %{{customdata}}<br>β* = %{{y:.3g}}<extra></extra>",
        }
        if len(spread) and values is not None:
            lo, hi, is_ci = _aligned(spread, pd.MultiIndex.from_frame(rows[keys]))
            trace["error_y"] = error_bars(values, lo, hi, visible=bars)
            trace["text"] = interval_text(lo, hi, is_ci, values)
            trace["hovertemplate"] = (
                f"{name} · step %{{customdata}}<br>β* = %{{y:.3g}}%{{text}}<extra></extra>"
            )
        traces.append(trace)
        cens = rows[rows.get("beta_star_censored", pd.Series(0, index=rows.index)).fillna(0) != 0]
        if len(cens):
            up = (cens["beta_star_censored"] > 0).to_numpy()
            traces.append(
                {
                    "type": "scatter",
                    "x": step_axis(cens["checkpoint"], xscale),
                    "y": cens["beta_star_bound"].to_numpy(dtype=float),
                    "mode": "markers",
                    "legendgroup": name,
                    "showlegend": False,
                    "customdata": np.c_[cens["checkpoint"].to_numpy(), np.where(up, "≥", "≤")],
                    "marker": {
                        "symbol": np.where(up, "triangle-up-open", "triangle-down-open"),
                        "size": 9,
                        "color": color,
                    },
                    "hovertemplate": f"{name} · step %{{customdata[0]}}<br>β* %{{customdata[1]}} %{{y:.3g}} (censored)<extra></extra>",
                }
            )
    fig = fast_figure(traces)
    line = {"color": "#222", "dash": "dash", "width": 1}  # β* = 1: the model's own temperature
    add_shapes(
        fig,
        [{"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": 1, "y1": 1, "line": line}],
    )
    mark_steps(fig, xscale, wide["checkpoint"].unique().tolist(), transition, cursor)
    checkpoint_axis(fig, xscale, wide["checkpoint"].unique())
    ticks = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    fig.update_yaxes(
        type="log",
        title_text="β* (open triangles: censored)",
        tickvals=ticks,
        ticktext=[f"{v:g}" for v in ticks],
    )
    title = "Critical inverse temperature β* over training" + (" (± its interval)" if len(spread) else "")
    return style(fig, title)


def esd_figure(eigs: np.ndarray, scalars: dict[str, float], title: str) -> go.Figure:
    """Histogram of one weight matrix's ESD with the Marchenko–Pastur density of its aspect ratio."""
    eigs = np.asarray(eigs, dtype=float)
    eigs = eigs[eigs > 0]
    if not len(eigs):
        return empty_figure("no eigenvalues for this matrix")
    fig = go.Figure()
    counts, edges = np.histogram(eigs, bins=min(80, max(10, len(eigs) // 3)))
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig.add_trace(
        go.Bar(
            x=centres,
            y=counts / (width * len(eigs)),
            width=width,
            name="ESD",
            marker_color="#4c78a8",
            opacity=0.75,
            hovertemplate="λ ≈ %{x:.3g}<br>density %{y:.3g}<extra></extra>",
        )
    )
    lo, hi = scalars.get("mp_lambda_minus"), scalars.get("mp_lambda_plus")
    if lo is not None and hi is not None and hi > lo >= 0:
        r = math.sqrt(hi / lo) if lo > 0 else float("inf")
        sq = (r - 1) / (r + 1) if math.isfinite(r) else 1.0  # √q from the two edges
        var = hi / (1 + sq) ** 2
        lam = np.linspace(lo, hi, 300)[1:-1]
        density = np.sqrt(np.clip((hi - lam) * (lam - lo), 0, None)) / (
            2 * math.pi * var * max(sq**2, 1e-12) * lam
        )
        fig.add_trace(
            go.Scatter(x=lam, y=density, name="Marchenko–Pastur", line={"color": "#e45756", "width": 2})
        )
        for edge, label in ((lo, "λ−"), (hi, "λ+")):
            fig.add_vline(x=edge, line={"color": "#e45756", "dash": "dot", "width": 1}, annotation_text=label)
    alpha, se = scalars.get("esd_alpha"), scalars.get("esd_alpha_se")
    if alpha is not None:
        title += f" · α = {alpha:.2f} ± {se:.2f}" if se is not None else f" · α = {alpha:.2f}"
    fig.update_xaxes(title_text=axis_title("spectra.esd_eigenvalue"))
    fig.update_yaxes(title_text="density")
    return style(fig, title)


def alpha_figure(frame: pd.DataFrame, *, xscale: str = "log", cursor: int | None = None) -> go.Figure:
    """Power-law exponent α of each weight matrix's ESD over checkpoints, ± its standard error."""
    if not len(frame):
        return empty_figure("no power-law fits (spectra not measured, or matrices too small)")
    wide = (
        frame.pivot_table(
            index=["matrix", "layer", "checkpoint"], columns="quantity", values="value", dropna=False
        )
        .reset_index()
        .dropna(subset=["esd_alpha"])
    )
    traces: list[dict[str, Any]] = []
    keys = ["matrix", "layer", "checkpoint"]
    spread = _intervals_of(frame, "esd_alpha", keys)
    groups = wide.groupby(["matrix", "layer"], sort=True, dropna=False)
    # Error bars are one SVG node per point: with many lines they are in the hover text only.
    bars = groups.ngroups <= ALPHA_BARS_LINES
    for (matrix, layer), rows in groups:
        name = f"{matrix}" + ("" if pd.isna(layer) else f" L{int(layer)}")
        rows = rows.sort_values("checkpoint")
        alpha = rows["esd_alpha"].to_numpy(dtype=float)
        se = (
            rows["esd_alpha_se"].to_numpy(dtype=float)
            if "esd_alpha_se" in rows
            else np.full(len(rows), np.nan)
        )
        # The bootstrap's 95% interval where the fit has one (ci_lo/ci_hi of esd_alpha), else ± the
        # asymptotic standard error (esd_alpha_se); the hover gives both.
        lo, hi, is_ci = _aligned(spread, pd.MultiIndex.from_frame(rows[keys]))
        lo, hi = np.where(is_ci, lo, alpha - se), np.where(is_ci, hi, alpha + se)
        traces.append(
            {
                "type": "scatter",
                "x": step_axis(rows["checkpoint"], xscale),
                "y": alpha,
                "name": name,
                "mode": "lines+markers" if len(rows) <= MARKER_POINTS else "lines",
                "customdata": np.c_[rows["checkpoint"].to_numpy(dtype=float), se],
                "text": np.where(is_ci, interval_text(lo, hi, is_ci, alpha), ""),
                "error_y": error_bars(alpha, lo, hi, visible=bars),
                "hovertemplate": f"{name} · step %{{customdata[0]}}<br>α = %{{y:.3g}}%{{text}}"
                " ± %{customdata[1]:.2g} (asymptotic se)<extra></extra>",
            }
        )
    fig = fast_figure(traces)
    band = {"type": "rect", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": 2, "y1": 6}
    add_shapes(fig, [{**band, "fillcolor": "#59a14f", "opacity": 0.06, "line": {"width": 0}}])
    mark_steps(fig, xscale, wide["checkpoint"].unique().tolist(), None, cursor)
    checkpoint_axis(fig, xscale, wide["checkpoint"].unique())
    fig.update_yaxes(title_text="ESD tail exponent α (shaded: 2–6)")
    what = "bootstrap 95% interval" if len(spread) else "± standard error"
    return style(fig, f"Power-law α per weight matrix ({what})")


def surface_figure(frame: pd.DataFrame, checkpoint: int) -> go.Figure:
    """Loss surface around a checkpoint: contours over (x, y), or a line over x for a 1-d slice."""
    if frame["y"].notna().any() if "y" in frame else False:
        grid = frame.pivot_table(index="y", columns="x", values="value")
        fig = go.Figure(
            go.Contour(
                z=grid.to_numpy(),
                x=grid.columns,
                y=grid.index,
                colorscale="Viridis",
                colorbar={"title": {"text": axis_title("landscape.loss_surface")}},
                hovertemplate="a %{x:.2f}, b %{y:.2f}<br>loss %{z:.4f}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[0],
                y=[0],
                mode="markers",
                marker={"symbol": "x", "size": 10, "color": "white"},
                name=f"step {checkpoint}",
            )
        )
        fig.update_yaxes(title_text="direction 2 (filter-normalised units)")
    else:
        rows = frame.sort_values("x")
        fig = go.Figure(go.Scatter(x=rows["x"], y=rows["value"], mode="lines", name="loss"))
        fig.update_yaxes(title_text="loss (nats)")
    fig.update_xaxes(title_text="direction 1 (filter-normalised units)")
    return style(fig, f"Loss surface around step {checkpoint}", height=460)
