"""What a finished analysis says: its summary, written once by ``finalize``, and its status read back.

Split from ``phasescope.service.queue`` (which submits, follows and merges): the merged table's
digest, findings and shape are computed here once, when the last part is in, and every later status
read of a finished analysis is answered from ``summary.json`` alone, without Redis.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

from phasescope.models.shape import model_shape
from phasescope.responses import marked_transition
from phasescope.service.store import ResultStore

__all__ = ["finished_status", "stored_shape", "write_final"]


def write_final(store: ResultStore, aid: str, record: dict[str, Any]) -> None:
    """Merge the parts into ``results.parquet`` and write ``summary.json`` (digest, findings, shape)."""
    import json

    from phasescope.phases.digest import checkpoint_digest
    from phasescope.phases.findings import find_transitions

    table = store.results(aid)
    meta = store.part_meta(aid)
    finished_at = time.time()
    created = float(record.get("created_at") or finished_at)
    request = record["request"]
    summary = {
        "id": aid,
        "status": "finished",
        "model": request["model"],
        "checkpoints": record["steps"],
        "measures": request["measures"],
        "rows": len(table),
        "created_at": created,
        "finished_at": finished_at,
        "wall_seconds": round(finished_at - created, 3),
        "seconds_per_checkpoint": {str(s): m.get("seconds") for s, m in sorted(meta.items())},
        "workers": sorted({str(m.get("worker")) for m in meta.values() if m.get("worker")}),
        "digest": json.loads(checkpoint_digest(table).to_json(orient="index")) if len(table) else {},
        # Where the model changes phase: computed once here, served with every status read.
        "findings": find_transitions(table),
        "shape": model_shape(record.get("model_shape"), table),
    }
    store.finalize(aid, summary)


def stored_shape(record: dict[str, Any], path: Any) -> dict[str, int | None] | None:
    """The model's shape from the layer and head columns of one stored table (read alone: cheap)."""
    import pandas as pd

    table = None
    if path is not None:
        with suppress(OSError, ValueError, KeyError):
            table = pd.read_parquet(path, columns=["layer", "head"])
    return model_shape(record.get("model_shape"), table)


def _findings(summary: dict[str, Any]) -> dict[str, Any] | None:
    findings = summary.get("findings")
    if findings is None:
        return None
    return {**findings, "marked": marked_transition(findings.get("transitions") or [])}


def finished_status(store: ResultStore, aid: str, record: dict[str, Any]) -> dict[str, Any]:
    """The status of a finished analysis, from its summary (``queue.status``'s keys)."""
    summary = store.summary(aid)
    total = len(record["steps"])
    shape = summary.get("shape")
    if shape is None:  # finished before shapes were recorded: read it off the table
        shape = stored_shape(record, store.results_path(aid))
    return {
        "status": "finished",
        "progress": {
            "done": total,
            "total": total,
            "fraction": 1.0,
            "current_checkpoint": None,
            "running": [],
            "queued": 0,
            "failed": 0,
        },
        "timings": {
            "created_at": summary.get("created_at", record.get("created_at")),
            "finished_at": summary.get("finished_at"),
            "elapsed_seconds": summary.get("wall_seconds"),
            "wall_seconds": summary.get("wall_seconds"),
            "seconds_per_checkpoint": summary.get("seconds_per_checkpoint", {}),
        },
        "errors": [],
        "rows": summary.get("rows"),
        "findings": _findings(summary),
        "shape": shape,
        "queue_reachable": None,  # a finished analysis is read from the store alone
    }
