"""Findings of an analysis: the transitions of its order parameters and one sentence about them.

Runs ``phasescope.phases.detect`` on a finished results table (pure pandas: the backend and the CLI both call
it). Which series are order parameters, their row filter and the transition shapes fitted to them
are declared by the measures (``phasescope.measures.registry.order_parameters``); per-head
quantities are tested head by head. Order parameters that change level (loss, scores, β*, ranks) are
fitted as steps only: a bump on a step would otherwise win on an asymmetric rise and put the
"transition" at the bump. Sharpness and the LLC rise and fall back during a transition, so they may
also be peaks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from phasescope.measures.registry import OrderParameter, order_parameters
from phasescope.phases.describe import co_moving, summarise
from phasescope.phases.detect import Transition, detect_transitions
from phasescope.phases.exponents import ExponentFit, fit_exponents
from phasescope.phases.replicates import aligned, prompt_matrices, prompt_rows, series_key
from phasescope.phases.susceptibility import CHI_SUFFIX, SusceptibilityPeak, susceptibility_peaks

__all__ = ["find_transitions"]

MIN_CHECKPOINTS = 6  # two on each side of a transition plus its interval (phases' min_side = 2)


def _measured(series: pd.DataFrame) -> pd.DataFrame:
    """The series' finite values, of the (quantity, layer, head) series measured at enough checkpoints.

    A value may be NaN where it could not be measured (a correlation length with nothing to fit):
    such a series is tested on the checkpoints where it was measured, if there are enough of them.
    """
    series = series[series["value"].notna()]
    after = series[series["checkpoint"] > 0]
    counts = after.groupby(["quantity", "layer", "head"], dropna=False)["checkpoint"].nunique()
    enough = counts[counts >= MIN_CHECKPOINTS].index
    keys = pd.MultiIndex.from_frame(series[["quantity", "layer", "head"]])
    return series[keys.isin(enough)]


def _chi_rows(table: pd.DataFrame, op: OrderParameter) -> pd.DataFrame:
    rows = table[(table["measure"] == op.measure) & (table["quantity"] == op.quantity + CHI_SUFFIX)]
    for column, value in op.where:
        if column in rows:
            rows = rows[rows[column] == value]
    return rows


def _exponents(
    series: pd.DataFrame, prompts: dict[Any, pd.DataFrame], found: list[Transition], n_boot: int, seed: int
) -> list[ExponentFit]:
    """Exponents on both sides of the located steps (a coarse one has no inside to fit).

    Every model-level and per-layer step; of per-head steps, per quantity and layer only the head
    whose step is largest (the exponents of a layer's heads say the same thing, and each fit costs a
    full grid search).
    """
    steps_found = [t for t in found if t.kind == "step" and not t.coarse]
    largest: dict[tuple[str, int | None], Transition] = {}
    for t in steps_found:
        if t.head is not None:
            held = largest.get((t.quantity, t.layer))
            if held is None or abs(t.size) > abs(held.size):
                largest[(t.quantity, t.layer)] = t
    chosen = [t for t in steps_found if t.head is None or largest[(t.quantity, t.layer)] is t]
    out = []
    rng = np.random.default_rng(seed)
    series = series[(series["checkpoint"] > 0) & series["value"].notna()]
    by_key = {
        series_key(q, layer, head): group
        for (q, layer, head), group in series.groupby(["quantity", "layer", "head"], dropna=False)
    }
    for t in chosen:
        rows = by_key[(t.quantity, t.layer, t.head)].sort_values("checkpoint")
        steps = rows["checkpoint"].to_numpy(dtype=float)
        key = (t.quantity, t.layer, t.head)
        per_prompt = aligned(prompts.get(key), steps)
        out.extend(
            fit_exponents(
                steps,
                rows["value"].to_numpy(dtype=float),
                key=key,
                per_prompt=per_prompt,
                n_boot=n_boot,
                rng=rng,
            )
        )
    return out


def find_transitions(table: pd.DataFrame, n_boot: int = 100, seed: int = 0) -> dict[str, Any]:
    """Detect transitions in every order parameter the table holds, with χ peaks and exponents.

    Where the table has an order parameter's per-prompt rows (``q_prompt``), the transition step's
    interval comes from a paired bootstrap over the prompts; otherwise from a residual bootstrap.
    Where it has its susceptibility rows (``q_chi``), the χ peak is located and judged
    (``phasescope.phases.susceptibility``); located steps get an exponent fit on each side
    (``phasescope.phases.exponents``; per-head steps: the largest per quantity and layer). Only series with a transition are bootstrapped for the step.

    Args:
        table: a tidy results table over several checkpoints.
        n_boot: bootstrap resamples for each interval (the step's, the χ peak's, the exponent's).
        seed: seeds the bootstrap.

    Returns:
        ``{"transitions": [Transition.to_dict(), ...], "groups": [[index, ...], ...],
        "susceptibility": [SusceptibilityPeak.to_dict(), ...], "exponents": [ExponentFit.to_dict(),
        ...], "summary": str, "checkpoints": int}`` — ``groups`` lists transitions that move together
        (indices into ``transitions``); ``summary`` is one sentence per group (with the χ peaks and
        supported exponents), or says why there is nothing to report.
    """
    steps = sorted(s for s in table["checkpoint"].unique() if s > 0) if len(table) else []
    if len(steps) < MIN_CHECKPOINTS:
        return {
            "transitions": [],
            "groups": [],
            "susceptibility": [],
            "exponents": [],
            "checkpoints": len(steps),
            "summary": f"{len(steps)} checkpoints after step 0: at least {MIN_CHECKPOINTS} are needed to detect a transition",
        }
    found: list[Transition] = []
    peaks: list[SusceptibilityPeak] = []
    exponents: list[ExponentFit] = []
    for op in order_parameters():
        series = _measured(op.rows(table)[["quantity", "checkpoint", "layer", "head", "value"]])
        if series["checkpoint"].nunique() < MIN_CHECKPOINTS:
            continue
        prompts = prompt_matrices(prompt_rows(table, op))
        per_prompt = {}
        measured = series[(series["checkpoint"] > 0) & series["value"].notna()]
        for (q, layer, head), group in measured.groupby(["quantity", "layer", "head"], dropna=False):
            key = series_key(q, layer, head)
            arr = aligned(prompts.get(key), np.sort(group["checkpoint"].unique()).astype(float))
            if arr is not None:
                per_prompt[key] = arr
        these = detect_transitions(series, per_prompt=per_prompt, kinds=op.kinds, n_boot=n_boot, seed=seed)
        found.extend(these)
        chi = _chi_rows(table, op)
        if len(chi):
            peaks.extend(susceptibility_peaks(chi, prompts, these, n_boot=n_boot, seed=seed))
        exponents.extend(_exponents(series, prompts, these, n_boot, seed))
    found.sort(key=lambda t: t.step)
    index = {id(t): i for i, t in enumerate(found)}
    groups = [[index[id(t)] for t in group] for group in co_moving(found)]
    return {
        "transitions": [t.to_dict() for t in found],
        "groups": groups,
        "susceptibility": [p.to_dict() for p in peaks],
        "exponents": [e.to_dict() for e in exponents],
        "summary": summarise(found, peaks, exponents) if found or peaks else "no transition",
        "checkpoints": len(steps),
    }
