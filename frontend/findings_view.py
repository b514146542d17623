"""The overview's findings table: every number the analysis's findings report, each with its interval.

Rows come from the findings as the API gives them (``phasescope.phases.findings`` output in the
status): each transition's step with its 95% interval (``step_ci_lo``, ``step_ci_hi``; older findings:
± its standard deviation), each χ peak (``susceptibility``) with its interval, value ± se, baseline,
significance and whether it lies in the transition window, and each critical exponent (``exponents``)
with its interval, or why it is not supported. Nothing is recomputed here.
"""

from __future__ import annotations

import math
from typing import Any

from dash import html

__all__ = ["findings_rows", "findings_table"]

COLUMNS = ("finding", "series", "value", "95% interval", "notes")


def _f(value: Any, fmt: str = ".0f") -> str:
    """A number as text, "?" when it is missing or not finite."""
    if value is None:
        return "?"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "?"
    return format(v, fmt) if math.isfinite(v) else "?"


def _series(entry: dict[str, Any]) -> str:
    name = str(entry.get("quantity", "?"))
    if entry.get("layer") is None:
        return name
    return name + f" L{entry['layer']}" + ("" if entry.get("head") is None else f"H{entry['head']}")


def _has(entry: dict[str, Any], *keys: str) -> bool:
    return all(entry.get(k) is not None and _f(entry.get(k)) != "?" for k in keys)


def _transition_row(t: dict[str, Any]) -> dict[str, str]:
    if _has(t, "step_ci_lo", "step_ci_hi"):
        interval = f"[{_f(t['step_ci_lo'])}, {_f(t['step_ci_hi'])}]"
    elif _has(t, "uncertainty"):
        interval = f"± {_f(t['uncertainty'])} (sd)"
    else:
        interval = "none"
    notes = [
        f"window [{_f(t.get('window_lo'))}, {_f(t.get('window_hi'))}]",
        f"{_f(t.get('before'), '.3g')} → {_f(t.get('after'), '.3g')}",
    ]
    if t.get("uncertainty_method"):
        notes.append(str(t["uncertainty_method"]))
    return {
        "finding": f"transition ({t.get('kind', 'step')})",
        "series": _series(t),
        "value": f"step {_f(t.get('step'))}",
        "95% interval": interval,
        "notes": "; ".join(notes),
    }


def _peak_row(p: dict[str, Any]) -> dict[str, str]:
    where = {
        True: f"inside the window of the transition at step {_f(p.get('transition_step'))}",
        False: f"outside the window of the transition at step {_f(p.get('transition_step'))}",
    }.get(p.get("in_window"), "no transition in this series")
    return {
        "finding": "χ peak",
        "series": _series(p),
        "value": f"step {_f(p.get('peak_step'))}",
        "95% interval": f"[{_f(p.get('peak_ci_lo'))}, {_f(p.get('peak_ci_hi'))}]",
        "notes": (
            f"χ = {_f(p.get('peak_value'), '.3g')} ± {_f(p.get('peak_se'), '.2g')} (se), baseline "
            f"{_f(p.get('baseline'), '.3g')}; {'significant' if p.get('significant') else 'not significant'}; "
            + where
        ),
    }


def _exponent_row(e: dict[str, Any]) -> dict[str, str]:
    supported = bool(e.get("supported"))
    return {
        "finding": f"exponent b ({e.get('side', '?')})",
        "series": _series(e),
        "value": f"b = {_f(e.get('b'), '.3g')}" if supported else "not supported",
        "95% interval": f"[{_f(e.get('b_ci_lo'), '.3g')}, {_f(e.get('b_ci_hi'), '.3g')}]"
        if supported
        else "—",
        "notes": f"{e.get('n_points', '?')} checkpoints in the fit window"
        if supported
        else str(e.get("reason") or f"{e.get('n_points', '?')} checkpoints; no reason given"),
    }


def findings_rows(findings: dict[str, Any] | None) -> list[dict[str, str]]:
    """One row per reported number: transitions, then χ peaks, then exponents (``COLUMNS`` as keys)."""
    if not findings:
        return []
    return [
        *[_transition_row(t) for t in findings.get("transitions") or []],
        *[_peak_row(p) for p in findings.get("susceptibility") or []],
        *[_exponent_row(e) for e in findings.get("exponents") or []],
    ]


def findings_table(findings: dict[str, Any] | None, limit: int = 60) -> html.Details | None:
    """The findings as an HTML table (at most ``limit`` rows, then a count), or None before there are any."""
    rows = findings_rows(findings)
    if not rows:
        return None
    shown = rows[:limit]
    more = (
        [html.Div(f"… and {len(rows) - limit} more in the API's findings", className="muted")]
        if len(rows) > limit
        else []
    )
    return html.Details(
        [
            html.Summary(
                f"Findings: {len(rows)} numbers, each with its 95% interval (transitions, χ peaks, exponents)"
            ),
            html.Table(
                [
                    html.Thead(html.Tr([html.Th(c) for c in COLUMNS])),
                    html.Tbody([html.Tr([html.Td(r[c]) for c in COLUMNS]) for r in shown]),
                ],
                className="simple findings",
            ),
            *more,
        ],
        id="findings-table",
        className="card",
        open=True,
    )
