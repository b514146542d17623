"""The supervisor of ``phasescope up``: a killed worker or Redis is restarted and the sweep finishes
bit-identical to a clean run; a child that keeps dying is given up with its reason; a child that
cannot come up is reported with its exit code and the last lines of its log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from phasescope.config import get_settings
from phasescope.errors import ServiceUnavailable
from phasescope.service.client import Client
from phasescope.service.launcher import Launcher
from phasescope.service.supervisor import Child, ChildGaveUp, RestartPolicy, Supervisor, read_state
from tests.helpers import tiny_series
from tests.integration.service import FAST, REPO, free_port, http, wait_for

pytestmark = pytest.mark.slow

MEASURES = ["entropy", "heads", "loss"]
# About 0.4 s per checkpoint on one thread: the sweep lasts long enough to be interrupted twice.
INPUTS = {"n_prompts": 256}


def _health(url: str) -> dict[str, Any]:
    return http.get(f"{url}/api/v1/health", timeout=10).json()


def _children(url: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _health(url)["supervisor"]["children"]}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = sorted(c for c in frame.columns if c != "value")
    return frame.sort_values(keys, na_position="first").reset_index(drop=True)[sorted(frame.columns)]


def _clean_run(tmp_path: Path, steps: list[int]) -> pd.DataFrame:
    """The same sweep with no service at all, as stored (float32 Parquet), on one thread like a worker."""
    import torch

    from phasescope.analysis.run import run_local
    from phasescope.schemas import InputSpec
    from phasescope.service.store import table_to_parquet_bytes

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table, _ = run_local("zoo:induction-2l", steps, MEASURES, InputSpec(**INPUTS))
    finally:
        torch.set_num_threads(threads)
    path = tmp_path / "clean.parquet"
    path.write_bytes(table_to_parquet_bytes(table))
    return pd.read_parquet(path)


def test_sweep_survives_killed_worker_and_killed_redis_under_phasescope_up(
    data_dir: Path, zoo_induction_2l: str, tmp_path: Path
) -> None:
    t0 = time.perf_counter()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(FAST, PHASESCOPE_RESTART_BACKOFF_INITIAL_S="0.5", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out = tmp_path / "up.log"
    with open(out, "wb") as fh:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "phasescope",
                "up",
                "--workers",
                "2",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--no-open-browser",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    try:
        # Ready once the launcher supervises the API too (it does so after the API first answers).
        wait_for(lambda: "api" in _children(url), 240, "phasescope up")
        ready_s = time.perf_counter() - t0
        health = _health(url)
        assert health["redis"]["mode"] == "embedded", health["redis"]
        children = _children(url)
        assert sorted(children) == ["api", "redis", "worker-0", "worker-1"]
        assert all(c["state"] == "running" and c["restarts"] == 0 for c in children.values()), children
        workers = {c["pid"]: name for name, c in children.items() if name.startswith("worker-")}

        with Client(url, timeout=180) as api:
            t_submit = time.perf_counter()
            aid = api.submit(zoo_induction_2l, checkpoints="all", measures=MEASURES, inputs=INPUTS)["id"]
            parts = data_dir / "results" / aid / "parts"

            # 1. kill -9 a worker while it measures a checkpoint.
            def measuring() -> list[dict]:
                running = api.status(aid)["progress"]["running"]
                return [r for r in running if r.get("pid") in workers and r.get("stage") == "measuring"]

            victim = wait_for(measuring, 120, "a worker measuring", interval=0.05)[0]
            victim_name = workers[victim["pid"]]
            survivor_name = next(n for n in workers.values() if n != victim_name)
            os.kill(victim["pid"], signal.SIGKILL)

            # 2. kill -9 the embedded Redis while the sweep is still under way.
            done_before = len(list(parts.glob("*.parquet")))
            wait_for(lambda: len(list(parts.glob("*.parquet"))) >= done_before + 2, 120, "two more parts")
            redis_pid = _children(url)["redis"]["pid"]
            done_at_kill = len(list(parts.glob("*.parquet")))
            os.kill(redis_pid, signal.SIGKILL)
            assert done_at_kill < 41, "the sweep finished before Redis could be killed: make it longer"

            # Both come back, the reasons are recorded, the killed processes are reaped.
            def restarted() -> dict[str, dict[str, Any]] | None:
                c = _children(url)
                ok = all(c[n]["restarts"] == 1 and c[n]["state"] == "running" for n in ("redis", victim_name))
                return c if ok else None

            children = wait_for(restarted, 120, "the worker and Redis restarted")
            for name, old_pid in ((victim_name, victim["pid"]), ("redis", redis_pid)):
                assert children[name]["pid"] not in (None, old_pid)
                assert children[name]["last_exit"]["reason"] == "killed by SIGKILL"
                assert (
                    not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() != psutil.STATUS_ZOMBIE
                )
            assert children[survivor_name]["restarts"] == 0  # the other worker was left alone
            assert children["api"]["restarts"] == 0

            state = api.wait(aid, timeout=300, poll=0.5, progress=False)
        assert state["status"] == "finished", state
        print(
            f"\nphasescope up ready in {ready_s:.1f} s; 41-checkpoint sweep with a worker and Redis killed "
            f"(Redis at {done_at_kill}/41 parts): {time.perf_counter() - t_submit:.1f} s"
        )

        # 3. The API too comes back on its port (requests fail only while it restarts).
        api_pid = children["api"]["pid"]
        os.kill(api_pid, signal.SIGKILL)
        back = wait_for(
            lambda: _children(url)["api"]["restarts"] == 1 and _children(url), 120, "the API back"
        )
        assert back["api"]["pid"] != api_pid and back["api"]["last_exit"]["reason"] == "killed by SIGKILL"
        assert http.get(f"{url}/api/v1/analyses/{aid}").json()["status"] == "finished"
        log = out.read_text()
        assert f"{victim_name} (pid {victim['pid']}) killed by SIGKILL" in log, log
        assert f"redis (pid {redis_pid}) killed by SIGKILL" in log and "Last lines of" in log, log
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(120)
    assert up.returncode == 0, out.read_text()[-3000:]
    assert read_state(data_dir / "run" / "supervisor.json") is None  # the launcher cleaned up

    # The merged table is bit-identical to a run with no service and no faults.
    stored = pd.read_parquet(data_dir / "results" / aid / "results.parquet")
    clean = _clean_run(tmp_path, sorted(stored["checkpoint"].unique().tolist()))
    assert stored["checkpoint"].nunique() == 41
    pd.testing.assert_frame_equal(_sorted(stored), _sorted(clean), check_exact=True)


def _crash(log: Path, code: int) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", f"print('cannot start: bad setting'); raise SystemExit({code})"],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def test_a_child_that_keeps_dying_is_given_up_with_the_reason(tmp_path: Path) -> None:
    policy = RestartPolicy(initial_backoff_s=0.05, max_backoff_s=0.1, give_up_exits=3, window_s=60)
    state_file = tmp_path / "run" / "supervisor.json"
    said: list[str] = []
    supervisor = Supervisor(policy, state_file, say=said.append)
    log = tmp_path / "crashy.log"
    processes: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        processes.append(_crash(log, 3))
        return processes[-1]

    supervisor.add(Child("crashy", start, log=log))
    with pytest.raises(ChildGaveUp) as caught:
        for _ in range(3000):  # at most about a minute
            supervisor.poll()
            time.sleep(0.02)
    message = str(caught.value)
    assert "crashy" in message and "exited with code 3" in message and "3 times within 60 s" in message
    assert "cannot start: bad setting" in message  # the log's last lines
    assert len(processes) == 3 and all(p.returncode == 3 for p in processes)  # each one reaped
    restarts = [line for line in said if "restarting in" in line]
    assert len(restarts) == 2 and "restarting in 0.1 s" in restarts[1]  # the backoff doubled
    [child] = read_state(state_file)["children"]
    assert child["state"] == "gave-up" and child["restarts"] == 2 and child["last_exit"]["code"] == 3


def test_an_api_that_cannot_start_is_reported_with_exit_code_and_log(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        launcher = Launcher(get_settings(), workers=1, port=port, say=lambda _: None)
        with pytest.raises(ServiceUnavailable) as caught:
            launcher.start_api("redis://127.0.0.1:1/0")
    message = str(caught.value)
    assert "exited with code 3 before it became ready" in message, message  # uvicorn: startup failure
    assert "address already in use" in message, message  # uvicorn's own words, from api.log
    assert launcher.supervisor is not None and launcher.supervisor.children == []


def test_a_part_measured_while_redis_is_down_is_written_then_reported(start_stack, redis_server, data_dir):
    # One checkpoint that takes seconds to measure on one thread: Redis dies while it is measured.
    steps = tiny_series(data_dir / "models" / "medium", (0, 10), n_ctx=128, d_model=128, n_heads=8, d_head=16)
    stack = start_stack(workers=1)
    with Client(stack.url) as api:
        aid = api.submit(
            "medium",
            measures=["entropy", "heads", "loss", "spectra"],
            inputs={"n_prompts": 24, "seq_len": 128},
            checkpoints=[steps[-1]],
        )["id"]
        wait_for(
            lambda: [r for r in api.status(aid)["progress"]["running"] if r.get("stage") == "measuring"],
            120,
            "the job measuring",
            interval=0.05,
        )
        assert redis_server.process is not None
        redis_server.process.kill()  # SIGKILL: no goodbye to the worker
        redis_server.process.wait()
        parts = data_dir / "results" / aid / "parts"
        # The finished computation reaches the store while Redis is still down.
        [part] = wait_for(lambda: list(parts.glob("*.parquet")), 120, "the part written with Redis down")
        assert redis_server.process.poll() is not None
        written = part.stat()
        redis_server.start()  # same port, same append-only file
        state = api.wait(aid, timeout=180, poll=0.3, progress=False)
    assert state["status"] == "finished", (state, stack.logs())
    again = part.stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # not measured again


def test_launcher_gives_up_on_a_worker_that_keeps_dying_and_stops_everything(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHASESCOPE_RESTART_BACKOFF_INITIAL_S", "0.05")
    monkeypatch.setenv("PHASESCOPE_RESTART_GIVE_UP_EXITS", "3")
    get_settings.cache_clear()
    said: list[str] = []
    launcher = Launcher(get_settings(), workers=1, threads=1, say=said.append)
    assert launcher.supervisor is not None
    state_file = data_dir / "run" / "supervisor.json"
    killed: list[subprocess.Popen] = []
    deadline = time.monotonic() + 60
    sigterm = signal.getsignal(signal.SIGTERM)  # wait_forever installs its own

    def oom_killer() -> None:
        # Like the OOM killer on a machine too small for the model: the worker dies on every start.
        assert time.monotonic() < deadline, "the supervisor never gave up"
        worker = launcher.supervisor.get("worker-0")
        if worker.state == "running" and worker.process not in killed:
            worker.process.kill()
            killed.append(worker.process)

    try:
        launcher.start_workers(launcher.start_redis())
        with pytest.raises(ChildGaveUp) as caught:
            launcher.wait_forever(on_tick=oom_killer)
        state = {c["name"]: c for c in read_state(state_file)["children"]}
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        launcher.stop()
    message = str(caught.value)
    assert f"worker-0 (pid {killed[-1].pid}) killed by SIGKILL" in message, message
    assert "3 times within 60 s" in message and "gave up and stops everything" in message, message
    assert state["worker-0"]["state"] == "gave-up" and state["worker-0"]["restarts"] == 2
    assert state["redis"]["state"] == "running" and state["redis"]["restarts"] == 0
    assert len(killed) == 3 and all(p.returncode == -signal.SIGKILL for p in killed)  # all reaped
    assert sum("restarting in" in line for line in said) == 2
    from phasescope.service.redis_conn import EmbeddedRedis

    assert not EmbeddedRedis(data_dir / "redis").ping()  # stopped with everything else
    assert not state_file.exists()
