"""One exception tree for phasescope.

    PhasescopeError                  root: every error we raise on purpose
    ├── InvalidRequest               the user asked for something malformed or over a limit
    ├── NotFound                     an unknown model, checkpoint, analysis or zoo series
    │   ├── ModelNotFound
    │   └── CheckpointNotFound
    ├── PathNotAllowed               a local path outside the configured model roots
    ├── ModelLoadError               weights exist but could not be loaded or converted
    ├── MeasureError                 a measure could not be computed on these inputs
    └── ServiceUnavailable           Redis or workers cannot be reached
        └── HubUnavailable           the Hugging Face hub did not answer (in time)

Exceptions carry context (model, checkpoint, field, choices) so the CLI can print one clear line and
the backend can answer with JSON that tells a person what to change. Only ``backend/`` turns them into
HTTP responses.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointNotFound",
    "HubUnavailable",
    "InvalidRequest",
    "MeasureError",
    "ModelLoadError",
    "ModelNotFound",
    "NotFound",
    "PathNotAllowed",
    "PhasescopeError",
    "ServiceUnavailable",
]


class PhasescopeError(Exception):
    """Root of every error phasescope raises on purpose.

    Args:
        message: one sentence a person can act on.
        field: the request field at fault, when there is one.
        choices: valid alternatives to offer (e.g. known checkpoints), truncated for display.
        context: extra facts (model, checkpoint, layer) kept for logs and JSON bodies.
    """

    http_status = 400
    code = "error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        choices: list[Any] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.choices = choices
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        """The JSON body the API returns: ``{error, detail, field}`` plus choices when known."""
        body: dict[str, Any] = {"error": self.code, "detail": self.message, "field": self.field}
        if self.choices is not None:
            body["choices"] = self.choices[:50]
        return body


class InvalidRequest(PhasescopeError):
    http_status = 422
    code = "invalid_request"


class NotFound(PhasescopeError):
    http_status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class CheckpointNotFound(NotFound):
    code = "checkpoint_not_found"


class PathNotAllowed(PhasescopeError):
    http_status = 403
    code = "path_not_allowed"


class ModelLoadError(PhasescopeError):
    http_status = 422
    code = "model_load_error"


class MeasureError(PhasescopeError):
    http_status = 422
    code = "measure_error"


class ServiceUnavailable(PhasescopeError):
    http_status = 503
    code = "service_unavailable"


class HubUnavailable(ServiceUnavailable):
    code = "hub_unavailable"
