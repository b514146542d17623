"""Retention: what ``phasescope gc`` deletes from the results store and Redis, and what it never does.

With ``Settings.retention_days`` = *R*, a collection removes:

- **expired** analyses: finished (``summary.json``) more than *R* days ago, by their ``finished_at``;
- **stale** analyses: unfinished ones created more than *R* days ago (by ``created_at``) with no live
  job (none queued, started, deferred or scheduled): cancelled, failed or abandoned;
- **orphaned records**: store folders with an analysis id for a name but no ``request.json``, and the
  ``.deleting-*`` folders of an interrupted delete, once they are an hour old (a submit writes its
  folder and its request within a second, so an hour-old folder without one is left over); and RQ job
  records (``rq:job:<analysis id>-<step>``) whose analysis is no longer in the store, unless the job is
  running (deleting its record under a busy worker would fail the job's bookkeeping instead);
- **unused cache entries**: files of the reuse cache (``phasescope.service.reuse``) not read or written for
  more than *R* days (last use = the later of the file's access and modification times; Linux's
  default ``relatime`` updates the access time at least once a day).

An unfinished analysis with a live job is never deleted, and when Redis cannot be reached no
unfinished analysis is (whether it has a live job cannot be known): only finished ones and old folders
go. Each analysis is deleted with its folder renamed first (``ResultStore.delete``), so a reader never
sees half of one, and its RQ job records go with it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq.job import Job, JobStatus

from phasescope.config import Settings, get_settings
from phasescope.schemas import ANALYSIS_ID_PATTERN
from phasescope.service.store import ResultStore

__all__ = ["Collection", "collect", "delete"]

DAY_S = 86400.0
ORPHAN_GRACE_S = 3600.0
_ID = re.compile(ANALYSIS_ID_PATTERN)
# rq:job:<analysis id>-<step> (phasescope.service.queue.job_id)
_JOB_KEY = re.compile(r"^rq:job:(" + ANALYSIS_ID_PATTERN.strip("^$") + r")-(\d+)$")
_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED}
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


@dataclass
class Collection:
    """What a collection found to delete (ids, paths, job ids), and what it kept and why.

    Attributes:
        expired: finished analyses past the retention, with their age in days.
        stale: unfinished analyses past the retention with no live job, with their age in days.
        orphan_dirs: left-over folders under the store.
        orphan_jobs: RQ job ids whose analysis is gone.
        cache_files: reuse-cache files unused for longer than the retention.
        kept_live: unfinished analyses past the retention kept because a job of theirs is live.
        redis_ok: whether Redis answered (when not, no unfinished analysis is touched).
    """

    expired: dict[str, float] = field(default_factory=dict)
    stale: dict[str, float] = field(default_factory=dict)
    orphan_dirs: list[Path] = field(default_factory=list)
    orphan_jobs: list[str] = field(default_factory=list)
    cache_files: list[Path] = field(default_factory=list)
    kept_live: list[str] = field(default_factory=list)
    redis_ok: bool = True

    def lines(self) -> list[str]:
        """One line per thing to delete, for ``phasescope gc``."""
        out = [f"analysis {a} (finished {d:.1f} days ago)" for a, d in sorted(self.expired.items())]
        out += [
            f"analysis {a} (unfinished, created {d:.1f} days ago, no live job)"
            for a, d in sorted(self.stale.items())
        ]
        out += [f"folder {p.name} (left over)" for p in self.orphan_dirs]
        out += [f"job record {j} (its analysis is gone)" for j in self.orphan_jobs]
        out += [f"cache file {p.parent.name}/{p.name} (unused)" for p in self.cache_files]
        return out

    def notes(self) -> list[str]:
        """What was kept although old, and why."""
        out = [f"kept analysis {a}: a job of it is queued or running" for a in self.kept_live]
        if not self.redis_ok:
            out.append("Redis cannot be reached: unfinished analyses and job records were not looked at")
        return out


def _age_days(stamp: object, now: float) -> float | None:
    try:
        return (now - float(stamp)) / DAY_S  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collect(
    store: ResultStore, conn: redis.Redis | None, settings: Settings | None = None, now: float | None = None
) -> Collection:
    """Find what a collection would delete; deletes nothing.

    Args:
        store: the results store.
        conn: the queue's Redis, or None (then unfinished analyses and job records are left alone).
        settings: ``retention_days`` comes from here.
        now: the current time (Unix seconds); default the clock.
    """
    settings = settings or get_settings()
    now = time.time() if now is None else now
    days = settings.retention_days
    found = Collection(redis_ok=conn is not None)
    unfinished: dict[str, tuple[float, list[int]]] = {}
    root = store.root
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".deleting-") and path.is_dir():
            if now - path.stat().st_mtime > ORPHAN_GRACE_S:
                found.orphan_dirs.append(path)
            continue
        if not (_ID.match(path.name) and path.is_dir()):
            continue
        aid = path.name
        if not (path / "request.json").is_file():
            if now - path.stat().st_mtime > ORPHAN_GRACE_S:
                found.orphan_dirs.append(path)
            continue
        if store.is_finished(aid):
            age = _age_days(_json(path / "summary.json").get("finished_at"), now)
            if age is not None and age > days:
                found.expired[aid] = age
            continue
        record = _json(path / "request.json")
        age = _age_days(record.get("created_at"), now)
        if age is not None and age > days:
            unfinished[aid] = (age, [int(s) for s in record.get("steps") or []])
    if conn is not None:
        try:
            _look_at_redis(conn, store, unfinished, found)
        except _REDIS_DOWN:
            found.redis_ok = False
            found.stale.clear()
            found.kept_live.clear()
            found.orphan_jobs.clear()
    found.cache_files = _unused_cache_files(root, now - days * DAY_S)
    return found


def _look_at_redis(
    conn: redis.Redis, store: ResultStore, unfinished: dict[str, tuple[float, list[int]]], found: Collection
) -> None:
    """Sort the old unfinished analyses into stale and live, and find job records without an analysis."""
    for aid, (age, steps) in sorted(unfinished.items()):
        if _has_live_job(conn, aid, steps):
            found.kept_live.append(aid)
        else:
            found.stale[aid] = age
    orphans = []
    for key in conn.scan_iter(match="rq:job:*", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        match = _JOB_KEY.match(name)
        if match and not store.has_request(match.group(1)):
            orphans.append(name.removeprefix("rq:job:"))
    for job in Job.fetch_many(orphans, connection=conn):
        if job is not None and job.get_status(refresh=False) != JobStatus.STARTED:
            found.orphan_jobs.append(job.id)


def _unused_cache_files(store_root: Path, before: float) -> list[Path]:
    from phasescope.service.reuse import CACHE_DIR

    cache = store_root / CACHE_DIR
    if not cache.is_dir():
        return []
    old = []
    for path in sorted(cache.rglob("*")):
        if path.is_file():
            st = path.stat()
            if max(st.st_atime, st.st_mtime) < before:
                old.append(path)
    return old


def _has_live_job(conn: redis.Redis | None, aid: str, steps: list[int]) -> bool:
    if conn is None:
        return True
    try:
        jobs = Job.fetch_many([f"{aid}-{s}" for s in steps], connection=conn)
    except _REDIS_DOWN:
        return True
    return any(j is not None and j.get_status(refresh=False) in _LIVE for j in jobs)


def delete(found: Collection, store: ResultStore, conn: redis.Redis | None) -> int:
    """Delete what ``collect`` found; returns how many things were deleted.

    Job records of a deleted analysis go with it (best-effort: Redis may be away; they are then
    orphans for the next collection).
    """
    count = 0
    for aid in [*found.expired, *found.stale]:
        steps = _json(store.root / aid / "request.json").get("steps") or []
        if aid in found.stale and _has_live_job(conn, aid, steps):
            continue  # submitted again since collect(): it is not stale any more
        store.delete(aid)
        count += 1
        if conn is not None:
            try:
                for job in Job.fetch_many([f"{aid}-{s}" for s in steps], connection=conn):
                    if job is not None and job.get_status(refresh=False) != JobStatus.STARTED:
                        job.delete()
            except _REDIS_DOWN:
                pass
    for path in found.orphan_dirs:
        shutil.rmtree(path, ignore_errors=True)
        count += 1
    if conn is not None and found.orphan_jobs:
        try:
            for job in Job.fetch_many(found.orphan_jobs, connection=conn):
                if job is not None:
                    job.delete()
                    count += 1
        except _REDIS_DOWN:
            pass
    for path in found.cache_files:
        path.unlink(missing_ok=True)
        count += 1
    return count
