"""Findings of an analysis: the transitions of its order parameters and one sentence about them.

Runs ``phasescope.phases.detect`` on a finished results table (pure pandas: the backend and the CLI both call
it). Which series are order parameters, and how each is reduced to one value per checkpoint, is the
table below; per-head quantities are tested head by head.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from phasescope.phases.describe import co_moving, summarise
from phasescope.phases.detect import Transition, detect_transitions

__all__ = ["ORDER_PARAMETERS", "find_transitions"]

# (measure, quantity, extra row filter, shapes): one value per checkpoint per (layer, head) after the
# filter. Order parameters that change level (loss, scores, β*, ranks) are fitted as steps only: a
# bump on a step would otherwise win on an asymmetric rise and put the "transition" at the bump.
# Sharpness and the LLC rise and fall back during a transition, so they may also be peaks.
STEP = ("step",)
STEP_OR_PEAK = ("step", "peak")
ORDER_PARAMETERS: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("loss", "loss", {}, STEP),
    ("loss", "loss_train", {}, STEP),
    ("loss", "accuracy_train", {}, STEP),
    ("loss", "loss_test", {}, STEP),
    ("loss", "accuracy_test", {}, STEP),
    ("heads", "induction_score", {}, STEP),
    ("heads", "prev_token_score", {}, STEP),
    ("thermo", "beta_star", {}, STEP),
    ("entropy", "entropy_mean", {}, STEP),
    ("spectra", "stable_rank", {}, STEP),
    ("sharpness", "hessian_eigenvalue", {"index": 0}, STEP_OR_PEAK),
    ("llc", "llc_mean", {}, STEP_OR_PEAK),
]
MIN_CHECKPOINTS = 6  # two on each side of a transition plus its interval (phases' min_side = 2)


def _series(table: pd.DataFrame, measure: str, quantity: str, where: dict[str, Any]) -> pd.DataFrame:
    rows = table[(table["measure"] == measure) & (table["quantity"] == quantity)]
    for column, value in where.items():
        if column in rows:
            rows = rows[rows[column] == value]
    return rows[["quantity", "checkpoint", "layer", "head", "value"]]


def find_transitions(table: pd.DataFrame, n_boot: int = 50, seed: int = 0) -> dict[str, Any]:
    """Detect transitions in every order parameter the table holds.

    Args:
        table: a tidy results table over several checkpoints.
        n_boot: bootstrap resamples for each transition's uncertainty.
        seed: seeds the bootstrap.

    Returns:
        ``{"transitions": [Transition.to_dict(), ...], "groups": [[index, ...], ...],
        "summary": str, "checkpoints": int}`` — ``groups`` lists transitions that move together
        (indices into ``transitions``); ``summary`` is one sentence per group, or says why there is
        nothing to report.
    """
    steps = sorted(s for s in table["checkpoint"].unique() if s > 0) if len(table) else []
    if len(steps) < MIN_CHECKPOINTS:
        return {
            "transitions": [],
            "groups": [],
            "checkpoints": len(steps),
            "summary": f"{len(steps)} checkpoints after step 0: at least {MIN_CHECKPOINTS} are needed to detect a transition",
        }
    found: list[Transition] = []
    for measure, quantity, where, kinds in ORDER_PARAMETERS:
        series = _series(table, measure, quantity, where)
        if series["checkpoint"].nunique() < MIN_CHECKPOINTS:
            continue
        found.extend(detect_transitions(series, kinds=kinds, n_boot=n_boot, seed=seed))
    found.sort(key=lambda t: t.step)
    index = {id(t): i for i, t in enumerate(found)}
    groups = [[index[id(t)] for t in group] for group in co_moving(found)]
    return {
        "transitions": [t.to_dict() for t in found],
        "groups": groups,
        "summary": summarise(found) if found else "no transition",
        "checkpoints": len(steps),
    }
