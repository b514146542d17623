"""``phasescope up``: Redis, workers and the API + dashboard on one machine, supervised, stopped together.

The launcher owns every process it starts: the embedded Redis (unless ``REDIS_URL`` names another
server), ``n`` RQ worker processes and one API process (uvicorn serving the REST API and the
dashboard). A child that dies is restarted with backoff (``phasescope.service.supervisor``); one that keeps
dying stops the deployment with the reason. Ctrl-C or SIGTERM stops the API and workers first (so
nothing writes to Redis after it is gone), then saves and shuts down Redis: no orphan
``redis-server`` or worker is left behind.

With ``demo=True`` it also trains the missing zoo series (with progress) and submits the standard
analyses; analyses are content-addressed, so a second start finds them finished and is ready in
seconds.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phasescope.config import Settings, get_settings
from phasescope.errors import ServiceUnavailable
from phasescope.service.supervisor import (
    Child,
    RestartPolicy,
    Supervisor,
    describe_exit,
    log_tail,
    state_path,
)

__all__ = [
    "DEMO_ANALYSES",
    "DEMO_SERIES",
    "LATE_SERIES",
    "Launcher",
    "MAX_CPU_WORKERS",
    "default_worker_count",
    "run_up",
    "settings_with",
]

# Trained before the services start (about 20 s each on 2 cores) and analysed first.
DEMO_SERIES = ("induction-2l", "induction-1l")
# Trained after the dashboard is up (about 100 s): the demo does not wait for it.
LATE_SERIES = ("grokking-p59",)
DEMO_ANALYSES: dict[str, dict] = {
    "induction-2l": {"checkpoints": "all"},
    "induction-1l": {"checkpoints": "all"},
    "grokking-p59": {"checkpoints": "all"},
}
Say = Callable[[str], None]


# More CPU workers than this cost memory (each holds torch and TransformerLens, ~0.6 GB) for little gain.
MAX_CPU_WORKERS = 8


def default_worker_count() -> int:
    """One worker per GPU; on CPU one per core (up to ``MAX_CPU_WORKERS``), each with one torch thread.

    On CPU the parallelism that pays is across checkpoints, not inside one: in docs/benchmarks.md
    (benchmark 4) the 41-checkpoint sweep on 2 cores takes 21 s with 2 workers × 1 thread, 40 s with
    1 worker × 2 threads (164 s in a busier run) and 49 s with 1 worker × 1 thread. The zoo's tensors
    are small, and OpenMP threads wait on each other whenever anything else runs.
    """
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return max(1, min(os.cpu_count() or 1, MAX_CPU_WORKERS))


@dataclass
class Launcher:
    """Start, supervise and stop the processes of one phasescope deployment.

    Every child is handed to a ``phasescope.service.supervisor.Supervisor``: a worker, the API or the
    embedded Redis that dies is restarted with backoff (Redis on the same socket and data directory,
    so the others reconnect to it), and only a child that keeps dying stops the deployment.

    Args:
        settings: where data lives, which Redis to use, the restart policy.
        workers: worker processes (0: ``default_worker_count()``).
        threads: torch threads per worker (0: the cores shared out among the workers).
        host: interface the API listens on.
        port: the API + dashboard port.
        say: where progress lines go.
    """

    settings: Settings = field(default_factory=get_settings)
    workers: int = 0
    threads: int = 0
    host: str = "127.0.0.1"
    port: int = 8000
    say: Say = print
    supervisor: Supervisor | None = None

    def __post_init__(self) -> None:
        if self.supervisor is None:
            self.supervisor = Supervisor(
                RestartPolicy.from_settings(self.settings), state_path(self.settings), say=self.say
            )

    @property
    def url(self) -> str:
        return f"http://{self.host if self.host != '0.0.0.0' else '127.0.0.1'}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def _env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PHASESCOPE_DATA_DIR"] = str(self.settings.data_dir)
        # Children never start a Redis of their own: while ours restarts they wait for it.
        env["REDIS_URL"] = redis_url
        return env

    def start_redis(self) -> str:
        """The Redis URL every child uses; starts (and supervises) the embedded server when needed."""
        assert self.supervisor is not None
        if self.settings.redis_url:
            return self.settings.redis_url
        from phasescope.service.redis_conn import EmbeddedRedis

        server = EmbeddedRedis(self.settings.redis_dir)

        def start() -> subprocess.Popen:
            # Same directory, socket and append-only file every time: the queue survives a restart.
            try:
                started = server.start()
            except ServiceUnavailable:
                if server.process is not None:
                    server.process.wait()  # start() killed the server that did not come up: reap it
                raise
            if not started:
                raise ServiceUnavailable(f"another process already runs a Redis at {server.url}")
            assert server.process is not None
            return server.process

        if server.ping():
            self.say(f"reusing the embedded Redis already running at {server.url} (not supervised)")
            return server.url
        self.supervisor.add(
            Child("redis", start, log=self.settings.redis_dir / "redis.log", stop=lambda _: server.stop())
        )
        self.say(f"embedded Redis started ({server.url}, data in {self.settings.redis_dir})")
        return server.url

    def start_services(self, redis_url: str) -> None:
        """Start the workers and the API, then wait until the API answers its readiness check."""
        self.start_workers(redis_url)
        self.start_api(redis_url)

    def start_workers(self, redis_url: str) -> None:
        """Start and supervise the worker processes."""
        assert self.supervisor is not None
        n = self.workers or default_worker_count()
        cores = os.cpu_count() or 1
        threads = self.threads or max(1, cores // n)
        env = self._env(redis_url)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        gpus = _gpu_count()
        for i in range(n):
            cmd = [sys.executable, "-m", "phasescope", "worker", "--threads", str(threads)]
            if gpus > 1:
                cmd += ["--gpu", str(i)]
            log = self.log_dir / f"worker-{i}.log"
            self.supervisor.add(Child(f"worker-{i}", functools.partial(_spawn, cmd, env, log), log=log))
        self.say(f"{n} worker(s) started, {threads} torch thread(s) each (logs in {self.log_dir})")

    def start_api(self, redis_url: str) -> None:
        """Start the API, wait until it is ready, then supervise it.

        Raises:
            ServiceUnavailable: it exited or did not become ready; the message gives its exit code
                (or that it still runs) and the last lines of its log.
        """
        assert self.supervisor is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "phasescope",
            "api",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        log = self.log_dir / "api.log"
        start = functools.partial(_spawn, cmd, self._env(redis_url), log)
        process = start()
        try:
            self._wait_ready(process, log)
        except BaseException:
            if process.poll() is None:
                process.kill()
            process.wait()
            raise
        # Supervised only once it has come up: an API that cannot start (a port taken) is an error
        # to report now, not a child to restart.
        self.supervisor.add(Child("api", start, log=log, process=process))
        self.say(f"API and dashboard at {self.url}  (REST: {self.url}/api/v1, OpenAPI: {self.url}/docs)")

    def _wait_ready(self, process: subprocess.Popen, log: Path) -> None:
        import httpx

        assert self.supervisor is not None
        timeout = self.settings.api_ready_timeout_s
        deadline = time.monotonic() + timeout
        last = "it never answered"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceUnavailable(
                    f"the API process (pid {process.pid}) {describe_exit(process.returncode)} before it "
                    f"became ready; is port {self.port} free? Last lines of {log}:\n{log_tail(log)}"
                )
            try:
                answer = httpx.get(f"{self.url}/api/v1/health/ready", timeout=2)
                if answer.status_code == 200:
                    return
                last = f"its readiness check last answered {answer.status_code}: {answer.text[:300]}"
            except httpx.HTTPError as exc:
                last = f"its readiness check last failed: {type(exc).__name__}"
            self.supervisor.poll()  # a worker or Redis that dies meanwhile is restarted (or gives up)
            time.sleep(0.3)
        raise ServiceUnavailable(
            f"the API (pid {process.pid}, still running) did not become ready at {self.url} within "
            f"{timeout:.0f} s ({last}); on a loaded machine raise PHASESCOPE_API_READY_TIMEOUT_S. "
            f"Last lines of {log}:\n{log_tail(log)}"
        )

    def train(self, names: tuple[str, ...]) -> None:
        """Train the zoo series that are missing (a finished series is reused)."""
        from phasescope.zoo import is_trained, train_series

        for name in names:
            if is_trained(name):
                continue
            self.say(f"training zoo:{name} (first start only)")
            train_series(name, progress=True)

    def submit_demo(self, names: tuple[str, ...]) -> dict[str, str]:
        """Submit the standard analysis of each series; returns series name → analysis view URL."""
        from phasescope.service.client import Client

        views = {}
        with Client(self.url, token=self.settings.api_token) as client:
            for name in names:
                state = client.submit(f"zoo:{name}", **DEMO_ANALYSES[name])
                views[name] = f"{self.url}/analyses/{state['id']}"
                self.say(f"zoo:{name}: analysis {state['id']} {state['status']} -> {views[name]}")
        return views

    def wait_forever(self, on_tick: Callable[[], None] | None = None) -> None:
        """Supervise the children until Ctrl-C/SIGTERM.

        Raises:
            ChildGaveUp: a child kept dying (see ``phasescope.service.supervisor``).
        """
        assert self.supervisor is not None
        signal.signal(signal.SIGTERM, _raise_interrupt)
        while True:
            self.supervisor.poll()
            if on_tick is not None:
                on_tick()
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the API and workers (TERM, then KILL after 10 s), then save and stop our Redis."""
        assert self.supervisor is not None
        had_redis = any(c.name == "redis" for c in self.supervisor.children)
        # A second Ctrl-C (or a SIGTERM) while stopping would end this process half-way and leave
        # workers running against a Redis that is gone; stopping takes at most the grace period.
        saved = _ignore_stop_signals()
        try:
            self.supervisor.stop_all()
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        if had_redis:
            self.say("embedded Redis saved and stopped")


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a child in its own process group, its output appended to ``log``.

    Own group: the terminal's Ctrl-C reaches only the launcher, which stops children in order.
    Logs go to files so that the terminal keeps the URLs a person needs.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


def _ignore_stop_signals() -> dict[int, object]:
    """Ignore SIGINT and SIGTERM (main thread only); returns the handlers to put back."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_up(
    settings: Settings, workers: int, host: str, port: int, demo: bool, open_browser: bool, say: Say = print
) -> None:
    """What ``phasescope up`` does, start to Ctrl-C."""
    launcher = Launcher(settings, workers, host=host, port=port, say=say)
    late_pending = list(LATE_SERIES) if demo else []
    try:
        if demo:
            launcher.train(DEMO_SERIES)
        launcher.start_services(launcher.start_redis())
        if demo:
            views = launcher.submit_demo(DEMO_SERIES)
            say(f"\nThe induction transition: {views['induction-2l']}?tab=overview\n")
            if open_browser:
                _open(f"{views['induction-2l']}?tab=overview")
            # The grokking series trains after the dashboard is up, so the demo never waits for it.
            for name in late_pending:
                launcher.train((name,))
                launcher.submit_demo((name,))
        say("Ctrl-C stops everything.")
        launcher.wait_forever()
    except KeyboardInterrupt:
        say("\nstopping...")
    finally:
        launcher.stop()


def _open(url: str) -> None:
    """Open a browser where there is a display; otherwise the printed URL is the way in."""
    if not (os.environ.get("DISPLAY") or sys.platform == "darwin" or os.environ.get("WAYLAND_DISPLAY")):
        return
    import webbrowser

    webbrowser.open(url)


def settings_with(data_dir: Path | None = None, redis_url: str | None = None) -> Settings:
    """Settings with ``--data-dir`` / ``--redis-url`` applied (through the environment, so children see them)."""
    if data_dir is not None:
        os.environ["PHASESCOPE_DATA_DIR"] = str(data_dir)
    if redis_url is not None:
        os.environ["REDIS_URL"] = redis_url
    get_settings.cache_clear()
    return get_settings()
