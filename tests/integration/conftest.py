"""Fixtures for the service tests: a tmp data directory, a real Redis, real workers, the real API."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from phasescope.config import get_settings
from tests.helpers import tiny_series
from tests.integration.service import FAST, ApiServer, RedisServer, Stack


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything tries to reach the network (models must come from disk, never a hub)."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"network access attempted: {address}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory for this test process (and the services it starts)."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("PHASESCOPE_DATA_DIR", str(d))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("PHASESCOPE_REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield d
    get_settings.cache_clear()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A standalone redis-server on a free TCP port (the 'external Redis' of REDIS_URL)."""
    server = RedisServer(tmp_path / "redis-ext").start()
    yield server
    server.stop()


@pytest.fixture
def start_stack(data_dir: Path, tmp_path: Path, redis_server: RedisServer) -> Iterator[object]:
    """``start_stack(redis="url"|"embedded", workers=1, **env)`` → a running Stack, stopped afterwards.

    Depends on ``redis_server`` so that the external Redis outlives the workers using it.
    """
    stacks: list[Stack] = []

    def start(redis: str = "url", workers: int = 1, **env: str) -> Stack:
        full = {"PHASESCOPE_DATA_DIR": str(data_dir), **FAST, **env}
        if redis == "url":
            full["REDIS_URL"] = redis_server.url
        log_dir = tmp_path / "logs"
        api = ApiServer(full, log_dir).start()
        stack = Stack(data_dir, full, api, log_dir)
        stacks.append(stack)
        for _ in range(workers):
            stack.add_worker()
        return stack

    yield start
    for stack in stacks:
        stack.stop()
    # The embedded server (if the API started one) stops with the API; make sure nothing is left.
    from phasescope.service.redis_conn import EmbeddedRedis

    embedded = EmbeddedRedis(data_dir / "redis")
    if embedded.ping():
        embedded.stop()


@pytest.fixture
def tiny_model(data_dir: Path) -> tuple[str, list[int]]:
    """A 5-checkpoint attn-only 2-layer series under <data_dir>/models, named by its relative path."""
    steps = tiny_series(data_dir / "models" / "tiny")
    return "tiny", steps


@pytest.fixture
def zoo_induction_2l(data_dir: Path, trained_induction_2l: Path) -> str:
    """The trained series copied into this test's data directory as zoo:induction-2l."""
    import shutil

    shutil.copytree(trained_induction_2l, data_dir / "zoo" / "induction-2l")
    return "zoo:induction-2l"
