"""The e2e stack, once per session: a standalone redis-server, two RQ workers, and ``phasescope api``
(the API with the dashboard mounted) on free ports, over a data directory where the zoo's
``induction-2l`` series has been trained, plus the demo analysis of it, run through the real API.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import Chromium, chromium_available
from tests.helpers import tiny_series
from tests.integration.service import ApiServer, RedisServer, WorkerProcess

DEMO = "zoo:induction-2l"


def _train_demo(data_dir: Path, trained: Path) -> str:
    """The demo series in ``data_dir``: the session's trained zoo:induction-2l, copied (training is
    seeded, so a copy is the same series). ``PHASESCOPE_E2E_TINY=1`` uses a tiny untrained series
    instead, for a quick check of the pages (the transition's position is then not checked).
    """
    if os.environ.get("PHASESCOPE_E2E_TINY"):
        tiny_series(data_dir / "models" / "demo", steps=range(0, 90, 10))
        return "demo"
    shutil.copytree(trained, data_dir / "zoo" / "induction-2l")
    return DEMO


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, trained_induction_2l: Path) -> Iterator[dict[str, Any]]:
    """Redis, two workers and the combined app, sharing one data directory; the demo series trained."""
    # make test installs them (make system-deps): their absence is a broken set-up, not a skip.
    assert chromium_available(), "needs /usr/bin/chromium and chromedriver: run make system-deps"
    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "data"
    data_dir.mkdir()
    model = _train_demo(data_dir, trained_induction_2l)
    redis = RedisServer(root / "redis").start()
    env = {
        "PHASESCOPE_DATA_DIR": str(data_dir),
        "REDIS_URL": redis.url,
        "PHASESCOPE_WORKER_HEARTBEAT_S": "1",
        "PHASESCOPE_WORKER_MAINTENANCE_S": "5",
    }
    logs = root / "logs"
    workers = [WorkerProcess(env, logs, f"w{i}").start() for i in (1, 2)]
    api = ApiServer(env, logs).start()
    try:
        yield {
            "url": api.url,
            "api": api,
            "model": model,
            "data_dir": data_dir,
            "workers": workers,
            "logs": logs,
        }
    finally:
        api.stop()
        for worker in workers:
            worker.stop()
        redis.stop()


@pytest.fixture(scope="session")
def demo(stack: dict[str, Any]) -> dict[str, Any]:
    """The demo analysis (every measure, every checkpoint), submitted through the API and finished."""
    from phasescope.service.client import Client

    with Client(stack["url"]) as api:
        aid = api.submit(stack["model"])["id"]
        state = api.wait(aid, timeout=600, poll=0.5, progress=False)
    assert state["status"] == "finished", state
    return {"id": aid, "model": stack["model"], "checkpoints": state["checkpoints"], "url": stack["url"]}


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    """A fresh headless Chromium (its own profile), closed after the test."""
    browser = Chromium()
    yield browser
    browser.close()
