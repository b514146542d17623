"""What the analysis view needs from the API, shaped for the figures (all through ``frontend.client``).

Also where the overview's transition marker comes from: ``phasescope.phases.detect`` (pure pandas) when it
is installed, else the steepest change of the loss in log(step).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from frontend import client

__all__ = ["ORDER_PARAMETERS", "analysis_meta", "order_options", "steepest_change", "transition"]

# Order parameters per (layer, head) the overview can colour by, in the order they are offered.
ORDER_PARAMETERS = (
    "heads.induction_score",
    "heads.prev_token_score",
    "entropy.entropy_mean",
    "entropy.entropy_norm_mean",
    "entropy.k90_mean",
    "thermo.beta_star",
    "thermo.heat_capacity_max",
    "spectra.stable_rank",
    "spectra.effective_rank",
    "spectra.gap",
)


def order_options(measures: list[str]) -> list[str]:
    """The order parameters an analysis with ``measures`` has."""
    return [q for q in ORDER_PARAMETERS if q.split(".")[0] in measures]


_META: dict[tuple[str, str], dict[str, Any]] = {}


def analysis_meta(aid: str) -> dict[str, Any]:
    """Status plus what the view needs to lay itself out: checkpoints, measures, model shape.

    Raises:
        client.ApiError: the API's error (unknown id, service down), to be shown as worded.
    """
    key = (client.api_base(), aid)
    if key in _META:
        return _META[key]
    state = client.status(aid)
    finished = state["status"] == "finished"
    measures = list(state.get("measures") or [])
    meta: dict[str, Any] = {
        "id": aid,
        "model": state.get("model"),
        "status": state["status"],
        "progress": state.get("progress", {}),
        "errors": state.get("errors", []),
        "finished": finished,
        "measures": measures,
        "checkpoints": sorted(state.get("checkpoints") or []),
        "request": state.get("request", {}),
        "n_layers": 0,
        "n_heads": 0,
        "options": order_options(measures),
    }
    probe = meta["options"][0] if meta["options"] else None
    if probe and meta["checkpoints"] and (finished or state["progress"].get("done")):
        measure, quantity = probe.split(".")
        frame = client.slice_table(aid, measure, quantity, finished=finished)
        if len(frame):
            meta["n_layers"] = int(frame["layer"].max()) + 1
            meta["n_heads"] = int(frame["head"].max()) + 1
            meta["done_checkpoints"] = sorted(int(s) for s in frame["checkpoint"].unique())
    if finished:  # a finished analysis never changes (its id hashes the request)
        _META[key] = meta
    return meta


def steepest_change(loss: pd.DataFrame) -> dict[str, Any] | None:
    """Where the loss changes fastest in log(step): ``{step, lo, hi, label}`` (neighbours as the band).

    >>> frame = pd.DataFrame({"checkpoint": [0, 100, 200, 400, 800], "value": [4.1, 4.0, 3.9, 1.0, 0.7]})
    >>> steepest_change(frame)["step"]
    400
    """
    rows = loss[loss["checkpoint"] > 0].groupby("checkpoint")["value"].mean().sort_index()
    if len(rows) < 3:
        return None
    t = np.log(rows.index.to_numpy(dtype=float))
    m = rows.to_numpy(dtype=float)
    slope = np.abs(np.gradient(m, t))
    i = int(np.nanargmax(slope))
    steps = rows.index.to_list()
    return {
        "step": int(steps[i]),
        "lo": int(steps[max(0, i - 1)]),
        "hi": int(steps[min(len(steps) - 1, i + 1)]),
        "label": f"steepest loss change ≈ step {steps[i]}",
        "method": "steepest |d loss / d log step|",
    }


def _from_phases(table: pd.DataFrame) -> dict[str, Any] | None:
    """The loss transition by ``phasescope.phases.detect`` (None when that module is not installed)."""
    try:
        from phasescope.phases.describe import summarise
        from phasescope.phases.detect import detect_transitions
    except ImportError:
        return None
    found = detect_transitions(table, n_boot=50)
    method = "phasescope.phases.detect (sigmoid/peak fit in ln step)"
    if not found:
        return {
            "step": None,
            "label": "no transition detected",
            "summary": summarise(found),
            "method": method,
        }
    on_loss = [t for t in found if t.quantity == "loss"]
    t = (on_loss or found)[0]
    unc = t.uncertainty if math.isfinite(t.uncertainty) else None
    lo, hi = (t.step - unc, t.step + unc) if unc else (t.step_lo, t.step_hi)
    pm = f" ± {unc:.0f}" if unc else ""
    return {
        "step": int(round(t.step)),
        "lo": max(lo, 1e-9),
        "hi": hi,
        "label": f"transition ≈ step {t.step:.0f}{pm}",
        "summary": summarise(found),
        "method": f"{method}, {t.uncertainty_method}",
    }


_TRANSITIONS: dict[tuple[str, str], dict[str, Any] | None] = {}


def transition(aid: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The transition to mark on the overview, or None (no loss, too few checkpoints)."""
    if "loss" not in meta["measures"]:
        return None
    key = (client.api_base(), aid)
    if meta["finished"] and key in _TRANSITIONS:
        return _TRANSITIONS[key]
    table = client.slice_table(aid, "loss", "loss", finished=meta["finished"])
    if "heads" in meta["measures"] and meta["n_layers"] * meta["n_heads"] <= 64:
        # Per-head induction scores say which heads moved with the loss (small models only: one fit each).
        table = pd.concat(
            [table, client.slice_table(aid, "heads", "induction_score", finished=meta["finished"])]
        )
    try:
        found = _from_phases(table)
    except Exception:  # a detector that cannot read this table must not blank the overview
        found = None
    result = found or steepest_change(table[table["quantity"] == "loss"])
    if meta["finished"]:
        _TRANSITIONS[key] = result
    return result
