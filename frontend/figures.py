"""Pure figure builders: tidy DataFrame slices in, ``plotly.graph_objects.Figure`` out.

No I/O and no Dash here, so every builder is unit-tested without a browser. Conventions shared by
all figures: one colour per (layer, head) everywhere (hue by layer, shade by head), checkpoint axes
titled "training step" with a log option (step 0 drawn at half the first positive step, its hover
still says 0), axis titles with units, and ``uirevision`` set so zoom survives updates.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "LABELS",
    "WEBGL_POINTS",
    "curves_figure",
    "empty_figure",
    "head_color",
    "head_label",
    "log_ticks",
    "overview_figure",
    "pattern_figure",
    "profile_figure",
    "step_axis",
]

WEBGL_POINTS = 4000  # above this many points a line plot switches to WebGL (Scattergl)
FONT = {"family": "Inter, Segoe UI, Helvetica, Arial, sans-serif", "size": 12}

# Quantity → (axis title with unit, what it is in a few words).
LABELS: dict[str, str] = {
    "heads.induction_score": "induction score (attention mass, 0–1)",
    "heads.prev_token_score": "previous-token score (attention mass, 0–1)",
    "entropy.entropy_mean": "attention entropy S (nats)",
    "entropy.entropy_norm_mean": "normalised entropy S / ln n",
    "entropy.k90_mean": "k90 (keys holding 90% of mass)",
    "entropy.k90_frac_mean": "k90 / n (fraction of keys)",
    "entropy.hopfield_regime": "Hopfield regime (0 fixed, 1 metastable, 2 global)",
    "thermo.beta_star": "β* (peak of C(β), inverse temperature)",
    "thermo.heat_capacity_max": "max C(β) (nats)",
    "spectra.stable_rank": "stable rank ‖A‖²_F / σ₁²",
    "spectra.effective_rank": "effective rank exp H(σ)",
    "spectra.gap": "σ₁ − σ₂",
    "spectra.sigma_max": "σ₁ of attention matrix",
    "loss.loss": "loss (nats)",
    "loss.accuracy": "accuracy (fraction)",
}


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


def _style(fig: go.Figure, title: str | None = None, height: int = 360) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 14}} if title else None,
        template="plotly_white",
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
    fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": "#667"}, x=0.5, y=0.5,
                       xref="paper", yref="paper")  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, height=height)


def _scatter(n_points: int) -> type:
    return go.Scattergl if n_points > WEBGL_POINTS else go.Scatter


def _mark_steps(fig: go.Figure, xscale: str, steps: Sequence[int], transition: dict[str, Any] | None,
                cursor: int | None, row: Any = None) -> None:  # fmt: skip
    """The detected transition (line, band) and the checkpoint cursor on a checkpoint axis."""
    kw = {"row": row, "col": 1} if row is not None else {}
    if transition and transition.get("step") is not None:
        at = float(step_axis([transition["step"]], xscale)[0])
        lo, hi = transition.get("lo"), transition.get("hi")
        if lo is not None and hi is not None and hi > lo:
            x0, x1 = step_axis([lo, hi], xscale)
            fig.add_vrect(x0=x0, x1=x1, fillcolor="#d62728", opacity=0.08, line_width=0, **kw)
        fig.add_vline(x=at, line={"color": "#d62728", "dash": "dash", "width": 2}, **kw)
    if cursor is not None and len(steps):
        fig.add_vline(x=float(step_axis([cursor], xscale)[0]), line={"color": "#444", "width": 1, "dash": "dot"}, **kw)


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
    vals = [m * 10.0**k for k in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1)
            for m in (1, 2, 5) if lo / 1.01 <= m * 10.0**k <= hi * 1.01]  # fmt: skip
    texts = [f"{v:g}" for v in vals]
    if (raw <= 0).any():
        vals, texts = [float(x[raw <= 0][0]), *vals], ["0", *texts]
    return vals, texts


def _checkpoint_axis(fig: go.Figure, xscale: str, steps: Sequence[int] | None = None, **kw: Any) -> None:
    ticks: dict[str, Any] = {}
    if xscale == "log" and steps is not None and len(steps):
        vals, texts = log_ticks(steps)
        ticks = {"tickvals": vals, "ticktext": texts}
    fig.update_xaxes(title_text="training step", type="log" if xscale == "log" else "linear", **ticks, **kw)


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
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.3, 0.7], vertical_spacing=0.04)
    steps: list[int] = sorted(order["checkpoint"].unique().tolist()) if len(order) else []
    if loss is not None and len(loss):
        for name, rows in loss[loss["quantity"].str.startswith("loss")].groupby("quantity", sort=True):
            if name == "loss_se":
                continue
            rows = rows.sort_values("checkpoint")
            x = step_axis(rows["checkpoint"], xscale)
            se = loss[loss["quantity"] == "loss_se"].set_index("checkpoint")["value"] if name == "loss" else None
            if se is not None and len(se):
                band = rows["checkpoint"].map(se).fillna(0).to_numpy()
                fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[rows["value"] + band, (rows["value"] - band)[::-1]],
                                         fill="toself", fillcolor="rgba(40,40,40,0.15)", line={"width": 0},
                                         hoverinfo="skip", showlegend=False), row=1, col=1)  # fmt: skip
            fig.add_trace(go.Scatter(x=x, y=rows["value"], name=str(name), mode="lines+markers", marker={"size": 4},
                                     customdata=rows["checkpoint"],
                                     hovertemplate="step %{customdata}<br>%{y:.4f} nats<extra>" + str(name) + "</extra>"),
                          row=1, col=1)  # fmt: skip
        steps = steps or sorted(loss["checkpoint"].unique().tolist())
    else:
        fig.add_annotation(text="loss not measured in this analysis", x=0.5, y=0.5, xref="x domain", yref="y domain",
                           showarrow=False, font={"color": "#888"})  # fmt: skip
    if len(order):
        order = order.dropna(subset=["layer", "head"])
        grid = order.pivot_table(index=["layer", "head"], columns="checkpoint", values="value", aggfunc="mean")
        labels = [head_label(layer, head) for layer, head in grid.index]
        cols = grid.columns.to_numpy()
        fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=step_axis(cols, xscale), y=labels, colorscale="Viridis",
                                 customdata=np.broadcast_to(cols, grid.shape),
                                 colorbar={"title": {"text": LABELS.get(quantity, quantity), "side": "right"},
                                           "len": 0.7, "y": 0.35},
                                 hovertemplate="%{y} · step %{customdata}<br>%{z:.4g}<extra></extra>"),
                      row=2, col=1)  # fmt: skip
        fig.update_yaxes(autorange="reversed", title_text="layer · head", row=2, col=1)
    for row in (1, 2):
        _mark_steps(fig, xscale, steps, transition, cursor, row=row)
    if transition and transition.get("step") is not None:
        at = float(step_axis([transition["step"]], xscale)[0])
        fig.add_annotation(x=math.log10(at) if xscale == "log" else at, y=1, yref="y domain", xref="x",
                           text=transition.get("label") or f"transition ≈ step {transition['step']}", showarrow=False,
                           yanchor="bottom", font={"color": "#d62728"}, row=1, col=1)  # fmt: skip
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1)
    _checkpoint_axis(fig, xscale, steps, row=2, col=1)
    _checkpoint_axis(fig, xscale, steps, row=1, col=1)
    fig.update_xaxes(title_text=None, row=1, col=1)
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
    fig = go.Figure()
    if not len(frame):
        return empty_figure("no data for this selection")
    kind = _scatter(len(frame))
    for (layer, head), rows in frame.groupby(["layer", "head"], sort=True, dropna=False):
        rows = rows.sort_values(x)
        has_head = not (pd.isna(layer) or pd.isna(head))
        name = head_label(layer, head) if has_head else ("all" if pd.isna(layer) else f"L{int(layer)}")
        color = head_color(int(layer), int(head), *shape) if has_head else None
        xs = step_axis(rows[x], xscale) if x == "checkpoint" else rows[x].to_numpy(dtype=float)
        err = None if error is None else {"type": "data", "array": error.loc[rows.index].to_numpy(), "visible": True}
        fig.add_trace(kind(x=xs, y=rows["value"], name=name, mode="lines+markers", marker={"size": 4, "color": color},
                           line={"color": color, "width": 1.5}, error_y=err, customdata=rows[x],
                           hovertemplate=f"{name} · {x} %{{customdata}}<br>%{{y:.4g}}<extra></extra>"))  # fmt: skip
    if x == "checkpoint":
        _mark_steps(fig, xscale, frame["checkpoint"].unique().tolist(), transition, cursor)
        _checkpoint_axis(fig, xscale, frame["checkpoint"].unique())
    fig.update_xaxes(title_text=xtitle, type="log" if xscale == "log" else "linear")
    fig.update_yaxes(title_text=ytitle, type="log" if yscale == "log" else "linear")
    return _style(fig, title)


def profile_figure(frame: pd.DataFrame, checkpoint: int, shape: tuple[int, int], yscale: str = "linear") -> go.Figure:
    """Entropy per query position at one checkpoint, one line per head."""
    return curves_figure(frame, x="position", title=f"Entropy by position at step {checkpoint}",
                         ytitle="attention entropy S (nats)", xtitle="query position (token index)",
                         xscale="linear", yscale=yscale, shape=shape)  # fmt: skip


def pattern_figure(pattern: Sequence[Sequence[float]], tokens: Sequence[str], title: str) -> go.Figure:
    """One attention pattern, queries down and keys across, the tokens on both axes."""
    z = np.asarray(pattern, dtype=float)
    n = z.shape[0]
    ticks = [f"{i}:{t!s}"[:14] for i, t in enumerate(tokens[:n])]
    text = [[f"query {q} {tokens[q]!r} → key {k} {tokens[k]!r}" for k in range(n)] for q in range(n)] if n <= 128 else None
    fig = go.Figure(go.Heatmap(z=z, x=list(range(n)), y=list(range(n)), colorscale="Blues", zmin=0, zmax=1,
                               text=text, colorbar={"title": {"text": "attention p"}},
                               hovertemplate="%{text}<br>p = %{z:.3f}<extra></extra>"))  # fmt: skip
    step = max(1, n // 32)
    fig.update_xaxes(title_text="key (token)", tickvals=list(range(0, n, step)), ticktext=ticks[::step], tickangle=-60,
                     side="bottom", constrain="domain")  # fmt: skip
    fig.update_yaxes(title_text="query (token)", tickvals=list(range(0, n, step)), ticktext=ticks[::step],
                     autorange="reversed", scaleanchor="x")  # fmt: skip
    return _style(fig, title, height=620)


def thermo_figure(sweep: pd.DataFrame, stars: pd.DataFrame, shape: tuple[int, int], checkpoint: int,
                  beta: float = 1.0, yscale: str = "linear") -> go.Figure:  # fmt: skip
    """S(β), C(β), U(β), βF(β) per head at one checkpoint; β = 1 and the chosen β marked, β* on C.

    Args:
        sweep: rows ``layer, head, beta, quantity, value`` for entropy, heat_capacity, internal_energy, beta_f.
        stars: rows ``layer, head, quantity, value`` for beta_star, beta_star_censored, beta_star_bound.
    """
    panels = [("entropy", "S(β) (nats)"), ("heat_capacity", "C(β) (nats)"),
              ("internal_energy", "U(β) (score units)"), ("beta_f", "βF(β) = −ln Z")]  # fmt: skip
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in panels], horizontal_spacing=0.09,
                        vertical_spacing=0.14)  # fmt: skip
    if not len(sweep):
        return empty_figure("thermodynamics not measured in this analysis")
    star = stars.pivot_table(index=["layer", "head"], columns="quantity", values="value") if len(stars) else None
    for i, (quantity, _) in enumerate(panels):
        row, col = divmod(i, 2)
        rows_q = sweep[sweep["quantity"] == quantity]
        for (layer, head), rows in rows_q.groupby(["layer", "head"], sort=True):
            rows = rows.sort_values("beta")
            color = head_color(int(layer), int(head), *shape)
            name = head_label(layer, head)
            fig.add_trace(go.Scatter(x=rows["beta"], y=rows["value"], name=name, legendgroup=name, showlegend=i == 0,
                                     mode="lines", line={"color": color, "width": 1.5},
                                     hovertemplate=f"{name} · β %{{x:.3g}}<br>%{{y:.4g}}<extra></extra>"),
                          row=row + 1, col=col + 1)  # fmt: skip
            if quantity == "heat_capacity" and star is not None and (layer, head) in star.index:
                _star_marker(fig, star.loc[(layer, head)], rows, name, color)
        fig.add_vline(x=1.0, line={"color": "#222", "dash": "dash", "width": 1}, row=row + 1, col=col + 1)
        if abs(beta - 1.0) > 1e-9:
            fig.add_vline(x=beta, line={"color": "#9467bd", "dash": "dot", "width": 1.5}, row=row + 1, col=col + 1)
    fig.update_xaxes(type="log", title_text="inverse temperature β (β = 1: the model)")
    fig.update_yaxes(type="log" if yscale == "log" else "linear")
    return _style(fig, f"Attention thermodynamics at step {checkpoint} (averaged over rows with ≥ 2 keys)", height=620)


def _star_marker(fig: go.Figure, star: pd.Series, rows: pd.DataFrame, name: str, color: str) -> None:
    censored = float(star.get("beta_star_censored", 0) or 0)
    if censored == 0 and pd.notna(star.get("beta_star")):
        b = float(star["beta_star"])
        c = float(np.interp(math.log(b), np.log(rows["beta"].to_numpy()), rows["value"].to_numpy()))
        fig.add_trace(go.Scatter(x=[b], y=[c], mode="markers", legendgroup=name, showlegend=False,
                                 marker={"symbol": "star", "size": 11, "color": color, "line": {"width": 1, "color": "#222"}},
                                 hovertemplate=f"{name}: β* = {b:.3g}<extra></extra>"), row=1, col=2)  # fmt: skip
    elif pd.notna(star.get("beta_star_bound")):
        b = float(star["beta_star_bound"])
        sign = "≥" if censored > 0 else "≤"
        c = float(rows["value"].iloc[-1] if censored > 0 else rows["value"].iloc[0])
        fig.add_trace(go.Scatter(x=[b], y=[c], mode="markers", legendgroup=name, showlegend=False,
                                 marker={"symbol": "triangle-right-open" if censored > 0 else "triangle-left-open",
                                         "size": 11, "color": color},
                                 hovertemplate=f"{name}: β* {sign} {b:.3g} (censored: peak on the grid's edge)<extra></extra>"),
                      row=1, col=2)  # fmt: skip


def beta_star_figure(stars: pd.DataFrame, shape: tuple[int, int], *, xscale: str = "log",
                     transition: dict[str, Any] | None = None, cursor: int | None = None) -> go.Figure:  # fmt: skip
    """β* per head over checkpoints; censored peaks drawn as open triangles at the grid edge."""
    if not len(stars):
        return empty_figure("thermodynamics not measured in this analysis")
    wide = stars.pivot_table(index=["layer", "head", "checkpoint"], columns="quantity", values="value").reset_index()
    fig = go.Figure()
    for (layer, head), rows in wide.groupby(["layer", "head"], sort=True):
        rows = rows.sort_values("checkpoint")
        name, color = head_label(layer, head), head_color(int(layer), int(head), *shape)
        x = step_axis(rows["checkpoint"], xscale)
        fig.add_trace(go.Scatter(x=x, y=rows.get("beta_star"), name=name, legendgroup=name, mode="lines+markers",
                                 line={"color": color, "width": 1.5}, marker={"size": 5}, customdata=rows["checkpoint"],
                                 hovertemplate=f"{name} · step %{{customdata}}<br>β* = %{{y:.3g}}<extra></extra>"))  # fmt: skip
        cens = rows[rows.get("beta_star_censored", pd.Series(0, index=rows.index)).fillna(0) != 0]
        if len(cens):
            up = cens["beta_star_censored"] > 0
            fig.add_trace(go.Scatter(
                x=step_axis(cens["checkpoint"], xscale), y=cens["beta_star_bound"], mode="markers", legendgroup=name,
                showlegend=False, customdata=np.c_[cens["checkpoint"], np.where(up, "≥", "≤")],
                marker={"symbol": np.where(up, "triangle-up-open", "triangle-down-open"), "size": 9, "color": color},
                hovertemplate=f"{name} · step %{{customdata[0]}}<br>β* %{{customdata[1]}} %{{y:.3g}} (censored)<extra></extra>"))  # fmt: skip
    fig.add_hline(y=1.0, line={"color": "#222", "dash": "dash", "width": 1})
    _mark_steps(fig, xscale, wide["checkpoint"].unique().tolist(), transition, cursor)
    _checkpoint_axis(fig, xscale, wide["checkpoint"].unique())
    fig.update_yaxes(type="log", title_text="β* (argmax C(β)); open triangles: censored")
    return _style(fig, "Critical inverse temperature β* over training")


def esd_figure(eigs: np.ndarray, scalars: dict[str, float], title: str) -> go.Figure:
    """Histogram of one weight matrix's ESD with the Marchenko–Pastur density of its aspect ratio."""
    eigs = np.asarray(eigs, dtype=float)
    eigs = eigs[eigs > 0]
    if not len(eigs):
        return empty_figure("no eigenvalues for this matrix")
    fig = go.Figure()
    counts, edges = np.histogram(eigs, bins=min(80, max(10, len(eigs) // 3)))
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig.add_trace(go.Bar(x=centres, y=counts / (width * len(eigs)), width=width, name="ESD", marker_color="#4c78a8",
                         opacity=0.75, hovertemplate="λ ≈ %{x:.3g}<br>density %{y:.3g}<extra></extra>"))  # fmt: skip
    lo, hi = scalars.get("mp_lambda_minus"), scalars.get("mp_lambda_plus")
    if lo is not None and hi is not None and hi > lo >= 0:
        r = math.sqrt(hi / lo) if lo > 0 else float("inf")
        sq = (r - 1) / (r + 1) if math.isfinite(r) else 1.0  # √q from the two edges
        var = hi / (1 + sq) ** 2
        lam = np.linspace(lo, hi, 300)[1:-1]
        density = np.sqrt(np.clip((hi - lam) * (lam - lo), 0, None)) / (2 * math.pi * var * max(sq**2, 1e-12) * lam)
        fig.add_trace(go.Scatter(x=lam, y=density, name="Marchenko–Pastur", line={"color": "#e45756", "width": 2}))
        for edge, label in ((lo, "λ−"), (hi, "λ+")):
            fig.add_vline(x=edge, line={"color": "#e45756", "dash": "dot", "width": 1}, annotation_text=label)
    alpha, se = scalars.get("esd_alpha"), scalars.get("esd_alpha_se")
    if alpha is not None:
        title += f" · α = {alpha:.2f} ± {se:.2f}" if se is not None else f" · α = {alpha:.2f}"
    fig.update_xaxes(title_text="eigenvalue λ of WᵀW / N")
    fig.update_yaxes(title_text="density")
    return _style(fig, title)


def alpha_figure(frame: pd.DataFrame, *, xscale: str = "log", cursor: int | None = None) -> go.Figure:
    """Power-law exponent α of each weight matrix's ESD over checkpoints, ± its standard error."""
    if not len(frame):
        return empty_figure("no power-law fits (spectra not measured, or matrices too small)")
    wide = frame.pivot_table(index=["matrix", "layer", "checkpoint"], columns="quantity", values="value",
                             dropna=False).reset_index().dropna(subset=["esd_alpha"])  # fmt: skip
    fig = go.Figure()
    for (matrix, layer), rows in wide.groupby(["matrix", "layer"], sort=True, dropna=False):
        name = f"{matrix}" + ("" if pd.isna(layer) else f" L{int(layer)}")
        rows = rows.sort_values("checkpoint")
        fig.add_trace(go.Scatter(x=step_axis(rows["checkpoint"], xscale), y=rows["esd_alpha"], name=name,
                                 mode="lines+markers", customdata=rows["checkpoint"],
                                 error_y={"type": "data", "array": rows.get("esd_alpha_se"), "visible": True, "thickness": 1},
                                 hovertemplate=f"{name} · step %{{customdata}}<br>α = %{{y:.3g}}<extra></extra>"))  # fmt: skip
    fig.add_hrect(y0=2, y1=6, fillcolor="#59a14f", opacity=0.06, line_width=0)
    _mark_steps(fig, xscale, wide["checkpoint"].unique().tolist(), None, cursor)
    _checkpoint_axis(fig, xscale, wide["checkpoint"].unique())
    fig.update_yaxes(title_text="ESD tail exponent α (shaded: 2–6)")
    return _style(fig, "Power-law α per weight matrix (± standard error)")


def surface_figure(frame: pd.DataFrame, checkpoint: int) -> go.Figure:
    """Loss surface around a checkpoint: contours over (x, y), or a line over x for a 1-d slice."""
    if frame["y"].notna().any() if "y" in frame else False:
        grid = frame.pivot_table(index="y", columns="x", values="value")
        fig = go.Figure(go.Contour(z=grid.to_numpy(), x=grid.columns, y=grid.index, colorscale="Viridis",
                                   colorbar={"title": {"text": "loss (nats)"}},
                                   hovertemplate="a %{x:.2f}, b %{y:.2f}<br>loss %{z:.4f}<extra></extra>"))  # fmt: skip
        fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker={"symbol": "x", "size": 10, "color": "white"},
                                 name=f"step {checkpoint}"))  # fmt: skip
        fig.update_yaxes(title_text="direction 2 (filter-normalised units)")
    else:
        rows = frame.sort_values("x")
        fig = go.Figure(go.Scatter(x=rows["x"], y=rows["value"], mode="lines", name="loss"))
        fig.update_yaxes(title_text="loss (nats)")
    fig.update_xaxes(title_text="direction 1 (filter-normalised units)")
    return _style(fig, f"Loss surface around step {checkpoint}", height=460)


def compare_figure(series: dict[str, pd.DataFrame], ytitle: str, *, xscale: str = "log", yscale: str = "linear") -> go.Figure:
    """Two (or more) analyses' curves on one checkpoint axis; each frame has ``checkpoint, value``."""
    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, (label, frame) in enumerate(series.items()):
        rows = frame.sort_values("checkpoint")
        fig.add_trace(go.Scatter(x=step_axis(rows["checkpoint"], xscale), y=rows["value"], name=label,
                                 mode="lines+markers", line={"color": palette[i % 4]}, customdata=rows["checkpoint"],
                                 hovertemplate=f"{label}<br>step %{{customdata}}: %{{y:.4g}}<extra></extra>"))  # fmt: skip
    if not series:
        return empty_figure("choose two analyses to compare")
    _checkpoint_axis(fig, xscale, np.unique(np.concatenate([f["checkpoint"].to_numpy() for f in series.values()])))
    fig.update_yaxes(title_text=ytitle, type="log" if yscale == "log" else "linear")
    return _style(fig, None, height=460)
