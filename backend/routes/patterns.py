"""Attention patterns of an analysis: the small per-checkpoint artefact the workers keep for the dashboard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from backend.deps import StoreDep
from backend.errors import error_responses
from phasescope.responses import PatternIndex, PatternMatrix
from phasescope.schemas import ANALYSIS_ID_PATTERN
from phasescope.service.patterns import pattern_index, read_pattern

__all__ = ["router"]

router = APIRouter(prefix="/analyses", tags=["patterns"])

_INDEX = Annotated[int, Query(ge=0, le=10**6)]


@router.get(
    "/{analysis_id}/patterns",
    operation_id="get_patterns",
    response_model=PatternMatrix | PatternIndex,
    responses=error_responses(404, 422),
)
def get_patterns(
    analysis_id: Annotated[
        str, Path(pattern=ANALYSIS_ID_PATTERN, description="Analysis id (24 hex digits).")
    ],
    store: StoreDep,
    checkpoint: Annotated[int | None, Query(ge=0, le=10**12, description="Step; omit for the index.")] = None,
    layer: _INDEX = 0,
    head: _INDEX = 0,
    prompt: _INDEX = 0,
) -> dict[str, Any]:
    """One attention pattern with its tokens, or (without checkpoint) which patterns were kept."""
    store.load_request(analysis_id)  # 404 for an unknown analysis
    if checkpoint is None:
        return pattern_index(store, analysis_id)
    return read_pattern(store, analysis_id, checkpoint, layer, head, prompt)
