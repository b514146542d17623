"""Figures of a seed ensemble (``GET /api/v1/ensembles``): the collapse, the raw curves, the steps.

Each takes one layer of the API's answer (``EnsembleLayer`` as a dict) and ``names``, the label to
show for each analysis id (its model string, e.g. ``zoo:induction-2l-seed3``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from frontend.plotting import LABELS, checkpoint_axis, empty_figure, step_axis, style

__all__ = ["collapse_figure", "raw_figure", "steps_figure"]

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _color(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _by_seed(points: dict[str, list[Any]]) -> dict[str, dict[str, np.ndarray]]:
    ids = np.asarray(points.get("id", []))
    out = {}
    for aid in dict.fromkeys(ids.tolist()):
        mask = ids == aid
        out[aid] = {k: np.asarray(v, dtype=float)[mask] for k, v in points.items() if k != "id"}
    return out


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def collapse_figure(layer: dict[str, Any], names: dict[str, str], quantity: str) -> go.Figure:
    """Every seed's normalised series against ``u = (ln t − ln t*) / w``, over the logistic σ(u)."""
    seeds = _by_seed(layer["points"])
    if not seeds:
        return empty_figure("no seed has a transition of this quantity: nothing to collapse")
    fig = go.Figure()
    u = np.linspace(-6, 6, 121)
    fig.add_trace(
        go.Scatter(
            x=u,
            y=1 / (1 + np.exp(-u)),
            name="σ(u)",
            mode="lines",
            line={"color": "#bbb", "width": 6},
            hoverinfo="skip",
        )
    )
    for i, (aid, cols) in enumerate(seeds.items()):
        order = np.argsort(cols["u"])
        fig.add_trace(
            go.Scatter(
                x=cols["u"][order],
                y=cols["m_norm"][order],
                name=names.get(aid, aid[:8]),
                mode="lines+markers",
                marker={"size": 5},
                line={"color": _color(i), "width": 1.5},
                customdata=cols["checkpoint"][order],
                hovertemplate=f"{names.get(aid, aid[:8])}<br>step %{{customdata}}<br>u %{{x:.2f}}, "
                "m̃ %{y:.3f}<extra></extra>",
            )
        )
    if layer.get("u_range"):
        lo, hi = layer["u_range"]
        fig.add_vrect(x0=lo, x1=hi, fillcolor="#888", opacity=0.06, line_width=0)
    fig.update_xaxes(title_text="u = (ln t − ln t*) / w", range=[-8, 8])
    fig.update_yaxes(title_text=f"normalised {LABELS.get(quantity, quantity)}  (m − before)/(after − before)")
    title = (
        f"Collapse: Q = {_num(layer.get('collapse_quality'))} "
        f"(uncollapsed {_num(layer.get('uncollapsed_quality'))})"
    )
    return style(fig, title, height=420)


def raw_figure(layer: dict[str, Any], names: dict[str, str], quantity: str, xscale: str = "log") -> go.Figure:
    """Every seed's series against the training step, each seed's t* marked."""
    seeds = _by_seed(layer["points"])
    if not seeds:
        return empty_figure("no seed has a transition of this quantity")
    fig = go.Figure()
    t_star = {s["id"]: s.get("t_star") for s in layer["seeds"]}
    steps = []
    for i, (aid, cols) in enumerate(seeds.items()):
        order = np.argsort(cols["checkpoint"])
        x = step_axis(cols["checkpoint"][order], xscale)
        steps.append(cols["checkpoint"])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=cols["value"][order],
                name=names.get(aid, aid[:8]),
                mode="lines+markers",
                marker={"size": 4},
                line={"color": _color(i), "width": 1.5},
                hovertemplate="step %{x}: %{y:.4g}<extra></extra>",
            )
        )
        if t_star.get(aid):
            fig.add_vline(x=t_star[aid], line={"color": _color(i), "dash": "dot", "width": 1})
    checkpoint_axis(fig, xscale, np.unique(np.concatenate(steps)))
    fig.update_yaxes(title_text=LABELS.get(quantity, quantity))
    return style(fig, "Uncollapsed: each seed's t* dotted", height=420)


def steps_figure(layer: dict[str, Any], names: dict[str, str]) -> go.Figure:
    """Each seed's transition step with its 95% interval (else ± 2 SD), and the ensemble's mean ± SD."""
    found = [s for s in layer["seeds"] if s.get("detected") and s.get("step") is not None]
    if not found:
        return empty_figure("no seed has a transition of this quantity")
    labels = [names.get(s["id"], s["id"][:8]) for s in found]
    step = np.array([s["step"] for s in found], dtype=float)
    sd = np.array([s.get("step_sd") or 0.0 for s in found], dtype=float)
    lo = np.array(
        [
            s["step_ci_lo"] if s.get("step_ci_lo") is not None else st - 2 * e
            for s, st, e in zip(found, step, sd, strict=True)
        ]
    )
    hi = np.array(
        [
            s["step_ci_hi"] if s.get("step_ci_hi") is not None else st + 2 * e
            for s, st, e in zip(found, step, sd, strict=True)
        ]
    )
    fig = go.Figure()
    mean, spread = layer.get("step_mean"), layer.get("step_sd")
    if mean is not None and spread is not None:
        fig.add_hrect(y0=mean - spread, y1=mean + spread, fillcolor="#1f77b4", opacity=0.08, line_width=0)
    if mean is not None:
        fig.add_hline(y=mean, line={"color": "#1f77b4", "dash": "dash", "width": 1})
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=step,
            mode="markers",
            name="step",
            marker={"size": 9, "color": [_color(i) for i in range(len(found))]},
            error_y={"type": "data", "symmetric": False, "array": hi - step, "arrayminus": step - lo},
            customdata=np.stack([lo, hi], axis=1),
            hovertemplate="%{x}<br>step %{y:.0f} [%{customdata[0]:.0f}, %{customdata[1]:.0f}]<extra></extra>",
        )
    )
    fig.update_yaxes(title_text="transition step")
    ratio = layer.get("spread_ratio")
    title = (
        f"Steps: mean {_num(mean, 4)}, SD {_num(spread, 3)} across seeds; "
        f"SD / per-seed error {_num(ratio, 3)}"
    )
    return style(fig, title, height=360)
