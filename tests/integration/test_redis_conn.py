"""The embedded Redis: started under the data directory, persistent, shut down cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

from phasescope.config import get_settings
from phasescope.service.redis_conn import EmbeddedRedis, connect, redis_url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_server_persists_and_stops_cleanly(data_dir):
    settings = get_settings()
    conn = connect(settings)
    assert redis_url(settings).startswith("unix://")
    conn.set("k", "v")
    server = EmbeddedRedis(settings.redis_dir)
    pid = int((settings.redis_dir / "redis.pid").read_text())
    # Another process finds the same server through the data directory.
    code = "from phasescope.service.redis_conn import connect; print(connect(start=False).get('k').decode())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True
    )
    assert out.stdout.strip() == "v"
    conn.close()  # an open client must not keep the server alive after stop()
    server.stop()
    assert not _alive(pid) and not server.ping()
    # Restarted, it still has the data (append-only file under the data directory).
    conn = connect(settings)
    assert conn.get("k") == b"v"
    new_pid = int((settings.redis_dir / "redis.pid").read_text())
    assert new_pid != pid
    EmbeddedRedis(settings.redis_dir).stop()
    assert not _alive(new_pid)


def test_process_that_started_it_stops_it_at_exit(data_dir):
    subprocess.run(
        [sys.executable, "-c", "from phasescope.service.redis_conn import connect; connect().ping()"],
        check=True,
    )
    assert not EmbeddedRedis(get_settings().redis_dir).ping()
