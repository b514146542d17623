"""`phasescope up --demo`: everything starts, the demo's analysis view is served, Ctrl-C leaves no
process behind, and a second start reuses what the first left and is ready quickly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow
URL = re.compile(r"The induction transition: (http://\S+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(data_dir: Path) -> list[psutil.Process]:
    """Live processes started for this data directory (workers, API, redis-server)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env = proc.environ() if "phasescope" in cmd else {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(data_dir) in cmd or env.get("PHASESCOPE_DATA_DIR") == str(data_dir):
            found.append(proc)
    return [
        p for p in found if p.pid != os.getpid() and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]


def _start(data_dir: Path, port: int) -> tuple[subprocess.Popen, str, list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phasescope",
            "up",
            "--demo",
            "--workers",
            "1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--no-open-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if match := URL.search(line):
            return proc, match.group(1), lines
    raise AssertionError("phasescope up exited without printing the demo URL:\n" + "".join(lines[-40:]))


def _stop(proc: subprocess.Popen, presses: int = 1) -> str:
    """Ctrl-C, ``presses`` times (an impatient person presses it again while things stop)."""
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    return proc.communicate(timeout=120)[0]


def test_up_demo_serves_the_view_and_stops_cleanly(tmp_path: Path, trained_induction_2l: Path) -> None:
    data_dir = tmp_path / "data"
    # The reference series is trained once per test session; the control trains here (~20 s).
    shutil.copytree(trained_induction_2l, data_dir / "zoo" / "induction-2l")
    port = _free_port()
    proc, url, first = _start(data_dir, port)
    try:
        assert url.startswith(f"http://127.0.0.1:{port}/analyses/")
        assert httpx.get(url, timeout=30).status_code == 200
        aid = url.split("/analyses/")[1].split("?")[0]
        state = httpx.get(f"http://127.0.0.1:{port}/api/v1/analyses/{aid}", timeout=30).json()
        assert state["status"] in {"queued", "running", "finished"} and state["progress"]["total"] == 41
        assert (data_dir / "zoo" / "induction-1l" / "manifest.json").is_file()
        assert any("training zoo:induction-1l" in line for line in first)
        assert len(_ours(data_dir)) >= 3  # redis-server, a worker, the API
    finally:
        _stop(proc)
    deadline = time.monotonic() + 30
    while _ours(data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ours(data_dir) == [], "processes left running after Ctrl-C"

    # A second start trains nothing and finds the same analysis (content-addressed).
    proc, again, second = _start(data_dir, port)
    try:
        assert again == url
        assert not any("training zoo:" in line for line in second), second
        jobs = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/analyses",
            timeout=60,
            json={"model": "zoo:induction-1l", "measures": ["entropy", "thermo", "spectra"]},
        )
        assert jobs.status_code in (200, 202), jobs.text  # the workers have work while they are stopped
    finally:
        tail = _stop(proc, presses=3)
    # Further Ctrl-Cs while stopping do not cut the shutdown short and leave workers behind.
    assert "embedded Redis saved and stopped" in tail, tail
    deadline = time.monotonic() + 30
    while _ours(data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ours(data_dir) == [], "processes left running after Ctrl-C pressed three times"
