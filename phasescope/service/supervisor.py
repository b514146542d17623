"""Keep the processes of ``phasescope up`` running, as a service manager would.

The launcher hands every child it starts (the embedded Redis, the workers, the API) to a
``Supervisor`` and calls ``Supervisor.poll`` about twice a second. A child that exits is reaped at
once (no zombie), the reason is logged (exit code or signal, and the last lines of its log), and it
is started again after a backoff that doubles with each exit inside a window::

    exit 1 -> wait initial_backoff_s, exit 2 -> 2x, exit 3 -> 4x, ... capped at max_backoff_s
    give_up_exits exits within window_s -> state "gave-up", poll() raises ChildGaveUp

Exits older than the window are forgotten, so a child that has run for a while starts again from the
initial backoff. Giving up is for a child that cannot run at all (a port taken, a broken install): the
launcher then stops everything and prints the message, rather than restarting forever.

Each change of state is written atomically to a small JSON file (``<data_dir>/run/supervisor.json``)
that the API's ``/health`` reads: the API never shares process objects with the launcher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasescope.config import Settings
from phasescope.errors import ServiceUnavailable

__all__ = [
    "Child",
    "ChildGaveUp",
    "RestartPolicy",
    "STATE_FILE",
    "Supervisor",
    "describe_exit",
    "log_tail",
    "read_state",
    "state_path",
]

# Relative to the data directory.
STATE_FILE = Path("run") / "supervisor.json"
Say = Callable[[str], None]


class ChildGaveUp(ServiceUnavailable):
    """A child exited too often too quickly; the supervisor stopped restarting it."""


def state_path(settings: Settings) -> Path:
    """Where the launcher writes its children's states and ``/health`` reads them."""
    return settings.data_dir / STATE_FILE


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (what a person reads first when a process died)."""
    if path is None or not path.is_file():
        return "(no log file)"
    with open(path, "rb") as fh:
        # Read at most the last 64 KiB: logs grow for the life of a deployment.
        fh.seek(max(0, path.stat().st_size - 65536))
        text = fh.read().decode("utf-8", errors="replace")
    kept = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join(kept) if kept else "(the log is empty)"


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL`` (Popen gives ``-signal`` for a signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child and when to stop trying.

    Args:
        initial_backoff_s: seconds before the first restart.
        max_backoff_s: the most seconds between an exit and the restart.
        give_up_exits: exits within ``window_s`` after which the child is not restarted.
        window_s: seconds over which exits are counted.
    """

    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    give_up_exits: int = 5
    window_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(
            initial_backoff_s=settings.restart_backoff_initial_s,
            max_backoff_s=settings.restart_backoff_max_s,
            give_up_exits=settings.restart_give_up_exits,
            window_s=settings.restart_window_s,
        )

    def backoff(self, recent_exits: int) -> float:
        """Seconds to wait after the ``recent_exits``-th exit within the window (1, 2, ...)."""
        return float(min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, recent_exits - 1)))


@dataclass
class Child:
    """One supervised process.

    Args:
        name: how logs and ``/health`` name it (``redis``, ``worker-0``, ``api``).
        start: starts the process and returns it (for Redis: once it answers).
        log: its log file, quoted when it dies.
        stop: stops it gracefully (default: SIGTERM, SIGKILL after the grace period).
    """

    name: str
    start: Callable[[], subprocess.Popen]
    log: Path | None = None
    stop: Callable[[subprocess.Popen], None] | None = None
    process: subprocess.Popen | None = None
    state: str = "starting"  # running | restarting | gave-up | stopped
    restarts: int = 0
    started_at: float | None = None
    last_exit: dict[str, Any] | None = None
    exits: deque[float] = field(default_factory=deque)  # monotonic times of recent exits
    restart_at: float = 0.0  # monotonic time of the next start while "restarting"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid if self.state == "running" else None,
            "state": self.state,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
        }


class Supervisor:
    """Start, watch, restart and stop a set of child processes.

    Args:
        policy: backoff and give-up rule.
        state_file: where each change of state is written (None: nowhere).
        say: where the reasons for exits and restarts go.
    """

    def __init__(self, policy: RestartPolicy, state_file: Path | None = None, say: Say = print) -> None:
        self.policy = policy
        self.state_file = state_file
        self.say = say
        self.children: list[Child] = []

    def add(self, child: Child) -> Child:
        """Supervise ``child`` from now on, starting it unless its process is already running."""
        self.children.append(child)
        if child.process is None:
            self._start(child)
        else:
            child.state = "running"
            child.started_at = time.time()
        self.write_state()
        return child

    def get(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def _start(self, child: Child) -> None:
        child.process = child.start()
        child.state = "running"
        child.started_at = time.time()

    def poll(self) -> None:
        """Reap children that exited, schedule and run restarts; write the state when it changed.

        Raises:
            ChildGaveUp: a child exited ``give_up_exits`` times within ``window_s``.
        """
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.state == "running" and child.process is not None:
                code = child.process.poll()  # reaps it: no zombie is left
                if code is not None:
                    self._exited(child, code, now)
                    changed = True
            if child.state == "restarting" and now >= child.restart_at:
                self._restart(child)
                changed = True
        if changed:
            self.write_state()

    def _exited(self, child: Child, code: int, now: float) -> None:
        uptime = time.time() - (child.started_at or time.time())
        how = describe_exit(code)
        child.last_exit = {"code": code, "reason": how, "at": time.time(), "uptime_s": round(uptime, 1)}
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self.policy.window_s:
            child.exits.popleft()
        tail = log_tail(child.log)
        if len(child.exits) >= self.policy.give_up_exits:
            child.state = "gave-up"
            self.write_state()
            raise ChildGaveUp(
                f"{child.name} (pid {child.pid}) {how}; it exited {len(child.exits)} times within "
                f"{self.policy.window_s:.0f} s, so the supervisor gave up and stops everything. "
                f"Last lines of {child.log}:\n{tail}"
            )
        delay = self.policy.backoff(len(child.exits))
        child.state = "restarting"
        child.restart_at = now + delay
        self.say(
            f"{child.name} (pid {child.pid}) {how} after {uptime:.1f} s; restarting in {delay:.1f} s "
            f"(exit {len(child.exits)} of {self.policy.give_up_exits} allowed within "
            f"{self.policy.window_s:.0f} s). Last lines of {child.log}:\n{_indent(log_tail(child.log, 10))}"
        )

    def _restart(self, child: Child) -> None:
        child.restarts += 1
        try:
            self._start(child)
        except Exception as exc:  # a start that fails counts as one more fast exit
            self.say(f"{child.name}: restart failed: {exc}")
            child.state = "running"
            child.process = None
            self._exited(child, 1, time.monotonic())
            return
        self.say(f"{child.name} restarted (pid {child.pid}, restart {child.restarts})")

    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stop every child, newest first: plain children by SIGTERM together, then those with a
        ``stop`` of their own (Redis) one by one, so nothing writes to Redis after it is gone."""
        plain = [c for c in reversed(self.children) if c.stop is None]
        custom = [c for c in reversed(self.children) if c.stop is not None]
        for child in plain:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in plain:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.state = "stopped"
        for child in custom:
            if child.process is not None and child.process.poll() is None and child.stop is not None:
                child.stop(child.process)
            child.state = "stopped"
        self.children.clear()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

    def snapshot(self) -> dict[str, Any]:
        return {
            "launcher_pid": os.getpid(),
            "updated_at": time.time(),
            "policy": {
                "initial_backoff_s": self.policy.initial_backoff_s,
                "max_backoff_s": self.policy.max_backoff_s,
                "give_up_exits": self.policy.give_up_exits,
                "window_s": self.policy.window_s,
            },
            "children": [c.snapshot() for c in self.children],
        }

    def write_state(self) -> None:
        """Write the snapshot atomically (temporary file, rename): a reader never sees half of it."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".supervisor.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.snapshot(), fh, indent=1)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_state(path: Path) -> dict[str, Any] | None:
    """The state a live launcher wrote, or None (no launcher, or one that died without cleaning up).

    This is what ``/health`` reports; it reads a file, so the API needs nothing from the launcher.
    """
    try:
        state = json.loads(path.read_text())
        pid = int(state["launcher_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale file: its launcher is gone
    except PermissionError:
        pass  # alive, owned by another user
    return state


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
