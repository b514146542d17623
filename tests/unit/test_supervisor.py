"""The supervisor's pure parts: the backoff schedule, how an exit is described, the log tail."""

from __future__ import annotations

import json
import os
from pathlib import Path

from phasescope.config import Settings
from phasescope.service.supervisor import RestartPolicy, describe_exit, log_tail, read_state


def test_backoff_doubles_per_recent_exit_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=30.0, give_up_exits=5, window_s=60.0)
    assert [policy.backoff(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_policy_from_settings_reads_every_setting() -> None:
    settings = Settings(
        restart_backoff_initial_s=0.5, restart_backoff_max_s=4, restart_give_up_exits=3, restart_window_s=10
    )
    assert RestartPolicy.from_settings(settings) == RestartPolicy(0.5, 4.0, 3, 10.0)


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"


def test_log_tail_keeps_the_last_non_empty_lines(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    assert log_tail(log) == "(no log file)"
    log.write_text("")
    assert log_tail(log) == "(the log is empty)"
    log.write_text("\n".join(f"line {i}" for i in range(50)) + "\n\n")
    assert log_tail(log, 3) == "line 47\nline 48\nline 49"


def test_state_of_a_dead_launcher_is_not_reported(tmp_path: Path) -> None:
    state = tmp_path / "supervisor.json"
    state.write_text(json.dumps({"launcher_pid": os.getpid(), "children": []}))
    assert read_state(state) == {"launcher_pid": os.getpid(), "children": []}
    state.write_text('{"launcher_pid": 999999999, "children": []}')  # no such process
    assert read_state(state) is None
    state.write_text("{half a file")
    assert read_state(state) is None
