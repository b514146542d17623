"""What the analysis view needs from the API, shaped for the figures (all through ``frontend.client``).

The view lays itself out from the analysis's status alone: its checkpoints, measures, the model's
shape (``shape``) and where it changes phase (``findings``) are what the API says, never recomputed
here, so the dashboard marks the same transition as the API and the CLI.
"""

from __future__ import annotations

import math
from typing import Any

from frontend import client
from phasescope.measures import quantities

__all__ = ["analysis_meta", "order_options", "transition"]


def order_options(measures: list[str]) -> list[str]:
    """The per-head order parameters the overview offers for an analysis with ``measures``, as
    ``"measure.quantity"`` in the registry's order (``Quantity.offered`` holds ``"overview"``)."""
    return [key for key, _ in quantities(offered="overview", measures_run=measures)]


_META: dict[tuple[str, str], dict[str, Any]] = {}


def analysis_meta(aid: str) -> dict[str, Any]:
    """What the view needs to lay itself out, from the analysis's status (no results are read).

    Returns:
        The status's words (``model``, ``status``, ``progress``, ``errors``, ``measures``,
        ``checkpoints``, ``request``, ``findings``), plus ``finished``, ``n_layers`` / ``n_heads``
        (0 while the model's shape is not known), ``done_checkpoints`` (the stored ones) and
        ``options`` (the order parameters it has).

    Raises:
        client.ApiError: the API's error (unknown id, service down), to be shown as worded.
    """
    key = (client.api_base(), aid)
    if key in _META:
        return _META[key]
    state = client.status(aid)
    finished = state["status"] == "finished"
    measures = list(state.get("measures") or [])
    shape = state.get("shape") or {}
    # The stored checkpoints: each has its measuring time in the status.
    done = sorted(int(s) for s in (state.get("timings") or {}).get("seconds_per_checkpoint") or {})
    meta: dict[str, Any] = {
        "id": aid,
        "model": state.get("model"),
        "status": state["status"],
        "progress": state.get("progress", {}),
        "errors": state.get("errors", []),
        "finished": finished,
        "measures": measures,
        "checkpoints": sorted(state.get("checkpoints") or []),
        "done_checkpoints": done,
        "request": state.get("request", {}),
        "findings": state.get("findings"),
        "n_layers": shape.get("n_layers") or 0,
        "n_heads": shape.get("n_heads") or 0,
        "options": order_options(measures),
    }
    if finished:  # a finished analysis never changes (its id hashes the request)
        _META[key] = meta
    return meta


def _where(t: dict[str, Any]) -> str:
    if t.get("layer") is None:
        return t["quantity"]
    head = f", head {t['head']}" if t.get("head") is not None else ""
    return f"{t['quantity']} (layer {t['layer']}{head})"


def transition(aid: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The transition the analysis's findings mark (``findings.marked``), shaped for the figures.

    Returns:
        ``{step, lo, hi, label, summary, method}`` (``step`` None when nothing was detected), or
        None before the findings exist (the analysis has not finished). ``lo``, ``hi``: the step's
        95% interval (``step_ci_lo``, ``step_ci_hi``) where the findings give one, else ± its
        standard deviation, else the checkpoints around it.
    """
    findings = meta.get("findings")
    if not findings:
        return None
    method = "the analysis's findings"
    index = findings.get("marked")
    if index is None:
        return {
            "step": None,
            "label": "no transition detected",
            "summary": findings["summary"],
            "method": method,
        }
    t = findings["transitions"][index]
    unc = t.get("uncertainty")
    unc = unc if unc is not None and math.isfinite(unc) and unc > 0 else None
    ci = [t.get("step_ci_lo"), t.get("step_ci_hi")]
    if all(v is not None and math.isfinite(v) for v in ci) and ci[1] > ci[0]:
        # The 95% interval of the step (prompt bootstrap): the band, and the label says it.
        lo, hi = ci
        pm = f" [{lo:.0f}, {hi:.0f}]"
    else:
        lo, hi = (t["step"] - unc, t["step"] + unc) if unc else (t["step_lo"], t["step_hi"])
        pm = f" ± {unc:.0f}" if unc else ""
    return {
        "step": int(round(t["step"])),
        "lo": max(lo, 1e-9),
        "hi": hi,
        "label": f"transition ≈ step {t['step']:.0f}{pm} in {_where(t)}",
        "summary": findings["summary"],
        "method": f"{method}: {t['method']}, {t['uncertainty_method']}",
        "finding": index,
    }
