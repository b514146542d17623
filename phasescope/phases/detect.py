"""Phase transitions across checkpoints: where an order parameter m(t) changes, how much, with what else.

Pure numpy/pandas (no torch): the backend runs it on stored tables.

Each series ``m(t)`` (one quantity, per layer/head where it has them) is fitted in ``x = ln t`` (steps
``t > 0``; step 0 has no logarithm and is the initialisation transient anyway) by two shapes, each
linear in its amplitudes once the centre ``x₀`` and width ``w`` are fixed, so every ``(x₀, w)`` on a
grid is solved exactly and the best is kept:

- ``step``: ``m = a + Δ·σ((x − x₀)/w)``, a sigmoid; its midpoint ``x₀`` is the half-way point of the
  change and the peak of ``|dm/d ln t|``.
- ``peak``: ``m = a + Δ·σ((x − x₀)/w) + h·exp(−½((x − x₀)/w)²)``, a bump on a step (sharpness rises
  and falls back to a new level during a transition); kept only when it beats the step by BIC.

**"No transition"** is the default answer; a fit is reported only if all of these hold:

1. ``|Δ|`` (step) or ``|h|`` (peak) ≥ ``min_snr`` × the residual noise ``√(SSE/(K − p))``;
2. the shape explains the data ``min_gain`` times better than a straight line in ``ln t``
   (``SSE_line / SSE_fit ≥ min_gain``), so a slow drift or a flat noisy plateau is not a transition;
   a peak must also beat the step fit by that factor;
3. it is sharp: its 10–90% span (``4.39 w``; a peak's full width at half maximum, ``2.35 w``) is at
   most ``max_width`` (0.3) of the sampled ``ln t`` range. On zoo:induction-2l the loss drop spans
   0.11 of the range (steps 395–599 of 25–1000); the one-layer control's slow slide from 4.16 to
   3.2 nats spans 0.42 (steps 147–687) and is not a transition;
4. it is inside the data: at least ``min_side`` checkpoints on each side of ``x₀``.

Uncertainty of the step (never a bare number): ``x₀`` refitted on bootstrap resamples of the prompts
when per-prompt values are given (``per_prompt``; one resample of prompt numbers used at every
checkpoint, a paired bootstrap), otherwise on residual-bootstrap series (fit + resampled residuals);
with a ``seed`` column, the per-seed fits. Each ``Transition`` reports the spread of the refitted
steps as a standard deviation (``uncertainty``) and as the 2.5–97.5% percentile interval
(``step_ci_lo``, ``step_ci_hi``), and says which resampling made them. When the transition is
narrower than the checkpoint interval it falls in (``coarse``), sampling cannot place it inside that
interval: the result is the interval, and the percentile interval is widened to contain it
(docs/measures.md, "Finding the transition").
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from phasescope.phases.replicates import paired_resamples, resampled_moments

__all__ = ["Transition", "detect_transitions", "fit_transition", "normal_equations"]

_SPAN_STEP = 2 * math.log(9)  # 10–90% span of a sigmoid, in units of w
_SPAN_PEAK = 2 * math.sqrt(2 * math.log(2))  # full width at half maximum of a Gaussian, in units of w


@dataclass
class Transition:
    """One detected transition of one series.

    Attributes:
        quantity: the order parameter.
        layer: its layer, None when not per layer.
        head: its head, None when not per head.
        step: the transition's training step: the fitted midpoint (a step's half-way point, a peak's
            top), or the geometric middle of its checkpoint interval when ``coarse``.
        step_lo: the last checkpoint at or before ``step``.
        step_hi: the first checkpoint after ``step``.
        uncertainty: standard deviation of ``step`` (steps), by ``uncertainty_method``.
        uncertainty_method: "prompt bootstrap (n=…)", "residual bootstrap (n=…)" or "seed spread (n=…)".
        step_ci_lo: lower end of the 95% percentile interval of ``step`` over the same resamples
            (over the seeds for a seed spread), never above ``step_lo`` when ``coarse``.
        step_ci_hi: its upper end, never below ``step_hi`` when ``coarse``.
        before: the fitted value at the first checkpoint, clipped to the range of the measured values.
        after: the fitted value at the last checkpoint, clipped likewise.
        size: ``after − before``.
        kind: "step" or "peak".
        peak: for a peak, the fitted value at its top; else None.
        method: how ``step`` was located: "step fit in ln t", "peak fit in ln t", or
            "max |dm/d ln t| between checkpoints".
        window_lo: start of the transition window (steps): the 10% point of a step, the lower half
            maximum of a peak.
        window_hi: its end: the 90% point, the upper half maximum.
        snr: the amplitude (``|Δ|`` or ``|h|``) over the residual noise.
        coarse: the window is narrower than the checkpoint interval: only the interval is known.
    """

    quantity: str
    layer: int | None
    head: int | None
    step: float
    step_lo: int
    step_hi: int
    uncertainty: float
    uncertainty_method: str
    step_ci_lo: float
    step_ci_hi: float
    before: float
    after: float
    size: float
    kind: str
    peak: float | None
    method: str
    window_lo: float
    window_hi: float
    snr: float
    coarse: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (plain floats and ints)."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in asdict(self).items()}


@dataclass
class _Fit:
    kind: str
    x0: float
    w: float
    coef: np.ndarray  # intercept, Δ[, h]
    sse: float
    sse_line: float  # the null model's SSE: a straight line in x (for a peak, also the step fit)
    n: int

    def curve(self, x: np.ndarray) -> np.ndarray:
        cols = _basis(self.kind, x, np.array([self.x0]), np.array([self.w]))
        return self.coef[0] + sum(c * b[0] for c, b in zip(self.coef[1:], cols, strict=True))

    @property
    def n_params(self) -> int:
        return 4 if self.kind == "step" else 5

    @property
    def half_span(self) -> float:
        """Half the window in ln t: to the 10/90% points of a step, to the half maxima of a peak."""
        return (_SPAN_STEP if self.kind == "step" else _SPAN_PEAK) * self.w / 2


def _basis(kind: str, x: np.ndarray, x0: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
    """The shape's columns at every ``(x0, w)``: arrays of shape ``x0.shape + x.shape``."""
    z = (x - x0[..., None]) / w[..., None]
    sig = 0.5 * (1 + np.tanh(z / 2))  # σ(z) without overflow
    return [sig] if kind == "step" else [sig, np.exp(-0.5 * z**2)]


def _solve(
    kind: str, x: np.ndarray, m: np.ndarray, x0: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """SSE and amplitudes (Δ[, h]) of the best fit at every ``(x0, w)`` of a grid (any shape)."""
    cols = [c - c.mean(-1, keepdims=True) for c in _basis(kind, x, x0, w)]
    mc = m - m.mean()
    sse, amplitudes = normal_equations(kind, cols, mc[None], np.array([mc @ mc]))
    return sse[..., 0], [a[..., 0] for a in amplitudes]


def normal_equations(
    kind: str, cols: list[np.ndarray], mc: np.ndarray, sst: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """SSE and amplitudes for centred columns ``[..., K]`` and centred series ``[B, K]``: ``[..., B]``.

    Centring removes the intercept; the amplitudes solve 1×1 or 2×2 normal equations in closed form
    (``phasescope.phases.refit`` solves every bootstrap resample this way at once).
    """
    k = mc.shape[1]
    if kind == "step":
        (s,) = cols
        ss = (s * s).sum(-1)[..., None]
        ok = ss > 1e-12 * k
        d = np.where(ok, (s @ mc.T) / np.where(ok, ss, 1), 0.0)
        return np.where(ok, sst - d**2 * ss, sst), [d]
    s, g = cols
    a11, a12, a22 = ((s * s).sum(-1)[..., None], (s * g).sum(-1)[..., None], (g * g).sum(-1)[..., None])
    b1, b2 = s @ mc.T, g @ mc.T
    det = a11 * a22 - a12**2
    ok = det > 1e-10 * np.maximum(a11 * a22, 1e-300)
    safe = np.where(ok, det, 1)
    d = np.where(ok, (a22 * b1 - a12 * b2) / safe, 0.0)
    h = np.where(ok, (a11 * b2 - a12 * b1) / safe, 0.0)
    return np.where(ok, sst - (d * b1 + h * b2), sst), [d, h]


def fit_transition(
    x: np.ndarray,
    m: np.ndarray,
    kind: str = "step",
    centres: np.ndarray | None = None,
    widths: np.ndarray | None = None,
) -> _Fit:
    """Least-squares fit of one shape (``"step"`` or ``"peak"``) over a grid of centres and widths.

    Args:
        x: ``ln t`` of each checkpoint, increasing.
        m: the series.
        kind: ``"step"`` or ``"peak"``.
        centres: grid of ``x₀`` (default ``max(200, 8K)`` points over the data's range); the best is
            refined between grid points by a parabola through its neighbours' SSE.
        widths: grid of ``w`` (default 28 geometric points from ``1/8`` of the smallest checkpoint
            spacing to the whole range).

    Returns:
        The best fit: centre ``x0`` and width ``w`` (ln t), intercept and amplitudes, its SSE and
        the SSE of a straight line in x.
    """
    x, m = np.asarray(x, float), np.asarray(m, float)
    dx = np.diff(x)
    dx_min = dx[dx > 0].min() if (dx > 0).any() else 1.0
    if centres is None:
        centres = np.linspace(x[0], x[-1], max(200, 8 * len(x)))
    if widths is None:
        widths = np.geomspace(dx_min / 8, x[-1] - x[0], 28)
    x0, w = np.meshgrid(centres, widths, indexing="ij")  # [centre, width]
    sse, _ = _solve(kind, x, m, x0, w)
    i, j = np.unravel_index(np.argmin(sse), sse.shape)
    best_x0, best_w = float(x0[i, j]), float(w[i, j])
    if 0 < i < len(centres) - 1:
        lo, mid, hi = sse[i - 1, j], sse[i, j], sse[i + 1, j]
        if lo - 2 * mid + hi > 0:
            best_x0 += 0.5 * (lo - hi) / (lo - 2 * mid + hi) * (centres[i + 1] - centres[i])
    sse1, amps = _solve(kind, x, m, np.array([best_x0]), np.array([best_w]))
    amp = np.array([a[0] for a in amps])
    basis = _basis(kind, x, np.array([best_x0]), np.array([best_w]))
    intercept = m.mean() - sum(float(c * b[0].mean()) for c, b in zip(amp, basis, strict=True))
    slope, icpt = np.polyfit(x, m, 1)
    sse_line = float(((m - slope * x - icpt) ** 2).sum())
    return _Fit(kind, best_x0, best_w, np.r_[intercept, amp], max(float(sse1[0]), 0.0), sse_line, len(x))


def _refit(x: np.ndarray, m: np.ndarray, fit: _Fit) -> _Fit:
    """Refit ``fit``'s shape on a fine grid around it: resamples move it only a little, and a local
    grid is 25 times cheaper than the full one."""
    half = 3 * fit.w + 2 * float(np.diff(x).max())
    centres = np.linspace(max(fit.x0 - half, x[0]), min(fit.x0 + half, x[-1]), 41)
    return fit_transition(x, m, fit.kind, centres, np.geomspace(fit.w / 3, fit.w * 3, 9))


def _bic(f: _Fit) -> float:
    return f.n * math.log(max(f.sse, 1e-300) / f.n) + f.n_params * math.log(f.n)


def _significant(
    fit: _Fit, x: np.ndarray, min_snr: float, min_gain: float, max_width: float, min_side: int
) -> tuple[bool, float]:
    """Whether ``fit`` passes the four tests of the module docstring, and its signal-to-noise ratio."""
    noise = math.sqrt(fit.sse / max(fit.n - fit.n_params, 1))
    # A peak is judged on its bump: its step part alone is the step fit's business.
    amp = abs(fit.coef[1] if fit.kind == "step" else fit.coef[2])
    snr = amp / noise if noise > 0 else math.inf
    gain = fit.sse_line / fit.sse if fit.sse > 0 else math.inf
    sharp = 2 * fit.half_span <= max_width * (x[-1] - x[0])
    inside = min(int((x < fit.x0).sum()), int((x > fit.x0).sum())) >= min_side
    ok = snr >= min_snr and gain >= min_gain and sharp and inside
    if fit.kind == "peak":
        # A bump that only one checkpoint sees is an outlier, not a peak.
        ok = ok and int((np.abs(x - fit.x0) <= fit.half_span).sum()) >= 2
    return ok, snr


def _choose(
    x: np.ndarray, m: np.ndarray, kinds: Iterable[str], thresholds: dict[str, float]
) -> tuple[_Fit, float] | None:
    """The significant shape with the lowest BIC (a peak pays for its extra amplitude), or None.

    A peak's gain is measured against the step fit as well as the line: a bump that only soaks up
    noise around a step must not turn the step into a peak.
    """
    passing = []
    fits = {kind: fit_transition(x, m, kind) for kind in kinds}
    for kind, fit in fits.items():
        if kind == "peak" and "step" in fits:
            fit.sse_line = min(fit.sse_line, fits["step"].sse)
        ok, snr = _significant(fit, x, **thresholds)  # type: ignore[arg-type]
        if ok:
            passing.append((fit, snr))
    return min(passing, key=lambda p: _bic(p[0])) if passing else None


def _derivative_x(x: np.ndarray, m: np.ndarray) -> float:
    """Middle (in ln t) of the checkpoint interval where ``|dm/d ln t|`` is largest."""
    i = int(np.argmax(np.abs(np.diff(m) / np.diff(x))))
    return float((x[i] + x[i + 1]) / 2)


def _locate(x: np.ndarray, m: np.ndarray, fit: _Fit, method: str) -> float:
    return _derivative_x(x, m) if method == "derivative" else _refit(x, m, fit).x0


def _locate_many(x: np.ndarray, series: np.ndarray, fit: _Fit, method: str) -> np.ndarray:
    """``_locate`` on every row of ``series`` ``[B, K]``; the fit's refits in one batch."""
    if method == "derivative":
        return np.array([_derivative_x(x, m) for m in series])
    from phasescope.phases.refit import refit_many  # it builds on this module

    return refit_many(x, series, fit)[0]


def _one_series(
    key: tuple[str, int | None, int | None],
    steps: np.ndarray,
    values: np.ndarray,
    replicates: np.ndarray | None,
    replicate_kind: str,
    *,
    method: str,
    kinds: tuple[str, ...],
    thresholds: dict[str, float],
    n_boot: int,
    rng: np.random.Generator,
) -> Transition | None:
    x = np.log(steps)
    chosen = _choose(x, values, kinds, thresholds)
    if chosen is None:
        return None
    fit, snr = chosen
    if method == "derivative" and fit.kind == "step":
        x_loc, how_located = _derivative_x(x, values), "max |dm/d ln t| between checkpoints"
    else:
        x_loc, how_located = fit.x0, f"{fit.kind} fit in ln t"
    loc_method = "derivative" if how_located.startswith("max") else "fit"
    # Uncertainty: relocate on resampled series and take the spread of the step.
    if replicate_kind == "seed":
        assert replicates is not None
        xs = np.array([_locate(x, r, fit, loc_method) for r in replicates])
        how = f"seed spread (n={len(xs)})"
    elif replicate_kind == "prompt":
        assert replicates is not None
        n_prompts = replicates.shape[1]
        counts = paired_resamples(n_prompts, n_boot, rng)
        # Resampled means are centred on the series itself: a measure whose value is not exactly the
        # mean of its per-prompt values (a ratio, a mean over positions) keeps its own level.
        offset = values - replicates.mean(1)
        xs = _locate_many(x, resampled_moments(replicates, counts)[0] + offset, fit, loc_method)
        how = f"prompt bootstrap (n={n_boot})"
    else:
        fitted = fit.curve(x)
        resid = values - fitted
        xs = _locate_many(x, fitted + rng.choice(resid, (n_boot, len(resid))), fit, loc_method)
        how = f"residual bootstrap (n={n_boot})"
    uncertainty = float(np.exp(xs).std(ddof=1)) if len(xs) > 1 else math.nan
    ci_lo, ci_hi = (float(v) for v in np.exp(np.percentile(xs, [2.5, 97.5])))

    i = min(max(int(np.searchsorted(steps, math.exp(x_loc), side="right")) - 1, 0), len(steps) - 2)
    lo, hi = int(steps[i]), int(steps[i + 1])
    window_lo, window_hi = math.exp(fit.x0 - fit.half_span), math.exp(fit.x0 + fit.half_span)
    coarse = loc_method == "derivative" or window_hi - window_lo < hi - lo
    if coarse:  # only the checkpoint interval is known: the interval cannot be narrower than it
        ci_lo, ci_hi = min(ci_lo, lo), max(ci_hi, hi)
    # The fitted levels, kept inside the range of what was measured: a sigmoid fitted to a series that
    # is not one (grokking's test loss rises before it falls) can put its plateau past the data, e.g.
    # a test accuracy of 1.06 or a loss below 0. A good fit's plateaus are inside the range already.
    lo_v, hi_v = float(np.min(values)), float(np.max(values))
    curve = np.clip(fit.curve(x), lo_v, hi_v)
    top = float(np.clip(fit.curve(np.array([fit.x0]))[0], lo_v, hi_v)) if fit.kind == "peak" else None
    return Transition(
        quantity=key[0],
        layer=key[1],
        head=key[2],
        # A transition sharper than its interval cannot be placed inside it: say the interval's middle.
        step=math.sqrt(lo * hi) if coarse else math.exp(x_loc),
        step_lo=lo,
        step_hi=hi,
        uncertainty=uncertainty,
        uncertainty_method=how,
        step_ci_lo=ci_lo,
        step_ci_hi=ci_hi,
        before=float(curve[0]),
        after=float(curve[-1]),
        size=float(curve[-1] - curve[0]),
        kind=fit.kind,
        peak=top,
        method=how_located,
        window_lo=window_lo,
        window_hi=window_hi,
        snr=float(snr),
        coarse=coarse,
    )


def _key(quantity: Hashable, layer: Any, head: Any) -> tuple[str, int | None, int | None]:
    return (str(quantity), None if pd.isna(layer) else int(layer), None if pd.isna(head) else int(head))


def detect_transitions(
    series: pd.DataFrame,
    *,
    per_prompt: np.ndarray | Mapping[tuple[str, int | None, int | None], np.ndarray] | None = None,
    method: Literal["fit", "derivative"] = "fit",
    kinds: tuple[str, ...] = ("step", "peak"),
    min_snr: float = 5.0,
    min_gain: float = 2.0,
    max_width: float = 0.3,
    min_side: int = 2,
    n_boot: int = 100,
    seed: int = 0,
) -> list[Transition]:
    """Find the transition (if any) of every series in a tidy table.

    Args:
        series: a tidy table (``phasescope.measures.tables``) with one value per checkpoint for each
            ``(quantity, layer, head)``; an optional ``seed`` column holds replicate runs (their mean
            is tested, their spread is the uncertainty). Rows with step ≤ 0 or NaN are ignored.
        per_prompt: per-prompt values ``[checkpoint, prompt]`` (checkpoints increasing, step 0
            excluded) to bootstrap over prompts: an array when the table holds one series, or a
            mapping from ``(quantity, layer, head)`` (None where not per layer/head).
        method: ``"fit"`` locates the step's midpoint or the peak's top; ``"derivative"`` locates a
            step at the checkpoint interval with the largest ``|dm/d ln t|``. The decision whether
            there is a transition is the fit's either way.
        kinds: shapes to try, ``"step"`` and/or ``"peak"``.
        min_snr: smallest amplitude, in residual-noise units.
        min_gain: smallest ``SSE_line / SSE_fit``.
        max_width: largest transition window, as a fraction of the ``ln t`` range.
        min_side: fewest checkpoints on each side of the centre.
        n_boot: bootstrap resamples (prompt or residual bootstrap).
        seed: seeds the bootstrap.

    Returns:
        Transitions ordered by step; a series without one contributes nothing.

    Raises:
        ValueError: a series has several values at one checkpoint (filter the table first), or fewer
            than ``2 * min_side + 2`` checkpoints.
    """
    rng = np.random.default_rng(seed)
    thresholds = {"min_snr": min_snr, "min_gain": min_gain, "max_width": max_width, "min_side": min_side}
    frame = series[(series["checkpoint"] > 0) & series["value"].notna()]
    has_seed = "seed" in frame and frame["seed"].nunique() > 1
    found = []
    for (q, layer, head), group in frame.groupby(["quantity", "layer", "head"], dropna=False, sort=True):
        key = _key(q, layer, head)
        if group.duplicated(["checkpoint", "seed"] if has_seed else ["checkpoint"]).any():
            raise ValueError(f"{key}: several values per checkpoint; filter the table to one series first")
        if has_seed:
            # [checkpoint, seed]; only checkpoints every seed has.
            wide = group.pivot(index="checkpoint", columns="seed", values="value").dropna().sort_index()
        else:
            wide = group.set_index("checkpoint")[["value"]].sort_index()
        steps = wide.index.to_numpy(dtype=float)
        if len(steps) < 2 * min_side + 2:
            raise ValueError(f"{key}: {len(steps)} checkpoints; need at least {2 * min_side + 2}")
        values = wide.to_numpy(dtype=float)
        replicates, kind = None, "residual"
        if has_seed:
            replicates, kind = values.T, "seed"
        elif per_prompt is not None:
            arr = per_prompt if isinstance(per_prompt, np.ndarray) else per_prompt.get(key)
            if arr is not None:
                if arr.shape[0] != len(steps):
                    raise ValueError(
                        f"{key}: per_prompt has {arr.shape[0]} checkpoints, the series {len(steps)}"
                    )
                replicates, kind = np.asarray(arr, float), "prompt"
        t = _one_series(
            key,
            steps,
            values.mean(1),
            replicates,
            kind,
            method=method,
            kinds=kinds,
            thresholds=thresholds,
            n_boot=n_boot,
            rng=rng,
        )
        if t is not None:
            found.append(t)
    return sorted(found, key=lambda t: t.step)
