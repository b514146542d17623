"""Critical exponents near a transition: ``|m(t) − m(t*)| ∝ |ln t − ln t*|^b`` on each side of ``t*``.

A straight-line least-squares fit of ``ln|m − m*|`` against ``ln|ln t − ln t*|`` on each side gives
``b``. ``t*`` is the fitted midpoint of the step (``phasescope.phases.detect``) and ``m* = m(t*)``
the fitted step's value there. The rules (docs/measures.md, "Finding the transition"):

- **Window**: checkpoints with ``d_min ≤ |ln t − ln t*| ≤ d_max``, where ``d_min`` is the ``ln t``
  width of the checkpoint interval holding ``t*`` (closer than that, ``|ln t − ln t*|`` is set by
  where ``t*`` falls inside its interval more than by the data) and ``d_max`` the half-width of the
  transition window, ``ln 9 · w`` to the 10% and 90% points (farther out the series sits on its
  plateau and no power of the distance describes it).
- **Supported** only when the side has at least ``MIN_POINTS`` (4) checkpoints in its window, they
  span at least a factor ``MIN_SPAN`` (2) in ``|ln t − ln t*|``, and the fit's R² is at least
  ``MIN_R2`` (0.9); otherwise ``supported`` is False and ``reason`` says which failed.
- **Interval**: 95% percentile interval of ``b`` refitted on ``n_boot`` resamples: paired bootstrap
  of the prompts when per-prompt values exist (``t*`` and ``m*`` refitted on each resample too),
  otherwise a residual bootstrap: ``t*`` and ``m*`` refitted on the step fit plus resampled
  residuals, and the measured points about them resampled about their own log–log line.

Pure numpy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from phasescope.phases.detect import _Fit, fit_transition
from phasescope.phases.refit import refit_many
from phasescope.phases.replicates import SeriesKey, paired_resamples, resampled_moments

__all__ = ["ExponentFit", "MIN_POINTS", "MIN_R2", "MIN_SPAN", "default_window", "fit_exponents"]

MIN_POINTS = 4
"""Fewest checkpoints in a side's window for a supported exponent."""
MIN_R2 = 0.9
"""Smallest R² of the log–log line for a supported exponent."""
MIN_SPAN = 2.0
"""Smallest ratio of the largest to the smallest ``|ln t − ln t*|`` used."""
_SIDES = (("before", -1), ("after", 1))


@dataclass
class ExponentFit:
    """The exponent ``b`` of one side of one transition.

    Attributes:
        quantity: the order parameter.
        layer: its layer, None when not per layer.
        head: its head, None when not per head.
        side: "before" (``t < t*``) or "after".
        b: the fitted exponent (NaN with fewer than two points).
        b_ci_lo: lower end of its 95% bootstrap percentile interval.
        b_ci_hi: its upper end.
        n_points: checkpoints in the side's window.
        supported: the fit meets every support criterion (module docstring).
        reason: what the fit rests on, or which criterion failed.
        r2: R² of the log–log line.
        d_min: the window's inner edge ``|ln t − ln t*|``.
        d_max: its outer edge.
        t_star: the transition's step ``t*``.
        m_star: ``m(t*)``, the fitted step's value at ``t*``.
        method: how the interval was made, e.g. "prompt bootstrap (n=200)".
    """

    quantity: str
    layer: int | None
    head: int | None
    side: str
    b: float
    b_ci_lo: float
    b_ci_hi: float
    n_points: int
    supported: bool
    reason: str
    r2: float
    d_min: float
    d_max: float
    t_star: float
    m_star: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (plain floats, ints and bools)."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in asdict(self).items()}


def default_window(x: np.ndarray, fit: _Fit) -> tuple[float, float]:
    """``(d_min, d_max)`` in ``ln t`` by the window rule of the module docstring."""
    i = int(np.clip(np.searchsorted(x, fit.x0, side="right") - 1, 0, len(x) - 2))
    return float(x[i + 1] - x[i]), float(math.log(9) * fit.w)


def _points(
    x: np.ndarray, m: np.ndarray, x_star: float, m_star: float, sign: int, d_min: float, d_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(ln|ln t − ln t*|, ln|m − m*|)`` of one side's checkpoints inside the window."""
    d, dm = sign * (x - x_star), np.abs(m - m_star)
    keep = (d >= d_min) & (d <= d_max) & (dm > 0)
    return np.log(d[keep]), np.log(dm[keep])


def _line(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = c + b·u``: ``(b, c, R²)``; NaN with fewer than two distinct ``u``."""
    if len(u) < 2 or np.ptp(u) == 0:
        return math.nan, math.nan, math.nan
    uc, yc = u - u.mean(), y - y.mean()
    b = float(uc @ yc / (uc @ uc))
    sst, sse = float(yc @ yc), float(((yc - b * uc) ** 2).sum())
    return b, float(y.mean() - b * u.mean()), 1 - sse / sst if sst > 0 else 1.0


def fit_exponents(
    steps: np.ndarray,
    values: np.ndarray,
    *,
    key: SeriesKey = ("m", None, None),
    per_prompt: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    n_boot: int = 200,
    rng: np.random.Generator | None = None,
) -> list[ExponentFit]:
    """Fit ``b`` on both sides of the step transition of one series.

    Args:
        steps: checkpoints (steps > 0, increasing), ``[C]``.
        values: the order parameter at each, ``[C]``.
        key: ``(quantity, layer, head)``, copied into the reports.
        per_prompt: the order parameter per prompt ``[C, prompt]`` (a paired prompt bootstrap), or
            None (a residual bootstrap).
        window: ``(d_min, d_max)`` in ``ln t`` instead of the default rule.
        n_boot: bootstrap resamples.
        rng: random generator (default: seeded with 0).

    Returns:
        Two reports, "before" and "after".
    """
    rng = rng or np.random.default_rng(0)
    x, m = np.log(np.asarray(steps, float)), np.asarray(values, float)
    fit = fit_transition(x, m, "step")
    x_star, m_star = fit.x0, float(fit.curve(np.array([fit.x0]))[0])
    d_min, d_max = window if window is not None else default_window(x, fit)
    lines = {side: _line(*_points(x, m, x_star, m_star, sign, d_min, d_max)) for side, sign in _SIDES}
    boots: dict[str, list[float]] = {side: [] for side, _ in _SIDES}
    if per_prompt is not None:
        method = f"prompt bootstrap (n={n_boot})"
        offset = m - per_prompt.mean(1)
        counts = paired_resamples(per_prompt.shape[1], n_boot, rng)
        resampled = resampled_moments(per_prompt, counts)[0] + offset  # [B, K]
        x_stars, m_stars = refit_many(x, resampled, fit)
        for mb, xb, mb_star in zip(resampled, x_stars, m_stars, strict=True):
            for side, sign in _SIDES:
                boots[side].append(_line(*_points(x, mb, xb, mb_star, sign, d_min, d_max))[0])
    else:
        method = f"residual bootstrap (n={n_boot})"
        # Where t* and m* are is uncertain too: move them as the step's residual bootstrap does, take
        # the measured points about each, and resample those points about their own log–log line.
        fitted = fit.curve(x)
        resampled = fitted + rng.choice(m - fitted, (n_boot, len(x)))
        x_stars, m_stars = refit_many(x, resampled, fit)
        for xb, mb_star in zip(x_stars, m_stars, strict=True):
            for side, sign in _SIDES:
                u, y = _points(x, m, xb, mb_star, sign, d_min, d_max)
                b, c, _ = _line(u, y)
                if not math.isnan(b):
                    line = c + b * u
                    b = _line(u, line + rng.choice(y - line, len(y)))[0]
                boots[side].append(b)
    out = []
    for side, sign in _SIDES:
        u, _ = _points(x, m, x_star, m_star, sign, d_min, d_max)
        b, _, r2 = lines[side]
        bs = np.array([v for v in boots[side] if np.isfinite(v)])
        # No interval around an exponent the data do not give (fewer than two points on this side).
        enough = len(bs) > 1 and not math.isnan(b)
        lo, hi = (float(v) for v in np.percentile(bs, [2.5, 97.5])) if enough else (math.nan, math.nan)
        span = float(np.exp(np.ptp(u))) if len(u) else 1.0
        if len(u) < MIN_POINTS:
            supported, reason = False, f"{len(u)} checkpoints in the window on this side; need {MIN_POINTS}"
        elif span < MIN_SPAN:
            supported, reason = False, f"|ln t − ln t*| spans a factor {span:.2g}; need {MIN_SPAN:g}"
        elif not r2 >= MIN_R2:
            supported, reason = False, f"log–log fit R² = {r2:.2f} < {MIN_R2:g}"
        else:
            supported, reason = True, f"{len(u)} checkpoints over a factor {span:.2g}, R² = {r2:.2f}"
        out.append(
            ExponentFit(
                quantity=key[0],
                layer=key[1],
                head=key[2],
                side=side,
                b=b,
                b_ci_lo=lo,
                b_ci_hi=hi,
                n_points=len(u),
                supported=supported,
                reason=reason,
                r2=r2,
                d_min=d_min,
                d_max=d_max,
                t_star=math.exp(x_star),
                m_star=m_star,
                method=method,
            )
        )
    return out
