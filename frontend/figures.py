"""Pure figure builders: tidy DataFrame slices in, ``plotly.graph_objects.Figure`` out.

No I/O and no Dash here, so every builder is unit-tested without a browser. Conventions shared by
all figures: one colour per (layer, head) everywhere (hue by layer, shade by head), checkpoint axes
titled "training step" with a log option (step 0 drawn at half the first positive step, its hover
still says 0), axis titles with units, and ``uirevision`` set so zoom survives updates.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from frontend.downsample import column_indices, line_indices
from phasescope.measures import quantities

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
    "log_ticks",
    "overview_figure",
    "pattern_figure",
    "profile_figure",
    "step_axis",
]

WEBGL_POINTS = 4000  # above this many points a line plot switches to WebGL (Scattergl)
MARKER_POINTS = 60  # lines with more points than this are drawn without markers
FONT = {"family": "Inter, Segoe UI, Helvetica, Arial, sans-serif", "size": 12}


class _Labels(Mapping[str, str]):
    """Axis titles by ``"measure.quantity"`` (label and unit), read from the measure registry on each
    access, so a measure registered after this module was imported has its titles too."""

    def _titles(self) -> dict[str, str]:
        return {key: quantity.title for key, quantity in quantities()}

    def __getitem__(self, key: str) -> str:
        return self._titles()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._titles())

    def __len__(self) -> int:
        return len(self._titles())


LABELS: Mapping[str, str] = _Labels()
"""``LABELS.get("thermo.beta_star", fallback)``: every declared quantity's axis title."""


def head_label(layer: Any, head: Any) -> str:
    return f"L{int(layer)}H{int(head)}"


def head_color(layer: int, head: int, n_layers: int, n_heads: int) -> str:
    """A layer's hue, a head's lightness: the same (layer, head) has the same colour in every plot."""
    hue = (0.58 + 0.38 * layer / max(1, n_layers)) % 1.0 if n_layers <= 3 else layer / max(1, n_layers)
    if n_layers == 2:
        hue = (0.6, 0.07)[layer % 2]  # blue and orange read apart best
    light = 0.32 + 0.36 * head / max(1, n_heads - 1) if n_heads > 1 else 0.45
    r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
    return f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"


def step_axis(steps: Sequence[int] | np.ndarray, xscale: str) -> np.ndarray:
    """Plot positions of training steps: on a log axis step 0 sits at half the first positive step."""
    x = np.asarray(steps, dtype=float)
    if xscale == "log" and len(x) and (x <= 0).any():
        positive = x[x > 0]
        x = np.where(x > 0, x, (positive.min() / 2) if len(positive) else 0.5)
    return x


@functools.cache
def _template_json() -> str:
    import json

    import plotly.io as pio

    return json.dumps({"layout": pio.templates["plotly_white"].to_plotly_json()["layout"]})


def _template() -> dict[str, Any]:
    """plotly_white's layout part as a plain dict: a figure built without validation does not expand a
    template's name, and the per-trace defaults (its "data" part) cost ~100 ms to set per figure."""
    import json

    return json.loads(_template_json())


def fast_figure(traces: list[dict[str, Any]], layout: dict[str, Any] | None = None) -> go.Figure:
    """A Figure from plain trace and layout dicts, built without plotly's per-property validation.

    Validating costs about 5 ms per trace (a tab of 50 lines spent seconds there, docs/dashboard.md
    "Large analyses"); the builders here write only known properties, and tests/unit/test_figures.py
    checks what they produce. The result is an ordinary ``go.Figure`` (``fig.data[i].x``, ``fig.layout``).
    """
    # Our template wins over one in ``layout`` (make_subplots' grids carry plotly's default). The data
    # revision is a digest of the traces: Plotly.react then redraws a figure only when its data
    # changed, not when only a shape moved (a checkpoint-slider step moves the cursor line of every
    # figure over checkpoints; without it each one is recomputed and redrawn from scratch).
    full = {**(layout or {}), "template": _template(), "datarevision": _digest(traces)}
    return go.Figure(data=traces, layout=full, _validate=False)


def _digest(value: Any, h: Any = None) -> str:
    """A short content hash of nested dicts, lists and numpy arrays (the traces of a figure)."""
    import hashlib

    top = h is None
    h = h or hashlib.blake2b(digest_size=12)
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(str(key).encode())
            _digest(value[key], h)
    elif isinstance(value, np.ndarray) and value.dtype != object:
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple, np.ndarray)):
        h.update(b"[")
        for item in value:
            _digest(item, h)
        h.update(b"]")
    else:
        h.update(repr(value).encode())
    return h.hexdigest() if top else ""


def _vline(x: float, axis: str = "", line: dict[str, Any] | None = None) -> dict[str, Any]:
    """A vertical line over the whole height of the subplot on axes ``x<axis>``/``y<axis>`` (a shape)."""
    return {
        "type": "line",
        "xref": f"x{axis}",
        "yref": f"y{axis} domain",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": line or {},
    }


def _add_shapes(fig: go.Figure, shapes: list[dict[str, Any]]) -> None:
    if shapes:
        fig.update_layout(shapes=[*fig.layout.shapes, *shapes])


def _style(fig: go.Figure, title: str | None = None, height: int = 360) -> go.Figure:
    if title:  # (a title set to None cannot be updated later on a figure built without validation)
        fig.update_layout(title={"text": title, "x": 0.01, "font": {"size": 14}})
    if fig._validate:  # a fast_figure has its template already (setting it again walks every key)
        fig.update_layout(template="plotly_white")
    fig.update_layout(
        font=FONT,
        height=height,
        margin={"l": 60, "r": 20, "t": 40 if title else 16, "b": 48},
        legend={"font": {"size": 10}, "itemsizing": "constant"},
        hovermode="closest",
        uirevision="keep",
    )
    return fig


def empty_figure(message: str, height: int = 240) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(
        text=message,
        showarrow=False,
        font={"size": 14, "color": "#667"},
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, height=height)


def _scatter(n_points: int) -> type:
    return go.Scattergl if n_points > WEBGL_POINTS else go.Scatter


def _mark_steps(
    fig: go.Figure,
    xscale: str,
    steps: Sequence[int],
    transition: dict[str, Any] | None,
    cursor: int | None,
    row: Any = None,
) -> None:
    """The detected transition (line, band) and the checkpoint cursor on a checkpoint axis.

    ``row``: the subplot's row in a one-column grid (its axes are ``x<row>``, ``y<row>``); None: one plot.
    Shapes are written as dicts (``add_vline(row=...)`` spends ~50 ms finding the subplot's axes).
    """
    axis = "" if row in (None, 1) else str(row)
    shapes: list[dict[str, Any]] = []
    if transition and transition.get("step") is not None:
        at = float(step_axis([transition["step"]], xscale)[0])
        lo, hi = transition.get("lo"), transition.get("hi")
        if lo is not None and hi is not None and hi > lo:
            x0, x1 = step_axis([lo, hi], xscale)
            band = {**_vline(float(x0), axis), "type": "rect", "x1": float(x1), "line": {"width": 0}}
            shapes.append({**band, "fillcolor": "#d62728", "opacity": 0.08})
        shapes.append(_vline(at, axis, {"color": "#d62728", "dash": "dash", "width": 2}))
    if cursor is not None and len(steps):
        at = float(step_axis([cursor], xscale)[0])
        # Named, so a slider step moves it in the browser (frontend/assets/slider.js) with no redraw.
        shapes.append({**_vline(at, axis, {"color": "#444", "width": 1, "dash": "dot"}), "name": "cursor"})
    _add_shapes(fig, shapes)


def log_ticks(steps: Sequence[int] | np.ndarray) -> tuple[list[float], list[str]]:
    """Tick positions and labels for a log step axis: 1-2-5 per decade, and "0" where step 0 is drawn.

    >>> log_ticks([0, 25, 100, 1000])[1]
    ['0', '50', '100', '200', '500', '1000']
    """
    raw = np.asarray(steps, dtype=float)
    x = step_axis(raw, "log")
    positive = raw[raw > 0]
    if not len(positive):
        return [], []
    lo, hi = positive.min(), positive.max()
    vals = [
        m * 10.0**k
        for k in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1)
        for m in (1, 2, 5)
        if lo / 1.01 <= m * 10.0**k <= hi * 1.01
    ]
    texts = [f"{v:g}" for v in vals]
    if (raw <= 0).any():
        vals, texts = [float(x[raw <= 0][0]), *vals], ["0", *texts]
    return vals, texts


def _checkpoint_axis(
    fig: go.Figure, xscale: str, steps: Sequence[int] | None = None, axis: str | None = None, **kw: Any
) -> None:
    """Title, scale and log ticks of a checkpoint axis: every x axis, or the one named by ``axis``."""
    ticks: dict[str, Any] = {}
    if xscale == "log" and steps is not None and len(steps):
        vals, texts = log_ticks(steps)
        ticks = {"tickvals": vals, "ticktext": texts}
    if axis is not None:
        kind = "log" if xscale == "log" else "linear"
        fig.update_layout({axis: {"title": {"text": "training step"}, "type": kind, **ticks}})
        return
    fig.update_xaxes(title_text="training step", type="log" if xscale == "log" else "linear", **ticks, **kw)


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
        for name, rows in loss[loss["quantity"].str.startswith("loss")].groupby("quantity", sort=True):
            if name == "loss_se":
                continue
            rows = rows.sort_values("checkpoint")
            x = step_axis(rows["checkpoint"], xscale)
            values = rows["value"].to_numpy(dtype=float)
            se = (
                loss[loss["quantity"] == "loss_se"].set_index("checkpoint")["value"]
                if name == "loss"
                else None
            )
            if se is not None and len(se):
                band = rows["checkpoint"].map(se).fillna(0).to_numpy(dtype=float)
                traces.append(
                    {
                        "type": "scatter",
                        "x": np.r_[x, x[::-1]],
                        "y": np.r_[values + band, (values - band)[::-1]],
                        "fill": "toself",
                        "fillcolor": "rgba(40,40,40,0.15)",
                        "line": {"width": 0},
                        "hoverinfo": "skip",
                        "showlegend": False,
                        "xaxis": "x",
                        "yaxis": "y",
                    }
                )
            traces.append(
                {
                    "type": "scatter",
                    "x": x,
                    "y": values,
                    "name": str(name),
                    "mode": "lines+markers",
                    "marker": {"size": 4},
                    "customdata": rows["checkpoint"].to_numpy(),
                    "hovertemplate": "step %{customdata}<br>%{y:.4f} nats<extra>" + str(name) + "</extra>",
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
        traces.append(
            {
                "type": "heatmap",
                "z": z,
                "x": step_axis(cols, xscale),
                "y": labels,
                "colorscale": "Viridis",
                "customdata": np.broadcast_to(cols, z.shape),
                "colorbar": {
                    "title": {"text": LABELS.get(quantity, quantity), "side": "right"},
                    "len": 0.7,
                    "y": 0.35,
                },
                "hovertemplate": "%{y} · step %{customdata}<br>%{z:.4g}<extra></extra>",
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
    fig = fast_figure(traces, layout)
    for row in (1, 2):
        _mark_steps(fig, xscale, steps, transition, cursor, row=row)
    _checkpoint_axis(fig, xscale, steps, axis="xaxis2")
    _checkpoint_axis(fig, xscale, steps, axis="xaxis")
    fig.update_layout(xaxis_title_text=None)
    n_heads = len(order.groupby(["layer", "head"])) if len(order) else 4
    return _style(fig, height=max(460, min(900, 200 + 14 * n_heads)))


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
        error: optional ± error per row of ``frame`` (same index), drawn as error bars.
    """
    if not len(frame):
        return empty_figure("no data for this selection")
    kind = "scattergl" if len(frame) > WEBGL_POINTS else "scatter"
    marked = [v for v in (cursor, (transition or {}).get("step")) if v is not None and x == "checkpoint"]
    traces = []
    for (layer, head), rows in frame.groupby(["layer", "head"], sort=True, dropna=False):
        rows = rows.sort_values(x)
        raw = rows[x].to_numpy(dtype=float)
        values = rows["value"].to_numpy(dtype=float)
        # A long line keeps its extremes and the marked steps, not every point (frontend/downsample.py).
        kept = line_indices(raw, values, keep_x=marked)
        has_head = not (pd.isna(layer) or pd.isna(head))
        name = head_label(layer, head) if has_head else ("all" if pd.isna(layer) else f"L{int(layer)}")
        color = head_color(int(layer), int(head), *shape) if has_head else None
        trace: dict[str, Any] = {
            "type": kind,
            "x": step_axis(raw[kept], xscale) if x == "checkpoint" else raw[kept],
            "y": values[kept],
            "name": name,
            # A marker is one SVG node per point: on long lines they cost the browser more than they show.
            "mode": "lines+markers" if len(kept) <= MARKER_POINTS else "lines",
            "marker": {"size": 4, "color": color},
            "line": {"color": color, "width": 1.5},
            "customdata": raw[kept],
            "hovertemplate": f"{name} · {x} %{{customdata}}<br>%{{y:.4g}}<extra></extra>",
        }
        if error is not None:
            err = error.loc[rows.index].to_numpy(dtype=float)[kept]
            trace["error_y"] = {"type": "data", "array": err, "visible": True}
        traces.append(trace)
    fig = fast_figure(traces)
    if x == "checkpoint":
        _mark_steps(fig, xscale, frame["checkpoint"].unique().tolist(), transition, cursor)
        _checkpoint_axis(fig, xscale, frame["checkpoint"].unique())
    fig.update_xaxes(title_text=xtitle, type="log" if xscale == "log" else "linear")
    fig.update_yaxes(title_text=ytitle, type="log" if yscale == "log" else "linear")
    return _style(fig, title)


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
    return _style(fig, title, height=620)


def compare_figure(
    series: dict[str, pd.DataFrame], ytitle: str, *, xscale: str = "log", yscale: str = "linear"
) -> go.Figure:
    """Two (or more) analyses' curves on one checkpoint axis; each frame has ``checkpoint, value``."""
    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, (label, frame) in enumerate(series.items()):
        rows = frame.sort_values("checkpoint")
        fig.add_trace(
            go.Scatter(
                x=step_axis(rows["checkpoint"], xscale),
                y=rows["value"],
                name=label,
                mode="lines+markers",
                line={"color": palette[i % 4]},
                customdata=rows["checkpoint"],
                hovertemplate=f"{label}<br>step %{{customdata}}: %{{y:.4g}}<extra></extra>",
            )
        )
    if not series:
        return empty_figure("choose two analyses to compare")
    _checkpoint_axis(
        fig, xscale, np.unique(np.concatenate([f["checkpoint"].to_numpy() for f in series.values()]))
    )
    fig.update_yaxes(title_text=ytitle, type="log" if yscale == "log" else "linear")
    return _style(fig, None, height=460)
