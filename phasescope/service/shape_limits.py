"""Limits that depend on the model's shape, checked at POST when the model's files declare it.

``head_llc`` runs one sampler per head and is priced on ``params.head_llc_max_heads`` heads
(``phasescope.service.cost``), so a model with more heads must be refused, or the price would be wrong.
The worker refuses it when it loads the model (``phasescope.measures.head_llc``); here the same refusal
comes at submit, as a 422, for the series whose manifest declares their layers and heads (zoo and
local series: ``phasescope.models.shape.declared_shape``). Hugging Face and TransformerLens models
declare no shape without their config being downloaded or converted, so for them the worker's
refusal stands (the job fails with the same message, naming the same field).
"""

from __future__ import annotations

from phasescope.config import Settings, get_settings
from phasescope.errors import InvalidRequest
from phasescope.schemas import AnalysisRequest

__all__ = ["check_shape_limits"]


def check_shape_limits(request: AnalysisRequest, settings: Settings | None = None) -> None:
    """Refuse a request whose measures cannot run on the model's declared shape.

    Args:
        request: the validated request.
        settings: where the zoo and the model roots are.

    Raises:
        InvalidRequest: ``head_llc`` is asked for and the model declares more heads (layers × heads per
            layer) than ``params.head_llc_max_heads``; the error's field is that parameter.
    """
    if "head_llc" not in request.measures:
        return
    from phasescope.models.shape import declared_shape

    shape = declared_shape(request.model, settings or get_settings()) or {}
    n_layers, n_heads = shape.get("n_layers"), shape.get("n_heads")
    if not n_layers or not n_heads:
        return  # not declared: the worker checks it once the model is loaded
    heads, limit = n_layers * n_heads, request.params.head_llc_max_heads
    if heads > limit:
        raise InvalidRequest(
            f"head_llc samples each head separately and {request.model} has {heads} heads ({n_layers} "
            f"layers × {n_heads}), over params.head_llc_max_heads = {limit}: set head_llc_max_heads to "
            f"{heads} (its cost is priced per head) or leave head_llc out",
            field="params.head_llc_max_heads",
        )
