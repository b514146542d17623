"""One exception tree for phasescope.

    PhasescopeError                  root: every error we raise on purpose
    ├── InvalidRequest               the user asked for something malformed or over a limit
    ├── NotFound                     an unknown model, checkpoint, analysis or zoo series
    │   ├── ModelNotFound
    │   └── CheckpointNotFound
    ├── PathNotAllowed               a local path outside the configured model roots
    ├── ModelLoadError               weights exist but could not be loaded or converted
    ├── MeasureError                 a measure could not be computed on these inputs
    ├── RateLimited                  a client wrote faster than the write rate allows (HTTP 429)
    ├── StorageError                 the data directory refuses writes (read-only, permissions)
    │   └── StorageFull              no space, quota or file-size room left on its disk (HTTP 507)
    └── ServiceUnavailable           Redis or workers cannot be reached
        ├── HubUnavailable           the Hugging Face hub did not answer (in time)
        └── QueueFull                the job queue holds max_queued_jobs already

Exceptions carry context (model, checkpoint, field, choices) so the CLI can print one clear line and
the API can answer with JSON that tells a person what to change. Only the API turns them into HTTP
responses (the library never imports it).
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
    "QueueFull",
    "RateLimited",
    "ServiceUnavailable",
    "StorageError",
    "StorageFull",
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


class RateLimited(PhasescopeError):
    """Too many writes from one client; context ``retry_after_s`` (seconds) becomes ``Retry-After``."""

    http_status = 429
    code = "rate_limited"


class QueueFull(ServiceUnavailable):
    """The queue is at its cap; context ``retry_after_s`` (seconds) becomes ``Retry-After``."""

    code = "queue_full"


class StorageError(PhasescopeError):
    """The data directory cannot be written (read-only filesystem, permissions): an operator must act."""

    http_status = 503
    code = "storage_error"


class StorageFull(StorageError):
    """No space (or quota, or file-size room) left on the data directory's disk.

    Context ``free_mb`` / ``min_free_mb`` (MiB), when known, are added to the JSON body.
    """

    http_status = 507
    code = "insufficient_storage"

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body.update({k: self.context[k] for k in ("free_mb", "min_free_mb") if k in self.context})
        return body
