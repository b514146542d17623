"""Health: is Redis reachable, are workers alive, how deep is the queue, what the supervisor of
``phasescope up`` restarted; and a readiness probe."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backend.deps import optional_redis
from backend.errors import error_responses
from phasescope.responses import Health, Readiness
from phasescope.service.queue import get_queue

__all__ = ["router"]

router = APIRouter(tags=["health"])
log = logging.getLogger("phasescope.api")


def _workers(conn: Any, settings: Any) -> list[dict[str, Any]]:
    from rq import Worker

    queue = get_queue(conn, settings)
    out = []
    now = time.time()
    for w in Worker.all(queue=queue):
        beat = w.last_heartbeat.timestamp() if w.last_heartbeat else None
        age = None if beat is None else round(now - beat, 1)
        # An idle worker beats every 3 heartbeats (its blocking dequeue), a busy one every heartbeat.
        alive = age is not None and age < 3 * settings.worker_heartbeat_s + 30
        out.append({"name": w.name, "state": str(w.get_state()), "heartbeat_age_s": age, "alive": alive})
    return out


def _redis_mode(settings: Any) -> str:
    """``embedded`` also when REDIS_URL names our own embedded server (``phasescope up`` passes it on)."""
    from phasescope.service.redis_conn import EmbeddedRedis

    if not settings.redis_url or settings.redis_url == EmbeddedRedis(settings.redis_dir).url:
        return "embedded"
    return "external"


def _supervisor(settings: Any) -> dict[str, Any] | None:
    """The children of ``phasescope up`` as its supervisor last wrote them (None when not under it)."""
    from phasescope.service.supervisor import read_state, state_path

    state = read_state(state_path(settings))
    if state is None:
        return None
    children = [
        {k: c.get(k) for k in ("name", "pid", "state", "restarts", "started_at", "last_exit")}
        for c in state.get("children", [])
    ]
    return {
        "updated_at": state.get("updated_at"),
        "policy": state.get("policy"),
        "children": children,
        "ok": all(c["state"] == "running" for c in children),
    }


def _store(settings: Any) -> dict[str, Any]:
    """Whether the results store can be used, and the room left on its disk (MiB)."""
    from phasescope.service.storage import free_space_mib

    try:
        settings.store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the reason, not the path (the operator's log has that)
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return {"ok": False, "low_space": False, "detail": f"the results store cannot be created: {reason}"}
    free = free_space_mib(settings.store_dir)
    low = settings.min_free_disk_mb > 0 and free < settings.min_free_disk_mb
    out = {"ok": True, "low_space": low, "free_mb": round(free, 1), "min_free_mb": settings.min_free_disk_mb}
    if low:
        out["detail"] = (
            f"{free:.1f} MiB free on the data directory's disk, below PHASESCOPE_MIN_FREE_DISK_MB: "
            "new analyses are refused (507) until space is freed"
        )
    return out


def _health(request: Request) -> tuple[int, dict[str, Any]]:
    settings = request.app.state.settings
    conn = optional_redis(request)
    body: dict[str, Any] = {
        "redis": {"ok": False, "mode": _redis_mode(settings)},
        "store": _store(settings),
    }
    supervisor = _supervisor(settings)
    if supervisor is not None:
        body["supervisor"] = supervisor
    if conn is not None:
        try:
            conn.ping()
            queue = get_queue(conn, settings)
            body["redis"]["ok"] = True
            workers = _workers(conn, settings)
            body["workers"] = workers
            body["workers_alive"] = sum(w["alive"] for w in workers)
            body["queue"] = {
                "name": queue.name,
                "queued": queue.count,
                "started": queue.started_job_registry.count,
                "failed": queue.failed_job_registry.count,
            }
        except Exception as exc:  # any Redis trouble is a 503 with the reason, never a 500
            # The exception's text can hold the server's address or socket path: log it, send its kind.
            log.warning("health: Redis check failed: %s", exc)
            body["redis"]["detail"] = f"Redis cannot be reached ({type(exc).__name__}); see the API's log"
    ok = body["redis"]["ok"] and body["store"]["ok"]
    if not ok:
        body["status"] = "unavailable"
        return 503, body
    # Low on disk: reads and running jobs go on, new analyses are refused (507) until space is freed.
    body["status"] = "degraded" if body["store"]["low_space"] else "ok"
    return (507 if body["store"]["low_space"] else 200), body


@router.get(
    "/health",
    operation_id="health",
    response_model=Health,
    responses={
        503: {"model": Health, "description": "Redis or the results store cannot be used."},
        507: {"model": Health, "description": "Low on disk: new analyses are refused."},
        **error_responses(),
    },
)
def health(request: Request) -> JSONResponse:
    """Redis, workers, queue depth, free disk (503 when Redis or the store is unusable, 507 when low on disk)."""
    code, body = _health(request)
    return JSONResponse(body, status_code=code)


@router.get(
    "/health/ready",
    operation_id="readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}, **error_responses()},
)
def readiness(request: Request) -> JSONResponse:
    """Readiness for docker-compose: 200 once Redis and the store can be used (also low on disk), else 503."""
    _, body = _health(request)
    # A disk low on space still serves every finished result: ready, so nothing restarts the API.
    ready = body["status"] != "unavailable"
    return JSONResponse({"ready": ready, "status": body["status"]}, status_code=200 if ready else 503)
