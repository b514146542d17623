"""Where the susceptibility χ(t) of an order parameter peaks, how sure that is, and whether it matters.

The measures store ``χ = N · Var_prompts(m)`` of an order parameter ``m`` at each checkpoint as the
quantity ``f"{m}_chi"``, with its bootstrap standard error in ``se`` (docs/measures.md,
"Uncertainties"). Near a transition the prompts disagree most (some already see the new mechanism,
others not yet), so χ should peak inside the transition's window. The rules here
(docs/measures.md, "Finding the transition"):

- **Peak step**: the checkpoint (step > 0) with the largest χ; when it has a neighbour on both sides,
  refined by the vertex of the parabola through it and its two neighbours in ``ln t`` (kept between
  the neighbours). A maximum at the first or last checkpoint is *censored*: the run does not show χ
  falling on that side, so it is no peak.
- **Interval**: 95% percentile interval of the peak step over ``n_boot`` paired bootstrap resamples of
  the prompts (χ recomputed from the ``_prompt`` rows at every checkpoint on the same resample, the
  peak located again by the same rule); without per-prompt rows, over χ + se·z with z standard normal
  per checkpoint (a parametric bootstrap from the stored standard errors).
- **Significance**: the checkpoints farther than ``EXCLUDE`` (0.075) of the ``ln t`` range from the
  peak form a baseline on each side (wider than half the induction transition's window, 0.055 of
  the range on zoo:induction-2l, so a transition's own rise stays out of it; narrow enough that a
  peak late in the run still has checkpoints after it). The baseline is the larger of the two
  sides' medians (a χ that steps up to a new level has no peak over it); its standard error is
  ``1.25 · s / √n``, the standard error of a median of ``n`` values with the median ``se`` ``s`` of
  that side. The peak is significant when ``χ_peak − baseline > K · √(se_peak² + se_baseline²)``
  with ``K = 3``, and each side has at least ``MIN_BASELINE`` (2) checkpoints.
- **In window**: the peak step lies in ``[window_lo, window_hi]`` of the same series' transition;
  None when that series has none.

Pure numpy/pandas, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from phasescope.phases.detect import Transition
from phasescope.phases.replicates import (
    SeriesKey,
    aligned,
    paired_resamples,
    resampled_moments,
    series_key,
)

__all__ = [
    "CHI_SUFFIX",
    "EXCLUDE",
    "K",
    "MIN_BASELINE",
    "SusceptibilityPeak",
    "chi_peak",
    "locate_peak",
    "susceptibility_peaks",
]

CHI_SUFFIX = "_chi"
K = 3.0
"""Combined standard errors the peak must stand above its baseline by."""
EXCLUDE = 0.075
"""Half-width (fraction of the ``ln t`` range) around the peak left out of the baseline."""
MIN_BASELINE = 2
"""Fewest baseline checkpoints on each side of the peak."""
_MEDIAN_SE = math.sqrt(math.pi / 2)  # a median's standard error over the mean's, for normal noise


@dataclass
class SusceptibilityPeak:
    """The peak of one series' susceptibility χ(t).

    Attributes:
        quantity: the order parameter ``m`` (χ is the quantity ``m_chi``).
        layer: its layer, None when not per layer.
        head: its head, None when not per head.
        peak_step: where χ peaks (training steps; the rule is in the module docstring).
        peak_ci_lo: lower end of the peak step's 95% bootstrap percentile interval.
        peak_ci_hi: its upper end.
        peak_value: χ at the checkpoint with the largest χ.
        peak_se: its standard error.
        baseline: χ away from the peak (the larger of the two sides' medians).
        baseline_se: the baseline's standard error (median ``se`` on its side).
        significant: the peak stands above the baseline by more than ``K`` combined standard errors.
        censored: the largest χ is at the first or last checkpoint (no peak inside the run).
        in_window: the peak step is inside the same series' transition window; None when it has none.
        transition_step: that transition's step, None when there is none.
        reason: why the peak is or is not significant, in words.
        method: how the interval was made, e.g. "prompt bootstrap (n=200)".
    """

    quantity: str
    layer: int | None
    head: int | None
    peak_step: float
    peak_ci_lo: float
    peak_ci_hi: float
    peak_value: float
    peak_se: float
    baseline: float
    baseline_se: float
    significant: bool
    censored: bool
    in_window: bool | None
    transition_step: float | None
    reason: str
    method: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (plain floats, ints and bools)."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in asdict(self).items()}


def locate_peak(x: np.ndarray, chi: np.ndarray) -> np.ndarray:
    """The peak of χ in ``x = ln t`` for every column of ``chi`` (the rule of the module docstring).

    Args:
        x: ``ln t`` of the checkpoints, increasing, shape ``[C]``.
        chi: χ at each checkpoint, ``[C]`` or ``[C, B]`` (one column per resample).

    Returns:
        The peak's ``ln t``, shape ``[]`` or ``[B]``: the parabola vertex through the largest χ and its
        neighbours, or the checkpoint itself at either end of the run.
    """
    chi = np.asarray(chi, float)
    flat = chi.ndim == 1
    chi = chi[:, None] if flat else chi
    cols = np.arange(chi.shape[1])
    i = np.argmax(chi, axis=0)  # [B]
    j = np.clip(i, 1, len(x) - 2)  # the middle of the three points used
    x0, x1, x2 = x[j - 1], x[j], x[j + 1]
    y0, y1, y2 = chi[j - 1, cols], chi[j, cols], chi[j + 1, cols]
    # Vertex of the parabola through three points with unequal spacing.
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = x1 - 0.5 * num / den
    vertex = np.where(np.isfinite(vertex), np.clip(vertex, x0, x2), x1)
    inside = (i > 0) & (i < len(x) - 1)
    out = np.where(inside, vertex, x[i])
    return out[0] if flat else out


def _bootstrap_chi(
    per_prompt: np.ndarray, chi: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """χ on paired prompt resamples (the same prompts at every checkpoint): ``[checkpoint, resample]``.

    χ is ``N̄ · Var_prompts`` with ``N̄`` the units a prompt averages over (tokens, queries), which the
    table does not carry: each checkpoint's factor is read back as the stored χ over the variance of
    its prompts, so the resamples are on the stored scale.
    """
    n = per_prompt.shape[1]
    var = per_prompt.var(axis=1, ddof=1)
    scale = np.divide(chi, var, out=np.ones_like(chi), where=(var > 0) & np.isfinite(chi))
    _, resampled = resampled_moments(per_prompt, paired_resamples(n, n_boot, rng))
    return scale[:, None] * resampled.T


def chi_peak(
    key: SeriesKey,
    steps: np.ndarray,
    chi: np.ndarray,
    se: np.ndarray,
    *,
    per_prompt: np.ndarray | None = None,
    transition: Transition | None = None,
    n_boot: int = 200,
    rng: np.random.Generator | None = None,
) -> SusceptibilityPeak:
    """The peak of one series' χ(t), its interval, significance and place against the transition.

    Args:
        key: ``(quantity, layer, head)`` of the order parameter.
        steps: checkpoints (steps > 0, increasing), ``[C]``.
        chi: χ at each, ``[C]``.
        se: its standard error at each (NaN where unknown), ``[C]``.
        per_prompt: the order parameter per prompt ``[C, prompt]`` for the paired bootstrap, or None.
        transition: the same series' transition, if it has one.
        n_boot: bootstrap resamples.
        rng: random generator (default: seeded with 0).

    Returns:
        The peak report (module docstring for each rule).
    """
    rng = rng or np.random.default_rng(0)
    x, chi, se = np.log(np.asarray(steps, float)), np.asarray(chi, float), np.asarray(se, float)
    if per_prompt is not None:
        boot = _bootstrap_chi(per_prompt, chi, n_boot, rng)
        method = f"prompt bootstrap (n={n_boot})"
        # The stored χ may lack its se (an older table): the bootstrap's spread is one.
        se = np.where(np.isfinite(se), se, boot.std(axis=1, ddof=1))
    else:
        spread = np.where(np.isfinite(se), se, 0.0)
        boot = chi[:, None] + spread[:, None] * rng.standard_normal((len(chi), n_boot))
        method = f"parametric bootstrap from se (n={n_boot})"
    x_peak = float(locate_peak(x, chi))
    lo, hi = (float(v) for v in np.exp(np.percentile(locate_peak(x, boot), [2.5, 97.5])))
    i = int(np.argmax(chi))
    censored = i in (0, len(chi) - 1)
    half = EXCLUDE * (x[-1] - x[0])
    sides = [np.flatnonzero(x < x_peak - half), np.flatnonzero(x > x_peak + half)]
    baseline, baseline_se = math.nan, math.nan
    if min(len(s) for s in sides) >= MIN_BASELINE:
        medians = [float(np.median(chi[s])) for s in sides]
        side = sides[int(np.argmax(medians))]
        # The standard error of a median of n values that each have standard error s: ≈ 1.25·s/√n.
        side_se = float(np.nanmedian(se[side])) if np.isfinite(se[side]).any() else math.nan
        baseline, baseline_se = max(medians), _MEDIAN_SE * side_se / math.sqrt(len(side))
    peak_value, peak_se = float(chi[i]), float(se[i])
    combined = math.sqrt(peak_se**2 + baseline_se**2)
    if censored:
        significant, reason = (
            False,
            f"χ is largest at the {'first' if i == 0 else 'last'} checkpoint: no peak inside the run",
        )
    elif math.isnan(baseline):
        significant, reason = False, f"fewer than {MIN_BASELINE} checkpoints away from the peak on one side"
    elif math.isnan(combined):
        significant, reason = False, "no standard error for χ"
    else:
        excess = (peak_value - baseline) / combined if combined > 0 else math.inf
        significant = bool(excess > K)
        reason = f"{excess:.1f} combined standard errors above the baseline, threshold {K:g}"
    in_window = (
        None if transition is None else bool(transition.window_lo <= math.exp(x_peak) <= transition.window_hi)
    )
    return SusceptibilityPeak(
        quantity=key[0],
        layer=key[1],
        head=key[2],
        peak_step=math.exp(x_peak),
        peak_ci_lo=lo,
        peak_ci_hi=hi,
        peak_value=peak_value,
        peak_se=peak_se,
        baseline=baseline,
        baseline_se=baseline_se,
        significant=significant,
        censored=censored,
        in_window=in_window,
        transition_step=None if transition is None else float(transition.step),
        reason=reason,
        method=method,
    )


def susceptibility_peaks(
    chi_rows: pd.DataFrame,
    prompts: Mapping[SeriesKey, pd.DataFrame],
    transitions: Iterable[Transition],
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> list[SusceptibilityPeak]:
    """The χ peaks worth reporting for one order parameter.

    Model-level and per-layer series are all reported. Per-head series are many, so only these are:
    every head whose order parameter has a transition, and in each layer the head with the largest χ.

    Args:
        chi_rows: the ``m_chi`` rows of one order parameter (tidy, with ``se`` when stored).
        prompts: per-prompt frames of the same order parameter (``replicates.prompt_matrices``).
        transitions: the transitions found, to place the peaks against.
        n_boot: bootstrap resamples per series.
        seed: seeds the bootstrap.

    Returns:
        Peak reports in (layer, head) order.
    """
    rng = np.random.default_rng(seed)
    by_key: dict[SeriesKey, Transition] = {}
    for t in sorted(transitions, key=lambda t: t.kind != "step"):  # a series' step before its peak
        by_key.setdefault((t.quantity, t.layer, t.head), t)
    rows = chi_rows[(chi_rows["checkpoint"] > 0) & chi_rows["value"].notna()]
    series: dict[SeriesKey, pd.DataFrame] = {}
    for (q, layer, head), group in rows.groupby(["quantity", "layer", "head"], dropna=False, sort=True):
        key = series_key(str(q).removesuffix(CHI_SUFFIX), layer, head)
        series[key] = group.drop_duplicates("checkpoint").set_index("checkpoint").sort_index()
    wanted = set(series)
    if any(k[2] is not None for k in series):
        wanted = {k for k in series if k[2] is None or k in by_key}
        best: dict[int | None, SeriesKey] = {}
        for k, frame in series.items():
            if k[2] is not None and (
                k[1] not in best or frame["value"].max() > series[best[k[1]]]["value"].max()
            ):
                best[k[1]] = k
        wanted |= set(best.values())
    out = []
    for key in sorted(
        wanted, key=lambda k: (k[1] if k[1] is not None else -1, k[2] if k[2] is not None else -1)
    ):
        frame = series[key]
        if len(frame) < 2 * MIN_BASELINE + 1:
            continue
        steps = frame.index.to_numpy(dtype=float)
        se = frame["se"].to_numpy(dtype=float) if "se" in frame else np.full(len(frame), math.nan)
        out.append(
            chi_peak(
                key,
                steps,
                frame["value"].to_numpy(dtype=float),
                se,
                per_prompt=aligned(prompts.get(key), steps),
                transition=by_key.get(key),
                n_boot=n_boot,
                rng=rng,
            )
        )
    return out
