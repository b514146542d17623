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

import pandas as pd

from phasescope.measures.registry import order_parameters
from phasescope.phases.describe import co_moving, summarise
from phasescope.phases.detect import Transition, detect_transitions

__all__ = ["find_transitions"]

MIN_CHECKPOINTS = 6  # two on each side of a transition plus its interval (phases' min_side = 2)


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
    for op in order_parameters():
        series = op.rows(table)[["quantity", "checkpoint", "layer", "head", "value"]]
        if series["checkpoint"].nunique() < MIN_CHECKPOINTS:
            continue
        found.extend(detect_transitions(series, kinds=op.kinds, n_boot=n_boot, seed=seed))
    found.sort(key=lambda t: t.step)
    index = {id(t): i for i, t in enumerate(found)}
    groups = [[index[id(t)] for t in group] for group in co_moving(found)]
    return {
        "transitions": [t.to_dict() for t in found],
        "groups": groups,
        "summary": summarise(found) if found else "no transition",
        "checkpoints": len(steps),
    }
