"""``phasescope up``: Redis, workers and the API + dashboard on one machine, stopped together.

The launcher owns every process it starts: the embedded Redis (unless ``REDIS_URL`` names another
server), ``n`` RQ worker processes and one API process (uvicorn serving the REST API and the
dashboard). Ctrl-C or SIGTERM stops the API and workers first (so nothing writes to Redis after it is
gone), then saves and shuts down Redis: no orphan ``redis-server`` or worker is left behind.

With ``demo=True`` it also trains the missing zoo series (with progress) and submits the standard
analyses; analyses are content-addressed, so a second start finds them finished and is ready in
seconds.
"""

from __future__ import annotations

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
    """Start, watch and stop the processes of one phasescope deployment.

    Args:
        settings: where data lives and which Redis to use.
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
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _redis: object | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host if self.host != '0.0.0.0' else '127.0.0.1'}:{self.port}"

    def _env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PHASESCOPE_DATA_DIR"] = str(self.settings.data_dir)
        env["REDIS_URL"] = redis_url
        return env

    def start_redis(self) -> str:
        """The Redis URL every child uses; starts (and owns) the embedded server when needed."""
        if self.settings.redis_url:
            return self.settings.redis_url
        from phasescope.redis_conn import EmbeddedRedis

        server = EmbeddedRedis(self.settings.redis_dir)
        if server.start():
            self._redis = server
            self.say(f"embedded Redis started ({server.url}, data in {self.settings.redis_dir})")
        else:
            self.say(f"reusing the embedded Redis already running at {server.url}")
        return server.url

    def start_services(self, redis_url: str) -> None:
        """Start the workers and the API, then wait until the API answers its readiness check."""
        n = self.workers or default_worker_count()
        cores = os.cpu_count() or 1
        threads = self.threads or max(1, cores // n)
        env = self._env(redis_url)
        logs = self.settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cmd = [sys.executable, "-m", "phasescope", "worker", "--threads", str(threads)]
            if _gpu_count() > 1:
                cmd += ["--gpu", str(i)]
            self._procs.append(self._spawn(cmd, env, logs / f"worker-{i}.log"))
        self.say(f"{n} worker(s) started, {threads} torch thread(s) each (logs in {logs})")
        api = [sys.executable, "-m", "phasescope", "api", "--host", self.host, "--port", str(self.port),
               "--log-level", "warning"]
        self._procs.append(self._spawn(api, env, logs / "api.log"))
        self._wait_ready()
        self.say(f"API and dashboard at {self.url}  (REST: {self.url}/api/v1, OpenAPI: {self.url}/docs)")

    @staticmethod
    def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        """Start a child in its own process group, its output appended to ``log``.

        Own group: the terminal's Ctrl-C reaches only the launcher, which stops children in order.
        Logs go to files so that the terminal keeps the URLs a person needs.
        """
        with open(log, "ab") as out:
            return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._procs[-1].poll() is not None:
                raise ServiceUnavailable(
                    f"the API process exited (code {self._procs[-1].returncode}); is port {self.port} free? "
                    f"See {self.settings.data_dir / 'logs' / 'api.log'}"
                )
            try:
                if httpx.get(f"{self.url}/api/v1/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise ServiceUnavailable(f"the API did not become ready at {self.url} within {timeout:.0f} s")

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
        from phasescope.client import Client

        views = {}
        with Client(self.url, token=self.settings.api_token) as client:
            for name in names:
                state = client.submit(f"zoo:{name}", **DEMO_ANALYSES[name])
                views[name] = f"{self.url}/analyses/{state['id']}"
                self.say(f"zoo:{name}: analysis {state['id']} {state['status']} -> {views[name]}")
        return views

    def wait_forever(self, on_tick: Callable[[], None] | None = None) -> None:
        """Block until Ctrl-C/SIGTERM or until a child dies."""
        signal.signal(signal.SIGTERM, _raise_interrupt)
        while True:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise ServiceUnavailable(f"{' '.join(proc.args[2:4])} exited with code {proc.returncode}")
            if on_tick is not None:
                on_tick()
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the API and workers (TERM, then KILL after 10 s), then save and stop our Redis."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._redis is not None:
            self._redis.stop()  # type: ignore[attr-defined]
            self._redis = None
            self.say("embedded Redis saved and stopped")


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


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
