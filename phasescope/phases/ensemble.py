"""Seed ensembles: one order parameter's transition across training seeds, and its collapse.

Pure numpy/pandas (the backend runs it on stored tables). Given one tidy results table per seed (or
per analysis), it reports for one order parameter (``measure.quantity``, per layer where it has
layers), as defined in docs/measures.md, "Seed ensembles":

- each seed's transition step with its interval, from the shipped findings
  (``phasescope.phases.findings``; stored findings are used when given);
- the spread of the steps across seeds (mean, SD, min–max) and the *spread ratio*: the seed SD over
  the RMS of the per-seed standard errors. Near 1 or below, the seeds' differences are what the
  per-seed uncertainty explains; well above 1, the seeds really do change phase at different steps;
- the collapse: each seed's series against ``u = (ln t − ln t*_seed) / w_seed`` with
  ``m̃ = (m − before) / (after − before)``, from that seed's own sigmoid fit, and the collapse
  quality ``Q``: the RMS over a common ``u`` grid of the seeds' spread around their mean, beside
  ``Q_raw``, the same for the uncollapsed curves (``ln t`` on the matching grid, one normalisation
  shared by all seeds). ``Q ≪ Q_raw`` says the transitions share one shape.

Heads are not aligned across seeds (which head of a layer becomes an induction head is up to the
seed), so for a per-head quantity each seed contributes, per layer, the head whose detected change
is largest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from phasescope.errors import InvalidRequest
from phasescope.phases.detect import fit_transition

__all__ = [
    "COLLAPSE_U_MAX",
    "EnsembleReport",
    "SeedTransition",
    "collapse_quality",
    "ensemble_report",
    "ensemble_reports",
    "order_parameter",
]

COLLAPSE_U_MAX = 3.0
"""The collapse is scored on ``|u| ≤ 3``: a sigmoid goes from 5% to 95% there, the transition itself."""
_GRID_POINTS = 101
_LN9 = math.log(9.0)  # a step's window is x₀ ± ln 9 · w (its 10–90% points)
_PEAK_HALF = math.sqrt(2 * math.log(2))  # a peak's window is x₀ ± 1.18 w (its half maxima)


@dataclass
class SeedTransition:
    """One seed's transition of one order parameter (one layer).

    Attributes:
        label: the seed's label (a seed number, or an analysis id).
        layer: the layer, None when the quantity is not per layer.
        head: the head the seed contributes (per-head quantities), else None.
        detected: whether the findings report a transition for this series.
        step: the transition step (findings), None when not detected.
        step_sd: its standard deviation (steps) over the findings' resamples.
        step_ci_lo: lower end of its 95% interval (None when the findings give none).
        step_ci_hi: upper end.
        uncertainty_method: how the findings resampled (prompt bootstrap, residual bootstrap...).
        t_star: ``exp(x₀)`` of the collapse fit (steps).
        width: ``w`` of the collapse fit (in ``ln t``).
        before: the fitted level before the transition (the sigmoid's left asymptote).
        after: the fitted level after it.
        reason: why there is no step, when there is none.
    """

    label: str
    layer: int | None
    head: int | None = None
    detected: bool = False
    step: float | None = None
    step_sd: float | None = None
    step_ci_lo: float | None = None
    step_ci_hi: float | None = None
    uncertainty_method: str = ""
    t_star: float | None = None
    width: float | None = None
    before: float | None = None
    after: float | None = None
    reason: str = ""


@dataclass
class EnsembleReport:
    """One order parameter (one layer) across the seeds of an ensemble.

    Attributes:
        quantity: ``measure.quantity``.
        layer: the layer, None when the quantity is not per layer.
        seeds: one entry per seed, in the order given.
        n_detected: seeds with a transition.
        step_mean: mean of their steps (None under 1 seed).
        step_sd: their SD, ``ddof = 1`` (None under 2 seeds).
        step_min: smallest step.
        step_max: largest step.
        rms_uncertainty: RMS of the per-seed standard deviations.
        spread_ratio: ``step_sd / rms_uncertainty``.
        collapse_quality: ``Q`` (module docstring), None under 2 seeds or without a common ``u`` range.
        uncollapsed_quality: ``Q_raw``.
        collapse_gain: ``Q_raw / Q``.
        u_range: the common ``u`` range ``Q`` is computed on.
        points: the collapse points: label, checkpoint, value, ln_t, u, m_norm (seeds with a
            transition only).
    """

    quantity: str
    layer: int | None
    seeds: list[SeedTransition]
    n_detected: int = 0
    step_mean: float | None = None
    step_sd: float | None = None
    step_min: float | None = None
    step_max: float | None = None
    rms_uncertainty: float | None = None
    spread_ratio: float | None = None
    collapse_quality: float | None = None
    uncollapsed_quality: float | None = None
    collapse_gain: float | None = None
    u_range: tuple[float, float] | None = None
    points: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def to_dict(self, points: bool = True) -> dict[str, Any]:
        """A JSON-able dict (non-finite floats as None); ``points`` as a list of records if asked."""
        out = {k: v for k, v in asdict(self).items() if k != "points"}
        out["seeds"] = [asdict(s) for s in self.seeds]
        out["u_range"] = list(self.u_range) if self.u_range is not None else None
        if points:
            out["points"] = self.points.to_dict(orient="records")
        return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def order_parameter(key: str) -> Any:
    """The registered order parameter ``measure.quantity`` (``phasescope.measures.registry``).

    Raises:
        InvalidRequest: ``key`` is not a registered order parameter (the valid keys are the choices).
    """
    from phasescope.measures.registry import order_parameters

    found = {op.key: op for op in order_parameters()}
    if key not in found:
        raise InvalidRequest(f"{key!r} is not an order parameter", field="quantity", choices=sorted(found))
    return found[key]


def _nan_to_none(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _series_findings(table: pd.DataFrame, op: Any, n_boot: int, seed: int) -> dict[str, Any]:
    """The findings of this order parameter alone (its rows and its per-prompt rows)."""
    from phasescope.phases.findings import find_transitions

    rows = table[
        (table["measure"] == op.measure) & table["quantity"].isin([op.quantity, f"{op.quantity}_prompt"])
    ]
    return find_transitions(rows, n_boot=n_boot, seed=seed)


def _collapse_fit(x: np.ndarray, m: np.ndarray, t: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """``(x₀, w, before, after)`` of a fine fit around the detected transition ``t``.

    The findings' fit places the centre well but keeps ``w`` on a coarse grid (steps of ×1.15): the
    collapse divides by ``w``, so it is refitted on a fine grid around it.
    """
    lo, hi = math.log(t["window_lo"]), math.log(t["window_hi"])
    x0 = (lo + hi) / 2
    w = (hi - lo) / (2 * (_LN9 if t["kind"] == "step" else _PEAK_HALF))
    span = 2 * w + float(np.diff(x).max())
    centres = np.linspace(max(x0 - span, x[0]), min(x0 + span, x[-1]), 161)
    fit = fit_transition(x, m, t["kind"], centres, np.geomspace(w / 2, w * 2, 49))
    return fit.x0, fit.w, float(fit.coef[0]), float(fit.coef[0] + fit.coef[1])


def _one_seed(
    label: str, rows: pd.DataFrame, transitions: list[dict[str, Any]], layer: int | None, op: Any
) -> tuple[SeedTransition, pd.DataFrame | None]:
    """One seed's entry and its collapse points (None when it has no transition)."""
    mine = [t for t in transitions if t["quantity"] == op.quantity and t.get("layer") == layer]
    if not mine:
        return SeedTransition(label, layer, reason="no transition detected"), None
    best = max(mine, key=lambda t: abs(t.get("size") or 0.0))
    head = best.get("head")
    series = rows if head is None else rows[rows["head"] == head]
    series = series.groupby("checkpoint", as_index=False)["value"].mean().sort_values("checkpoint")
    series = series[(series["checkpoint"] > 0) & series["value"].notna()]
    x, m = np.log(series["checkpoint"].to_numpy(float)), series["value"].to_numpy(float)
    x0, w, before, after = _collapse_fit(x, m, best)
    entry = SeedTransition(
        label=label,
        layer=layer,
        head=head,
        detected=True,
        step=_nan_to_none(best["step"]),
        step_sd=_nan_to_none(best.get("uncertainty")),
        step_ci_lo=_nan_to_none(best.get("step_ci_lo")),
        step_ci_hi=_nan_to_none(best.get("step_ci_hi")),
        uncertainty_method=str(best.get("uncertainty_method", "")),
        t_star=math.exp(x0),
        width=w,
        before=before,
        after=after,
    )
    scale = after - before if after != before else math.nan
    points = pd.DataFrame(
        {
            "label": label,
            "checkpoint": series["checkpoint"].to_numpy(int),
            "value": m,
            "ln_t": x,
            "u": (x - x0) / w,
            "m_norm": (m - before) / scale,
        }
    )
    return entry, points


def collapse_quality(curves: list[tuple[np.ndarray, np.ndarray]], lo: float, hi: float) -> float | None:
    """RMS over a grid of ``[lo, hi]`` of the curves' spread (population SD) around their mean.

    Args:
        curves: ``(abscissa, values)`` per seed, abscissa increasing.
        lo: grid start.
        hi: grid end.

    Returns:
        The RMS spread, or None with fewer than 2 curves or an empty range.
    """
    if len(curves) < 2 or not hi > lo:
        return None
    grid = np.linspace(lo, hi, _GRID_POINTS)
    stacked = np.array([np.interp(grid, a, v) for a, v in curves])
    return float(np.sqrt(np.mean(stacked.var(axis=0))))


def _collapse(report: EnsembleReport) -> None:
    """Fill in ``Q``, ``Q_raw`` and their ratio (docs/measures.md, "Seed ensembles")."""
    found = [s for s in report.seeds if s.detected]
    if len(found) < 2 or report.points.empty:
        return
    by = {label: g.sort_values("u") for label, g in report.points.groupby("label", sort=False)}
    curves = [(g["u"].to_numpy(), g["m_norm"].to_numpy()) for g in by.values()]
    lo = max(-COLLAPSE_U_MAX, max(c[0][0] for c in curves))
    hi = min(COLLAPSE_U_MAX, min(c[0][-1] for c in curves))
    report.u_range = (float(lo), float(hi)) if hi > lo else None
    report.collapse_quality = collapse_quality(curves, lo, hi)
    # Uncollapsed: ln t on the grid the mean seed maps to u ∈ [lo, hi], one shared normalisation.
    x0 = float(np.mean([math.log(s.t_star) for s in found]))  # type: ignore[arg-type]
    w = float(np.mean([s.width for s in found]))  # type: ignore[misc]
    before = float(np.mean([s.before for s in found]))  # type: ignore[misc]
    after = float(np.mean([s.after for s in found]))  # type: ignore[misc]
    raw = [
        (
            g.sort_values("ln_t")["ln_t"].to_numpy(),
            (g.sort_values("ln_t")["value"].to_numpy() - before) / (after - before),
        )
        for g in by.values()
    ]
    x_lo = max(x0 + w * lo, max(c[0][0] for c in raw))
    x_hi = min(x0 + w * hi, min(c[0][-1] for c in raw))
    report.uncollapsed_quality = collapse_quality(raw, x_lo, x_hi)
    q, q_raw = report.collapse_quality, report.uncollapsed_quality
    if q is not None and q_raw is not None and q > 0:
        report.collapse_gain = q_raw / q


def _spread(report: EnsembleReport) -> None:
    steps = np.array([s.step for s in report.seeds if s.detected and s.step is not None], float)
    sds = np.array([s.step_sd for s in report.seeds if s.detected and s.step_sd is not None], float)
    report.n_detected = len(steps)
    if len(steps):
        report.step_mean, report.step_min, report.step_max = (
            float(steps.mean()),
            float(steps.min()),
            float(steps.max()),
        )
    if len(steps) >= 2:
        report.step_sd = float(steps.std(ddof=1))
    if len(sds):
        report.rms_uncertainty = float(np.sqrt(np.mean(sds**2)))
        if report.step_sd is not None and report.rms_uncertainty > 0:
            report.spread_ratio = report.step_sd / report.rms_uncertainty


def ensemble_report(
    tables: Mapping[Any, pd.DataFrame],
    quantity: str,
    findings: Mapping[Any, dict[str, Any]] | None = None,
    n_boot: int = 50,
    seed: int = 0,
) -> list[EnsembleReport]:
    """The ensemble report of one order parameter, one per layer it has.

    Args:
        tables: one tidy results table per seed, keyed by a label (seed number, analysis id).
        quantity: a registered order parameter, ``measure.quantity`` (e.g. ``"loss.loss"``).
        findings: each table's stored findings (``find_transitions`` output), by the same labels;
            computed here (for this order parameter alone) where missing.
        n_boot: bootstrap resamples when findings are computed here.
        seed: seeds that bootstrap.

    Returns:
        One report per layer (a single one when the quantity is not per layer), layers ascending.

    Raises:
        InvalidRequest: ``quantity`` is not an order parameter, or no table holds it.
    """
    op = order_parameter(quantity)
    per_seed: dict[str, tuple[pd.DataFrame, list[dict[str, Any]]]] = {}
    layers: set[int | None] = set()
    for label, table in tables.items():
        rows = op.rows(table)
        given = (findings or {}).get(label)
        found = given if given is not None else _series_findings(table, op, n_boot, seed)
        per_seed[str(label)] = (rows, list(found.get("transitions", [])))
        layers.update(_opt_int(v) for v in rows["layer"].unique())
    if not layers:
        raise InvalidRequest(f"no table holds {quantity}", field="quantity")
    reports = []
    for layer in sorted(layers, key=lambda v: -1 if v is None else v):
        entries, points = [], []
        for label, (rows, transitions) in per_seed.items():
            mine = rows if layer is None else rows[rows["layer"] == layer]
            if mine.empty:
                entries.append(SeedTransition(label, layer, reason=f"no {quantity} rows"))
                continue
            entry, pts = _one_seed(label, mine, transitions, layer, op)
            entries.append(entry)
            if pts is not None:
                points.append(pts)
        report = EnsembleReport(quantity, layer, entries)
        report.points = pd.concat(points, ignore_index=True) if points else pd.DataFrame()
        _spread(report)
        _collapse(report)
        reports.append(report)
    return reports


def ensemble_reports(
    tables: Mapping[Any, pd.DataFrame],
    quantities: list[str] | None = None,
    n_boot: int = 50,
    seed: int = 0,
) -> list[EnsembleReport]:
    """``ensemble_report`` for several order parameters (default: every one the tables hold)."""
    from phasescope.measures.registry import order_parameters

    if quantities is None:
        quantities = [op.key for op in order_parameters() if any(len(op.rows(t)) for t in tables.values())]
    return [r for q in quantities for r in ensemble_report(tables, q, n_boot=n_boot, seed=seed)]
