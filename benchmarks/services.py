"""A real phasescope deployment for the service benchmarks (3 and 4): embedded Redis, workers, API.

Nothing is simulated: ``running_stack`` starts the same processes ``phasescope up`` starts (through
``phasescope.service.launcher.Launcher``), on a free port and in a data directory of its own, and stops them
all afterwards. ``prepare_model`` puts the series to analyse into that directory: for the quick and
full sizes the zoo's trained ``induction-2l`` (trained once into a cache, then copied), for the toy
size a tiny random series written in our checkpoint format (seconds, for the smoke test).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BENCH_CACHE", "free_port", "prepare_model", "running_stack", "wait_finished"]

BENCH_CACHE = Path(os.environ.get("PHASESCOPE_BENCH_CACHE", Path.home() / ".cache" / "phasescope-bench"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tiny_series(directory: Path, steps: tuple[int, ...] = (0, 10, 20)) -> None:
    """Random attention-only 2-layer checkpoints: the toy size's model (no training)."""
    from phasescope.models.series import write_random_series

    config = dict(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_vocab=40,
        n_ctx=24,
        attn_only=True,
        normalization_type=None,
        act_fn=None,
    )
    write_random_series(directory, config, list(steps))


def _trained_zoo(name: str) -> Path:
    """The zoo series ``name``, trained once into ``BENCH_CACHE`` under a key of its recipe."""
    from phasescope.zoo import ZOO, is_trained, train_series

    key = hashlib.sha256(repr(ZOO[name]).encode()).hexdigest()[:12]
    path = BENCH_CACHE / f"{name}-{key}"
    if not is_trained(name, out_dir=path):
        print(f"   training zoo:{name} once into {path} ...", flush=True)
        train_series(name, progress=False, out_dir=path)
    return path


def prepare_model(data_dir: Path, size: str) -> str:
    """Put the benchmark's series into ``data_dir``; returns the model string to submit."""
    if size == "toy":
        _tiny_series(data_dir / "models" / "tiny")
        return "tiny"
    target = data_dir / "zoo" / "induction-2l"
    if not target.exists():
        shutil.copytree(_trained_zoo("induction-2l"), target)
    return "zoo:induction-2l"


@contextlib.contextmanager
def running_stack(
    data_dir: Path, workers: int, threads: int = 0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Embedded Redis + ``workers`` RQ workers + the API on a free port; yields the base URL.

    Returns once every worker has registered with the queue (after its imports), so that a timing
    that starts afterwards measures the work, not the workers' start.

    ``workers``: 0 for the launcher's default (one per core on CPU); ``threads``: torch threads per
    worker (0: the launcher's choice, the cores shared out); ``env``: settings for the stack's
    processes (environment variables, restored afterwards).
    """
    from phasescope.config import Settings
    from phasescope.service.client import Client
    from phasescope.service.launcher import Launcher, default_worker_count

    workers = workers or default_worker_count()
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})  # the launcher hands its environment to every child it starts
    settings = Settings(data_dir=data_dir, redis_url=None, api_token=None)
    launcher = Launcher(settings, workers, threads=threads, port=free_port(), say=lambda line: None)
    try:
        launcher.start_services(launcher.start_redis())
        with Client(launcher.url) as client:
            deadline = time.monotonic() + 180
            while client.health().get("workers_alive", 0) < workers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{workers} worker(s) did not register within 180 s")
                time.sleep(0.2)
        yield launcher.url
    finally:
        launcher.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_finished(client: object, aid: str, timeout: float = 1800.0, poll: float = 0.1) -> dict:
    """Poll the analysis until it ends; raises if it did not finish cleanly."""
    deadline = time.monotonic() + timeout
    while True:
        state = client.status(aid)  # type: ignore[attr-defined]
        if state["status"] in ("finished", "failed", "partial", "cancelled"):
            if state["status"] != "finished":
                raise RuntimeError(f"analysis {aid} ended {state['status']}: {state}")
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"analysis {aid} still {state['status']} after {timeout:.0f} s")
        time.sleep(poll)
