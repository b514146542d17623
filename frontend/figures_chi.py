"""The overview's susceptibility view: an order parameter m(t) over training with its interval band, and
its susceptibility χ(t) below it on the same step axis (DataFrame slices and findings in, a Figure out).

χ is the ``<q>_chi`` quantity the measures write (docs/measures.md, "Uncertainties and susceptibility"),
with its bootstrap standard error over prompts (``se``) and 95% interval (``ci_lo``, ``ci_hi``); the
bands are drawn as every figure draws them (frontend.plotting.row_intervals). What the findings say about it is drawn, never
recomputed: the transition windows of the same series are shaded and each reported χ peak
(``findings["susceptibility"]``) is marked at its step with its 95% interval as a horizontal bar, filled
when it is significant, open when it is not.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from frontend.figures import line_traces
from frontend.plotting import (
    LABELS,
    empty_figure,
    fast_figure,
    log_ticks,
    step_axis,
    step_shapes,
    style,
)

__all__ = ["WINDOW_COLOR", "chi_peaks", "order_chi_figure", "transition_windows"]

WINDOW_COLOR = "#ff9f1c"  # the transition windows' shading (the marked transition stays red)


def _same_quantity(name: Any, quantity: str) -> bool:
    """Whether a findings entry's ``quantity`` names ``quantity`` ("induction_score", its χ, or
    "heads.induction_score")."""
    name = str(name or "")
    short = quantity.split(".")[-1]
    return name in (short, f"{short}_chi", quantity, f"{quantity}_chi")


def _selected(entry: dict[str, Any], heads: set[tuple[Any, Any]] | None) -> bool:
    """Whether an entry's (layer, head) is among the plotted ones (None: a scalar series, all match)."""
    if heads is None:
        return True
    return (entry.get("layer"), entry.get("head")) in heads


def _heads(order: pd.DataFrame) -> set[tuple[Any, Any]] | None:
    if not len(order) or order["layer"].isna().all():
        return None
    pairs = order[["layer", "head"]].drop_duplicates().itertuples(index=False)
    return {(int(a), None if pd.isna(b) else int(b)) for a, b in pairs}


def transition_windows(
    findings: dict[str, Any] | None, quantity: str, order: pd.DataFrame
) -> list[dict[str, Any]]:
    """The findings' transitions of ``quantity`` among the plotted series: their windows to shade."""
    heads = _heads(order)
    out = []
    for t in (findings or {}).get("transitions") or []:
        if _same_quantity(t.get("quantity"), quantity) and _selected(t, heads):
            if t.get("window_lo") is not None and t.get("window_hi") is not None:
                out.append(t)
    return out


def chi_peaks(findings: dict[str, Any] | None, quantity: str, order: pd.DataFrame) -> list[dict[str, Any]]:
    """The findings' χ-peak reports (``findings["susceptibility"]``) of ``quantity`` among the plotted series."""
    heads = _heads(order)
    return [
        p
        for p in (findings or {}).get("susceptibility") or []
        if _same_quantity(p.get("quantity"), quantity)
        and _selected(p, heads)
        and p.get("peak_step") is not None
    ]


@functools.cache
def _grid_layout() -> str:
    import json

    grid = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.5, 0.5], vertical_spacing=0.06)
    return json.dumps(grid.layout.to_plotly_json())


def _grid() -> dict[str, Any]:
    """Two rows sharing the step axis (m above, χ below), as a fresh layout dict (built once)."""
    import json

    return json.loads(_grid_layout())


def _num(value: Any, fmt: str = ".0f") -> str:
    return "?" if value is None or pd.isna(value) else format(float(value), fmt)


def _peak_trace(peak: dict[str, Any], xscale: str) -> dict[str, Any]:
    """One χ peak on the χ row: at its step and value, its 95% interval a horizontal bar."""
    at, lo, hi = (peak.get(k) for k in ("peak_step", "peak_ci_lo", "peak_ci_hi"))
    x = float(step_axis([at], xscale)[0])
    has_ci = lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi))
    x_lo, x_hi = (float(v) for v in step_axis([lo, hi], xscale)) if has_ci else (x, x)
    significant = bool(peak.get("significant"))
    where = {True: "inside the transition window", False: "outside the transition window"}.get(
        peak.get("in_window"), "no transition in this series"
    )
    who = (
        ""
        if peak.get("layer") is None
        else f"L{peak['layer']}" + ("" if peak.get("head") is None else f"H{peak['head']}")
    )
    text = (
        f"χ peak {who} at step {_num(at)} [{_num(lo)}, {_num(hi)}] (95%)<br>"
        f"χ = {_num(peak.get('peak_value'), '.3g')} ± {_num(peak.get('peak_se'), '.2g')} (se), "
        f"baseline {_num(peak.get('baseline'), '.3g')}<br>"
        f"{'significant' if significant else 'not significant'}; {where}"
    )
    return {
        "type": "scatter",
        "x": [x],
        "y": [peak.get("peak_value")],
        "mode": "markers",
        "name": "χ peak" + (f" {who}" if who else ""),
        "showlegend": False,
        "marker": {
            "symbol": "star" if significant else "circle-open",
            "size": 13,
            "color": "#d62728" if significant else "#555",
            "line": {"width": 1, "color": "#222"},
        },
        "error_x": {
            "type": "data",
            "symmetric": False,
            "array": [max(0.0, x_hi - x)],
            "arrayminus": [max(0.0, x - x_lo)],
            "visible": has_ci,
            "color": "#d62728" if significant else "#555",
            "thickness": 1.5,
        },
        "hovertemplate": text + "<extra></extra>",
        "xaxis": "x2",
        "yaxis": "y2",
    }


def _window_shapes(windows: Sequence[dict[str, Any]], xscale: str, rows: int) -> list[dict[str, Any]]:
    shapes = []
    for t in windows:
        x0, x1 = (float(v) for v in step_axis([t["window_lo"], t["window_hi"]], xscale))
        for row in range(1, rows + 1):
            axis = "" if row == 1 else str(row)
            shapes.append(
                {
                    "type": "rect",
                    "xref": f"x{axis}",
                    "yref": f"y{axis} domain",
                    "x0": x0,
                    "x1": x1,
                    "y0": 0,
                    "y1": 1,
                    "fillcolor": WINDOW_COLOR,
                    "opacity": 0.1,
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
    return shapes


def _axis_titles(measure: str, short: str) -> tuple[str, str]:
    """Short y titles for the two rows (the figure's title carries the registry's full one): the
    quantity's short name or label with its unit, and "χ" with χ's unit."""
    from phasescope.measures import quantities

    declared = dict(quantities(measures_run=[measure])) if measure else {}
    q, chi = declared.get(f"{measure}.{short}"), declared.get(f"{measure}.{short}_chi")
    name = (q.short or q.label) if q is not None else short
    m_axis = f"{name} ({q.unit})" if q is not None and q.unit and len(q.unit) <= 12 else name
    chi_axis = f"χ ({chi.unit})" if chi is not None and chi.unit else "χ"
    return m_axis, chi_axis


def order_chi_figure(
    order: pd.DataFrame,
    chi: pd.DataFrame | None,
    quantity: str,
    *,
    findings: dict[str, Any] | None = None,
    transition: dict[str, Any] | None = None,
    cursor: int | None = None,
    xscale: str = "log",
    yscale: str = "linear",
    shape: tuple[int, int] = (1, 1),
) -> go.Figure:
    """m(t) per series with its interval band, and χ(t) with its se band below, sharing the step axis.

    Args:
        order: rows ``checkpoint, layer, head, value`` (and ``se``/``ci_lo``/``ci_hi``) of the order
            parameter ``quantity``.
        chi: rows of its susceptibility ``<q>_chi`` (same dims, ``se`` its bootstrap standard error);
            None when no χ is declared for the quantity, empty when the analysis has no χ rows: then
            m(t) alone, with a note saying which.
        quantity: ``measure.quantity`` of ``order`` (titles, and which findings belong to it).
        findings: the analysis's findings: the transition windows of this quantity are shaded and its
            χ-peak reports marked (peak step with its 95% interval, significance in the hover).
        transition: the marked transition (``frontend.data.transition``): its line on both rows.
        cursor: the checkpoint the slider is on.
        xscale, yscale: "log" or "linear".
        shape: ``(n_layers, n_heads)`` for the colours.
    """
    if not len(order):
        return empty_figure("no data for this selection")
    label = LABELS.get(quantity, quantity)
    measure, short = quantity.split(".") if "." in quantity else ("", quantity)
    m_axis, chi_axis = _axis_titles(measure, short)
    has_chi = chi is not None and len(chi) > 0
    marked = [v for v in (cursor, (transition or {}).get("step")) if v is not None]
    steps = sorted(order["checkpoint"].unique().tolist())
    traces = line_traces(order, xscale=xscale, shape=shape, marked=marked)
    windows = transition_windows(findings, quantity, order)
    annotations: list[dict[str, Any]] = []
    if has_chi:
        assert chi is not None
        chi = chi.dropna(subset=["value"])
        traces += line_traces(chi, xscale=xscale, shape=shape, marked=marked, axis="2", legend=False)
        traces += [_peak_trace(p, xscale) for p in chi_peaks(findings, quantity, order)]
        layout = _grid()
        layout["yaxis"] = {**layout["yaxis"], "title": {"text": m_axis}}
        layout["yaxis2"] = {**layout["yaxis2"], "title": {"text": chi_axis}}
        rows = 2
    else:
        layout = {"yaxis": {"title": {"text": m_axis}}}
        annotations.append(
            {
                "text": f"no susceptibility χ is computed for {short}"
                if chi is None
                else f"no susceptibility χ of {short} in this analysis (no {short}_chi rows: it ran before χ existed)",
                "x": 0.5,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"color": "#888"},
            }
        )
        rows = 1
    layout["annotations"] = [*layout.get("annotations", []), *annotations]
    # Every shape in the layout before the figure is built (adding them later validates each again).
    layout["shapes"] = _window_shapes(windows, xscale, rows) + [
        shape for row in range(1, rows + 1) for shape in step_shapes(xscale, steps, transition, cursor, row)
    ]
    ticks: dict[str, Any] = {}
    if xscale == "log":
        vals, texts = log_ticks(steps)
        ticks = {"tickvals": vals, "ticktext": texts}
    for row in range(1, rows + 1):
        suffix = "" if row == 1 else str(row)
        title = {"text": "training step"} if row == rows else None
        layout[f"xaxis{suffix}"] = {
            **layout.get(f"xaxis{suffix}", {}),
            "type": "log" if xscale == "log" else "linear",
            **ticks,
            **({"title": title} if title else {}),
        }
        layout[f"yaxis{suffix}"] = {
            **layout.get(f"yaxis{suffix}", {}),
            "type": "log" if yscale == "log" else "linear",
        }
    fig = fast_figure(traces, layout)
    title = label + (" and its susceptibility χ" if has_chi else "") + " · bands: 95% interval, else ± se"
    return style(fig, title, height=560 if has_chi else 360)
