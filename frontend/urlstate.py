"""A view's full state in the URL: ``/analyses/<id>?tab=…&quantity=…&layer=…`` and back.

Every control of the analysis view is one query parameter, so the address bar is a share link. Bad
or stale values (a hand-edited link, a layer that does not exist) fall back to defaults, never to an
error page.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["DEFAULTS", "KEYS", "TABS", "parse_state", "to_query"]

TABS = ("overview", "entropy", "thermo", "spectra", "landscape", "dynamics", "fields", "patterns")
KEYS = ("tab", "quantity", "layer", "head", "checkpoint", "beta", "xscale", "yscale", "matrix", "prompt")
DEFAULTS: dict[str, Any] = {
    "tab": "overview",
    "quantity": None,  # "measure.quantity"; None: the first order parameter the analysis has
    "layer": "all",
    "head": "all",
    "checkpoint": None,  # a training step; None: the last checkpoint
    "beta": 1.0,
    "xscale": "log",  # transitions are read in log(step)
    "yscale": "linear",
    "matrix": None,
    "prompt": 0,
}


def _int_or_all(value: Any) -> int | str:
    if value in (None, "", "all"):
        return "all"
    return int(value)


def _clean(key: str, value: Any) -> Any:
    if key == "tab":
        return value if value in TABS else DEFAULTS["tab"]
    if key in ("xscale", "yscale"):
        return value if value in ("linear", "log") else DEFAULTS[key]
    if key in ("layer", "head"):
        return _int_or_all(value)
    if key in ("checkpoint", "prompt"):
        number = int(value)
        if number < 0:
            raise ValueError(key)
        return number
    if key == "beta":
        beta = float(value)
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(key)
        return beta
    return str(value) if value not in (None, "") else None


def parse_state(query: str | dict[str, Any] | None) -> dict[str, Any]:
    """The view state from a query string (``?a=1&b=2`` or a dict); unknown keys are ignored.

    >>> parse_state("?tab=thermo&layer=1&beta=0.5")["beta"]
    0.5
    >>> parse_state({"layer": "x"})["layer"]
    'all'
    """
    if isinstance(query, str):
        query = dict(parse_qsl(query.lstrip("?")))
    state = dict(DEFAULTS)
    for key in KEYS:
        if query and key in query:
            try:
                state[key] = _clean(key, query[key])
            except (TypeError, ValueError):
                state[key] = DEFAULTS[key]
    return state


def to_query(state: dict[str, Any]) -> str:
    """The query string of a state, keys in a fixed order, unset ones left out.

    >>> to_query({"tab": "thermo", "layer": 1, "beta": 0.5, "checkpoint": None})
    'tab=thermo&layer=1&beta=0.5'
    """
    items = [(k, state[k]) for k in KEYS if state.get(k) is not None]
    return urlencode([(k, v if not isinstance(v, float) else f"{v:g}") for k, v in items])
