"""Models and their checkpoints: what can be analysed, listed without loading weights."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from backend.deps import SettingsDep
from backend.errors import error_responses
from phasescope.responses import CheckpointList, ModelList

__all__ = ["router", "tl_model_names"]

router = APIRouter(prefix="/models", tags=["models"])


def tl_model_names() -> list[str]:
    """TransformerLens's official model names, from phasescope's catalog (the API never imports torch)."""
    from phasescope.models.tl_catalog import official_names

    return official_names()


@router.get("", operation_id="list_models", response_model=ModelList, responses=error_responses(422))
def list_models(
    settings: SettingsDep,
    include_tl: Annotated[bool, Query(description="Also list TransformerLens pretrained names.")] = True,
) -> dict[str, Any]:
    """The zoo, series and Hugging Face directories under the model roots, and TransformerLens names."""
    from phasescope.models.loading import list_models as catalogue

    models = [asdict(info) for info in catalogue(settings)]
    body: dict[str, Any] = {"models": models}
    if include_tl:
        body["transformer_lens"] = [f"tl:{name}" for name in tl_model_names()]
    return body


@router.get(
    "/{model:path}/checkpoints",
    operation_id="list_model_checkpoints",
    response_model=CheckpointList,
    # 503: a hub: model whose branches the hub did not list in time.
    responses=error_responses(403, 404, 422, 503),
)
def list_model_checkpoints(
    model: Annotated[
        str, Path(min_length=1, max_length=300, description="A model string, e.g. zoo:induction-2l.")
    ],
    settings: SettingsDep,
) -> dict[str, Any]:
    """The training steps of one model (404 with the valid choices for an unknown model)."""
    from phasescope.models.loading import list_checkpoints, parse_model_spec

    ref = parse_model_spec(model, settings)
    steps = list_checkpoints(ref, settings)
    return {"model": model, "kind": ref.kind, "n_checkpoints": len(steps), "checkpoints": steps}
