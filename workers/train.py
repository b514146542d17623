"""The job function RQ workers run to train one zoo series (``phasescope zoo train --seeds … --service``).

Enqueued by dotted name (the ``train-job`` entry point in pyproject.toml, read by
``phasescope.zoo.service``), so the library never imports it. The series is written into this worker's
zoo directory through ``train_series``: a staging directory, the manifest last, one rename, so a job
that dies leaves nothing that looks trained, and a complete series is not trained again.
"""

from __future__ import annotations

import time
from typing import Any

from phasescope.config import get_settings

__all__ = ["train_zoo_series"]


def train_zoo_series(name: str) -> dict[str, Any]:
    """Train the zoo series ``name`` (a variant, e.g. ``induction-2l-seed3``) unless it is complete.

    Returns:
        ``{"model", "trained", "seconds"}``: its model string, whether this job trained it (False when
        it was already complete), and the job's wall seconds. No server path: the result is public.
    """
    from phasescope.zoo import get_variant, is_trained, train_series

    settings = get_settings()
    variant = get_variant(name)
    t0 = time.perf_counter()
    trained = not is_trained(variant.name, settings)
    train_series(variant.name, progress=False, settings=settings)
    return {"model": variant.model, "trained": trained, "seconds": round(time.perf_counter() - t0, 2)}
