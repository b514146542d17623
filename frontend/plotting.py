"""Figure primitives shared by every dashboard figure: labels, colours, step axes, the template,
figures built from plain dicts, the cursor and transition lines, and the intervals (bands, error bars).

``frontend.figures`` and ``frontend.figures_measures`` build the views from these. Conventions: one
colour per (layer, head) everywhere (hue by layer, shade by head), checkpoint axes titled "training
step" with a log option (step 0 drawn at half the first positive step, its hover still says 0).

Intervals: every figure draws a row's uncertainty the same way, from the tidy table's ``se``,
``ci_lo``, ``ci_hi`` columns (:func:`row_intervals`): its 95% interval where the row has one, else
value ± one standard error; lines get a translucent band (:func:`band_trace`), points and bars get
error bars (:func:`error_bars`), and every hover says which it is (:func:`interval_text`).
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from phasescope.measures import quantities

__all__ = [
    "BAND_LINES",
    "FONT",
    "LABELS",
    "MARKER_POINTS",
    "WEBGL_POINTS",
    "add_shapes",
    "band_trace",
    "checkpoint_axis",
    "digest",
    "empty_figure",
    "error_bars",
    "fast_figure",
    "head_color",
    "head_label",
    "interval_text",
    "log_ticks",
    "mark_steps",
    "row_intervals",
    "scatter_type",
    "step_axis",
    "step_shapes",
    "style",
    "translucent",
    "vline",
]

WEBGL_POINTS = 4000  # above this many points a line plot switches to WebGL (Scattergl)
MARKER_POINTS = 60  # lines with more points than this are drawn without markers
FONT = {"family": "Inter, Segoe UI, Helvetica, Arial, sans-serif", "size": 12}
BAND_LINES = 24  # more lines than this in one figure: intervals in the hover text only, no bands


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
    full = {**(layout or {}), "template": _template(), "datarevision": digest(traces)}
    return go.Figure(data=traces, layout=full, _validate=False)


def digest(value: Any, h: Any = None) -> str:
    """A short content hash of nested dicts, lists and numpy arrays (the traces of a figure)."""
    import hashlib

    top = h is None
    h = h or hashlib.blake2b(digest_size=12)
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(str(key).encode())
            digest(value[key], h)
    elif isinstance(value, np.ndarray) and value.dtype != object:
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple, np.ndarray)):
        h.update(b"[")
        for item in value:
            digest(item, h)
        h.update(b"]")
    else:
        h.update(repr(value).encode())
    return h.hexdigest() if top else ""


def vline(x: float, axis: str = "", line: dict[str, Any] | None = None) -> dict[str, Any]:
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


def add_shapes(fig: go.Figure, shapes: list[dict[str, Any]]) -> None:
    if shapes:
        fig.update_layout(shapes=[*fig.layout.shapes, *shapes])


def style(fig: go.Figure, title: str | None = None, height: int = 360) -> go.Figure:
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
    return style(fig, height=height)


def scatter_type(n_points: int) -> type:
    return go.Scattergl if n_points > WEBGL_POINTS else go.Scatter


def step_shapes(
    xscale: str,
    steps: Sequence[int],
    transition: dict[str, Any] | None,
    cursor: int | None,
    row: Any = None,
) -> list[dict[str, Any]]:
    """The shapes :func:`mark_steps` draws, as dicts: put them in a layout before the figure is built
    (each ``update_layout(shapes=...)`` on a built figure validates every shape it already has)."""
    axis = "" if row in (None, 1) else str(row)
    shapes: list[dict[str, Any]] = []
    if transition and transition.get("step") is not None:
        at = float(step_axis([transition["step"]], xscale)[0])
        lo, hi = transition.get("lo"), transition.get("hi")
        if lo is not None and hi is not None and hi > lo:
            x0, x1 = step_axis([lo, hi], xscale)
            band = {**vline(float(x0), axis), "type": "rect", "x1": float(x1), "line": {"width": 0}}
            shapes.append({**band, "fillcolor": "#d62728", "opacity": 0.08})
        shapes.append(vline(at, axis, {"color": "#d62728", "dash": "dash", "width": 2}))
    if cursor is not None and len(steps):
        at = float(step_axis([cursor], xscale)[0])
        # Named, so a slider step moves it in the browser (frontend/assets/slider.js) with no redraw.
        shapes.append({**vline(at, axis, {"color": "#444", "width": 1, "dash": "dot"}), "name": "cursor"})
    return shapes


def mark_steps(
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
    add_shapes(fig, step_shapes(xscale, steps, transition, cursor, row))


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


def checkpoint_axis(
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


def row_intervals(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each row's interval from the tidy table's uncertainty columns, or None when no row has one.

    Args:
        frame: rows with ``value`` and any of ``se``, ``ci_lo``, ``ci_hi`` (a DataFrame).

    Returns:
        ``(lo, hi, is_ci)``, arrays over the rows: the 95% interval ``[ci_lo, ci_hi]`` where both are
        finite (``is_ci`` True), else ``value ± se`` where ``se`` is finite, else NaN.
    """
    columns = getattr(frame, "columns", ())
    if not len(frame) or not any(c in columns for c in ("se", "ci_lo", "ci_hi")):
        return None
    value = frame["value"].to_numpy(dtype=float)
    nan = np.full(len(value), np.nan)
    se = frame["se"].to_numpy(dtype=float) if "se" in columns else nan
    lo, hi = value - se, value + se
    ci_lo = frame["ci_lo"].to_numpy(dtype=float) if "ci_lo" in columns else nan
    ci_hi = frame["ci_hi"].to_numpy(dtype=float) if "ci_hi" in columns else nan
    is_ci = np.isfinite(ci_lo) & np.isfinite(ci_hi)
    lo, hi = np.where(is_ci, ci_lo, lo), np.where(is_ci, ci_hi, hi)
    if not np.isfinite(lo).any():
        return None
    return lo, hi, is_ci


def interval_text(lo: np.ndarray, hi: np.ndarray, is_ci: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Hover text per point: ``" [lo, hi] (95%)"``, ``" ± se"`` or ``""`` (no interval)."""
    out = []
    for a, b, ci, v in zip(lo, hi, is_ci, value, strict=True):
        if not (np.isfinite(a) and np.isfinite(b)):
            out.append("")
        elif ci:
            out.append(f" [{a:.4g}, {b:.4g}] (95%)")
        else:
            out.append(f" ± {(b - a) / 2:.2g} (se)" if np.isfinite(v) else "")
    return np.asarray(out, dtype=object)


def translucent(color: str | None, alpha: float = 0.18) -> str:
    """An ``rgb(...)`` (or ``#rrggbb``) colour as ``rgba`` with ``alpha``: a band in a line's colour."""
    if color and color.startswith("rgb("):
        return "rgba(" + color[4:-1] + f",{alpha})"
    if color and color.startswith("#") and len(color) == 7:
        r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r},{g},{b},{alpha})"
    return f"rgba(40,40,40,{alpha})"


def band_trace(
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    color: str | None = None,
    *,
    axis: str = "",
    group: str | None = None,
) -> dict[str, Any] | None:
    """A filled band from ``lo`` to ``hi`` along ``x`` (one closed polygon), or None when no point has
    a finite interval; points without one are left out of the band.

    Args:
        x: plot positions (already through :func:`step_axis` for a step axis).
        lo, hi: the interval's ends per point (:func:`row_intervals`).
        color: the line's colour; the band is it, translucent.
        axis: the subplot's axes suffix ("" for ``x``/``y``, "2" for ``x2``/``y2``).
        group: the line's legend group (the band hides with its line).
    """
    x, lo, hi = (np.asarray(v, dtype=float) for v in (x, lo, hi))
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    x, lo, hi = x[ok], lo[ok], hi[ok]
    trace: dict[str, Any] = {
        "type": "scatter",
        "x": np.r_[x, x[::-1]],
        "y": np.r_[hi, lo[::-1]],
        "fill": "toself",
        "fillcolor": translucent(color),
        "line": {"width": 0},
        "mode": "lines",
        "hoverinfo": "skip",
        "showlegend": False,
        "name": "interval",
        "xaxis": f"x{axis}",
        "yaxis": f"y{axis}",
    }
    if group is not None:
        trace["legendgroup"] = group
    return trace


def error_bars(value: np.ndarray, lo: np.ndarray, hi: np.ndarray, visible: bool = True) -> dict[str, Any]:
    """Plotly ``error_y`` (or ``error_x``) of asymmetric bars from ``lo`` to ``hi`` around ``value``."""
    value, lo, hi = (np.asarray(v, dtype=float) for v in (value, lo, hi))
    return {
        "type": "data",
        "symmetric": False,
        "array": np.clip(hi - value, 0, None),
        "arrayminus": np.clip(value - lo, 0, None),
        "visible": visible,
        "thickness": 1,
    }
