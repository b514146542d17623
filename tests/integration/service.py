"""Real services for the integration tests: redis-server, RQ workers and the API as subprocesses.

Nothing is mocked: each helper starts the real program on a free port or socket, waits until it
answers, and stops it by its own pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

__all__ = [
    "FAST",
    "ApiServer",
    "RedisServer",
    "Stack",
    "WorkerProcess",
    "free_port",
    "http",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]
# Fast abandonment in tests: a job whose worker misses ~3 one-second heartbeats is retried.
FAST = {"PHASESCOPE_WORKER_HEARTBEAT_S": "1", "PHASESCOPE_WORKER_MAINTENANCE_S": "5"}


def _request(method: str) -> Callable[..., httpx.Response]:
    def call(url: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", 180)
        return httpx.request(method, url, **kwargs)

    return call


# One-shot requests with a generous timeout: under load, the first request naming a zoo model
# imports torch in the API process. No pooled client, so no socket outlives a test.
http = SimpleNamespace(
    get=_request("GET"), post=_request("POST"), put=_request("PUT"), delete=_request("DELETE")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy (a service is a process: we must poll)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the service is not up yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last error: {last_exc})")


class RedisServer:
    """A standalone redis-server on a free TCP port, with persistence, like an external Redis."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        from phasescope.service.redis_conn import redis_executable

        self.directory = directory
        self.port = port or free_port()
        self.exe = redis_executable()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, 15, f"redis-server on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        import redis

        if self.process is None or self.process.poll() is not None:
            return
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.shutdown(save=True)
        except (redis.ConnectionError, redis.ResponseError):
            pass
        finally:
            client.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, downtime: float = 0.5) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()


def _env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PHASESCOPE_") and k != "REDIS_URL"}
    base.update(env)
    base["PYTHONPATH"] = str(REPO)
    base.setdefault("OMP_NUM_THREADS", "1")
    return base


class WorkerProcess:
    """``phasescope worker`` in a subprocess, logging to a file."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.env = env
        self.name = name
        self.log = log_dir / f"worker-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "phasescope", "worker", "--threads", "1", "--name", self.name],
                env=_env(self.env),
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the current job
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text()[-n:] if self.log.is_file() else ""


class ApiServer:
    """``phasescope api`` (uvicorn) in a subprocess on a free port."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log = log_dir / "api.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True) -> ApiServer:
        """Start uvicorn and wait until it answers (``ready``: until its readiness check passes)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "phasescope",
                    "api",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=_env(self.env),
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited: {self.log.read_text()[-2000:]}")
            code = httpx.get(f"{self.url}/api/v1/health/ready", timeout=5).status_code
            return code == 200 or not ready

        wait_for(up, 120, "the API to be ready", interval=0.2)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def sorted_table(frame: Any) -> Any:
    """A results table in one canonical row and column order, values as stored (float32): two runs of
    the same request compare equal with ``DataFrame.equals`` whatever order their parts came in."""
    stored_as_float32 = ["value", "se", "ci_lo", "ci_hi"]  # phasescope.service.storage
    keys = [c for c in frame.columns if c not in stored_as_float32]
    frame = frame.copy()
    for column in stored_as_float32:
        if column in frame:
            frame[column] = frame[column].astype("float32")
    return frame.sort_values(keys, na_position="first").reset_index(drop=True)[sorted(frame.columns)]


def local_table(model: str, steps: list[int], measures: list[str]) -> Any:
    """What ``phasescope analyze`` computes in this process for the same request (default inputs)."""
    from phasescope.analysis.run import run_local
    from phasescope.schemas import InputSpec, MeasureParams

    table, _ = run_local(model, steps, measures, InputSpec(), MeasureParams())
    return table


@dataclass
class Stack:
    """The service as a user runs it: an API and workers sharing a data directory and a Redis."""

    data_dir: Path
    env: dict[str, str]
    api: ApiServer
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.api.url

    def add_worker(self, name: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(self.env, self.log_dir, name or f"w{len(self.workers) + 1}").start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.api.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.tail()}" for w in self.workers)
