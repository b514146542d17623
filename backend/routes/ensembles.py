"""Seed ensembles: one order parameter across several finished analyses (read-only).

``GET /api/v1/ensembles?analyses=<id>,<id>,...&quantity=<measure.quantity>`` runs
``phasescope.phases.ensemble`` on the stored tables and findings of 2–16 finished analyses (typically
the seeds of one zoo recipe, ``zoo:induction-2l-seed<N>``): each one's transition step and interval,
the spread across them, and the collapse points (docs/api.md, "Seed ensembles").
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from backend.deps import StoreDep
from backend.errors import error_responses
from phasescope.errors import InvalidRequest
from phasescope.responses import EnsembleResponse
from phasescope.schemas import ANALYSIS_ID_PATTERN

__all__ = ["MAX_ANALYSES", "MIN_ANALYSES", "router"]

router = APIRouter(prefix="/ensembles", tags=["ensembles"])

MIN_ANALYSES = 2
MAX_ANALYSES = 16
_ID = re.compile(ANALYSIS_ID_PATTERN)
_POINT_COLUMNS = ("checkpoint", "value", "ln_t", "u", "m_norm")


def _ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise InvalidRequest(
            f"analyses: {bad[0][:40]!r} is not an analysis id (24 lowercase hex digits)", field="analyses"
        )
    if len(set(ids)) != len(ids):
        raise InvalidRequest("analyses: an id is listed twice", field="analyses")
    if not MIN_ANALYSES <= len(ids) <= MAX_ANALYSES:
        raise InvalidRequest(
            f"analyses: {len(ids)} ids; an ensemble takes {MIN_ANALYSES} to {MAX_ANALYSES}, comma-separated",
            field="analyses",
        )
    return ids


def _finite(value: Any) -> Any:
    # JSON has no NaN: a seed whose levels coincide has no normalised values.
    return None if isinstance(value, float) and not math.isfinite(value) else value


@router.get(
    "",
    operation_id="get_ensemble",
    response_model=EnsembleResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "JSON (format=json), or the collapse points as CSV (format=csv).",
        },
        **error_responses(404, 422),
    },
)
def get_ensemble(
    store: StoreDep,
    analyses: Annotated[
        str,
        Query(
            max_length=MAX_ANALYSES * 25,
            description=f"{MIN_ANALYSES}–{MAX_ANALYSES} finished analysis ids, comma-separated (one per seed).",
        ),
    ],
    quantity: Annotated[
        str, Query(max_length=80, description="An order parameter, measure.quantity, e.g. loss.loss.")
    ],
    format: Annotated[
        Literal["json", "csv"], Query(description="json, or csv: the collapse points with each seed's step.")
    ] = "json",
) -> Any:
    """Per-seed transition steps with intervals, their spread, and the collapse of one order parameter."""
    from phasescope.phases.ensemble import ensemble_report, order_parameter

    ids = _ids(analyses)
    op = order_parameter(quantity)  # 422 with the valid keys as choices
    tables, findings, models = {}, {}, {}
    for aid in ids:
        record = store.load_request(aid)  # 404 for an unknown analysis
        request = record["request"]
        if op.measure not in request["measures"]:
            raise InvalidRequest(
                f"analysis {aid} did not measure {op.measure!r}",
                field="quantity",
                choices=request["measures"],
            )
        if not store.is_finished(aid):
            raise InvalidRequest(
                f"analysis {aid} has not finished: an ensemble reads finished analyses only; wait for it",
                field="analyses",
            )
        tables[aid] = store.results(aid, measure=op.measure)
        findings[aid] = store.summary(aid).get("findings") or None
        models[aid] = request["model"]
    layers = []
    for report in ensemble_report(tables, quantity, findings=findings):
        out = report.to_dict(points=False)
        for seed in out["seeds"]:
            seed["id"] = seed.pop("label")
            seed["model"] = models[seed["id"]]
            seed.pop("layer")
        pts = report.points
        out["points"] = {"id": pts["label"].tolist() if len(pts) else []} | {
            c: [_finite(v) for v in pts[c].tolist()] if len(pts) else [] for c in _POINT_COLUMNS
        }
        out.pop("quantity")
        layers.append(out)
    body = {"quantity": quantity, "analyses": ids, "layers": layers}
    if format == "csv":
        return Response(_points_csv(body, models), media_type="text/csv")
    return body


def _points_csv(body: dict[str, Any], models: dict[str, str]) -> bytes:
    """The collapse points of every layer, one row each, with the seed's model, step and fit."""
    import pandas as pd

    frames = []
    for layer in body["layers"]:
        points = pd.DataFrame(layer["points"])
        seeds = pd.DataFrame(layer["seeds"])[["id", "step", "step_sd", "t_star", "width", "before", "after"]]
        frames.append(points.merge(seeds, on="id", how="left").assign(layer=layer["layer"]))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(table):
        table.insert(1, "model", table["id"].map(models))
        table.insert(0, "quantity", body["quantity"])
    return table.to_csv(index=False).encode()
