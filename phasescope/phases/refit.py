"""Refit a transition's shape on many resampled series at once: what every bootstrap here does.

``detect._refit`` fits one series on a local grid of centres and widths around a first fit; a
bootstrap does that for each of its resamples. The shapes are linear in their amplitudes at fixed
``(x₀, w)`` (``phasescope.phases.detect``), so the normal equations of every grid point and every
resample are one matrix product: ``[grid, K] @ [K, B]``. Same grid, same refinement of the centre
(a parabola through the best centre's neighbours), same answers as ``_refit`` per resample, without
the Python loop. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from phasescope.phases.detect import _basis, _Fit, normal_equations

__all__ = ["local_grid", "refit_many"]


def local_grid(x: np.ndarray, fit: _Fit) -> tuple[np.ndarray, np.ndarray]:
    """The centres and widths ``detect._refit`` searches around ``fit``."""
    half = 3 * fit.w + 2 * float(np.diff(x).max())
    centres = np.linspace(max(fit.x0 - half, x[0]), min(fit.x0 + half, x[-1]), 41)
    return centres, np.geomspace(fit.w / 3, fit.w * 3, 9)


def refit_many(x: np.ndarray, series: np.ndarray, fit: _Fit) -> tuple[np.ndarray, np.ndarray]:
    """Refit ``fit``'s shape to every row of ``series`` on the local grid around ``fit``.

    Args:
        x: ``ln t`` of the checkpoints, ``[K]``.
        series: resampled series, ``[B, K]``.
        fit: the fit of the original series (its shape and where to search).

    Returns:
        ``(x0, level)``, each ``[B]``: every resample's refined centre and its fitted value there
        (the step's midpoint value, or a peak's top).
    """
    series = np.asarray(series, float)
    centres, widths = local_grid(x, fit)
    x0g, wg = np.meshgrid(centres, widths, indexing="ij")  # [centre, width]
    cols = [c - c.mean(-1, keepdims=True) for c in _basis(fit.kind, x, x0g, wg)]  # each [C, W, K]
    mc = series - series.mean(1, keepdims=True)
    sst = (mc * mc).sum(1)
    sse, _ = normal_equations(fit.kind, cols, mc, sst)  # [C, W, B]
    n_c, n_w, n_b = sse.shape
    best = np.argmin(sse.reshape(n_c * n_w, n_b), axis=0)
    i, j = np.divmod(best, n_w)
    b = np.arange(n_b)
    x0 = centres[i].astype(float)
    # The centre refined between grid points, as fit_transition does.
    inner = (i > 0) & (i < n_c - 1)
    ii = np.clip(i, 1, n_c - 2)
    lo, mid, hi = sse[ii - 1, j, b], sse[ii, j, b], sse[ii + 1, j, b]
    curv = lo - 2 * mid + hi
    step = centres[1] - centres[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(inner & (curv > 0), 0.5 * (lo - hi) / curv * step, 0.0)
    x0 = x0 + shift
    # Amplitudes at each resample's own (x0, w): one more solve, row by row ([B, K] columns).
    raw = _basis(fit.kind, x, x0, widths[j])  # each [B, K]
    cols_b = [c - c.mean(-1, keepdims=True) for c in raw]
    if fit.kind == "step":
        (s,) = cols_b
        ss = (s * s).sum(1)
        amps = [np.where(ss > 0, (s * mc).sum(1) / np.where(ss > 0, ss, 1), 0.0)]
    else:
        s, g = cols_b
        a11, a12, a22 = (s * s).sum(1), (s * g).sum(1), (g * g).sum(1)
        b1, b2 = (s * mc).sum(1), (g * mc).sum(1)
        det = a11 * a22 - a12**2
        safe = np.where(det > 0, det, 1)
        amps = [
            np.where(det > 0, (a22 * b1 - a12 * b2) / safe, 0.0),
            np.where(det > 0, (a11 * b2 - a12 * b1) / safe, 0.0),
        ]
    intercept = series.mean(1) - sum(a * c.mean(1) for a, c in zip(amps, raw, strict=True))
    # At x0 itself the sigmoid is ½ and the bump 1.
    level = intercept + 0.5 * amps[0] + (amps[1] if fit.kind == "peak" else 0.0)
    return x0, level
