"""Which job failures earn an RQ retry: only those a second run can get past."""

from __future__ import annotations

import errno

import pytest
import redis
from rq.timeouts import JobTimeoutException

from phasescope.errors import HubUnavailable, InvalidRequest, ModelLoadError, StorageError, StorageFull
from workers.jobs import _worth_retrying


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EROFS, "Read-only file system"),
        PermissionError(errno.EACCES, "Permission denied"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        StorageFull("full"),
        StorageError("read-only"),
        InvalidRequest("bad"),
        ModelLoadError("broken weights"),
        JobTimeoutException("too long"),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__ + (f"-{errno.errorcode[e.errno]}" if getattr(e, "errno", None) else ""),
)
def test_failures_that_would_repeat_are_not_retried(exc: BaseException) -> None:
    assert not _worth_retrying(exc)


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("Redis went away"),
        redis.TimeoutError("Redis timed out"),
        HubUnavailable("hub timed out"),
        OSError(errno.EAGAIN, "Resource temporarily unavailable"),
        OSError(errno.ESTALE, "Stale file handle"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        MemoryError(),
        SystemExit(0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_failures_a_second_run_can_get_past_are_retried(exc: BaseException) -> None:
    assert _worth_retrying(exc)
