"""Durability of the results store: a part and its record commit together, a killed writer leaves no
visible partial part, writes are flushed (fsync) before and after the rename, orphaned temporary
files are removed when the API and the workers start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from phasescope.service.storage import ORPHAN_TEMP_AGE_S, remove_orphan_temp_files
from phasescope.service.store import ResultStore, read_table
from tests.integration.service import REPO, ApiServer, WorkerProcess, wait_for

AID = "00112233445566778899aabb"


def _part(step: int, rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "measure": ["loss"] * rows,
            "checkpoint": [step] * rows,
            "layer": [-1] * rows,
            "head": [-1] * rows,
            "quantity": ["loss"] * rows,
            "value": [0.5 + i for i in range(rows)],
        }
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASESCOPE_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_a_part_and_its_record_are_one_commit_and_old_stores_still_read(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert store.part_steps(AID) == [] and store.part_meta(AID) == {}  # before: neither
    record = {"seconds": 1.25, "worker": "w1", "rows": 3, "finished_at": 1.0}
    path = store.write_part(AID, 10, _part(10), record)
    # After: both, from one file (no second file that a kill could leave out).
    assert store.part_steps(AID) == [10] and store.part_meta(AID) == {10: record}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert read_table(path)["value"].tolist() == [0.5, 1.5, 2.5]

    # A store written before the record moved into the part: a part with its record beside it, a
    # part without one (killed between its two writes), a record whose part never arrived.
    parts = path.parent
    _part(20).to_parquet(parts / "000000020.parquet", index=False)
    (parts / "000000020.json").write_text('{"seconds": 2.0, "worker": "old"}')
    _part(30).to_parquet(parts / "000000030.parquet", index=False)
    (parts / "000000040.json").write_text('{"seconds": 4.0}')
    assert store.part_steps(AID) == [10, 20, 30]
    assert store.part_meta(AID) == {10: record, 20: {"seconds": 2.0, "worker": "old"}, 30: {}}


WRITER = """
import sys
import numpy as np
import pandas as pd
from phasescope.service.store import ResultStore

store, aid, rows = ResultStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
for step in range(1000):
    table = pd.DataFrame({
        "measure": "entropy", "checkpoint": step, "layer": rng.integers(0, 1 << 30, rows),
        "head": rng.integers(0, 1 << 30, rows), "quantity": "entropy", "value": rng.standard_normal(rows),
    })
    store.write_part(aid, step, table, {"rows": rows, "step": step})
    print(step, flush=True)
"""
ROWS = 1_500_000  # ~25 MB of Parquet per part: its write and fsync take long enough to be caught


def _kill_mid_write(root: Path) -> tuple[list[Path], int]:
    """Run a writer of large parts, SIGKILL it while a part's temporary file exists.

    Returns:
        The temporary files left behind and the number of parts the writer reported done.
    """
    parts = root / AID / "parts"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), AID, str(ROWS)],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "0", "the writer did not finish its first part"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the next part's temporary file: kill while it is there
            if any(name.endswith(".tmp") for name in os.listdir(parts)):
                writer.send_signal(signal.SIGKILL)
                break
        else:
            raise TimeoutError("the writer never started a second part")
        writer.wait(30)
        done = 1 + len([line for line in writer.stdout.read().splitlines() if line.strip()])
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    return [p for p in parts.iterdir() if p.name.endswith(".tmp")], done


def test_a_writer_killed_mid_write_leaves_no_visible_partial_part(tmp_path: Path) -> None:
    # The temporary file may be renamed between our look and the kill; then try again (rarely needed).
    for attempt in range(4):
        root = tmp_path / f"store{attempt}"
        leftovers, done = _kill_mid_write(root)
        if leftovers:
            break
    assert leftovers, "the kill never landed during a write"
    store = ResultStore(root)
    steps = store.part_steps(AID)
    assert steps == list(range(len(steps))) and len(steps) in (done, done + 1)
    # Every visible part is whole and has its record; the part being written is not visible.
    assert set(store.part_meta(AID)) == set(steps)
    for step in steps:
        assert store.part_meta(AID)[step] == {"rows": ROWS, "step": step}
        assert len(read_table(root / AID / "parts" / f"{step:09d}.parquet")) == ROWS
    assert remove_orphan_temp_files(root, older_than_s=0) == len(leftovers)
    assert not [p for p in (root / AID / "parts").iterdir() if p.name.endswith(".tmp")]


FSYNC_WRITER = """
import sys
import pandas as pd
from phasescope.service.store import ResultStore

table = pd.DataFrame({"measure": ["loss"], "checkpoint": [10], "layer": [-1], "head": [-1],
                      "quantity": ["loss"], "value": [0.5]})
ResultStore(sys.argv[1]).write_part(sys.argv[2], 10, table, {"rows": 1})
"""


def test_a_part_is_flushed_before_its_rename_and_the_rename_after(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is needed (make system-deps installs it)"
    root = (tmp_path / "store").resolve()
    log = tmp_path / "strace.log"
    subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-qq",
            "-o",
            str(log),
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
            sys.executable,
            "-c",
            FSYNC_WRITER,
            str(root),
            AID,
        ],
        env=_env(),
        check=True,
        timeout=300,
    )
    calls = [re.sub(r"^\d+\s+", "", line) for line in log.read_text().splitlines()]  # drop the pid
    parts = re.escape(str(root / AID / "parts"))

    def first(pattern: str, after: int = -1) -> int:
        hits = [i for i, call in enumerate(calls) if i > after and re.match(pattern, call)]
        assert hits, f"no {pattern!r} after call {after} in:\n" + "\n".join(calls)
        return hits[0]

    # strace -y names each descriptor's file: fsync(3</.../parts/.000000010.parquet.abcd1234.tmp>) = 0
    flushed_file = first(rf"f(data)?sync\(\d+<{parts}/\.000000010\.parquet\.[a-z0-9_]{{8}}\.tmp>\)")
    renamed = first(rf'rename.*\.000000010\.parquet\.[a-z0-9_]{{8}}\.tmp".*"{parts}/000000010\.parquet"')
    assert flushed_file < renamed
    first(rf"fsync\(\d+<{parts}>\)", after=renamed)  # the rename itself
    # The folders the write created (<id>/, <id>/parts/) were flushed into their parents first.
    assert first(rf"fsync\(\d+<{re.escape(str(root / AID))}>\)") < renamed


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def orphans(data_dir: Path) -> dict[str, Path]:
    """Temporary files a killed writer leaves, old and fresh, and files that only look alike."""
    parts = data_dir / "results" / AID / "parts"
    parts.mkdir(parents=True)
    series = data_dir / "zoo" / "induction-2l"
    series.mkdir(parents=True)
    deleting = data_dir / "results" / ".deleting-abcd1234"
    (deleting / AID).mkdir(parents=True)
    files = {
        "old_part": parts / ".000000010.parquet.k3x9_q2a.tmp",
        "old_checkpoint": series / ".step_000010.safetensors.zz81mmq0.tmp",
        "fresh_part": parts / ".000000020.parquet.p0o9i8u7.tmp",
        "not_ours": parts / "notes.tmp",
        "deleting": deleting,
    }
    for key, path in files.items():
        if key != "deleting":
            path.write_bytes(b"partial")
        if key != "fresh_part":
            _age(path, ORPHAN_TEMP_AGE_S + 60)
    return files


def test_orphan_temp_files_are_removed_at_api_and_worker_start(
    data_dir, redis_server, orphans, tmp_path
) -> None:
    env = {"PHASESCOPE_DATA_DIR": str(data_dir), "REDIS_URL": redis_server.url}
    api = ApiServer(env, tmp_path / "logs").start()
    try:
        assert not orphans["old_part"].exists() and not orphans["old_checkpoint"].exists()
        assert not orphans["deleting"].exists()
        # A live writer's file (recent) and files we did not name are kept.
        assert orphans["fresh_part"].exists() and orphans["not_ours"].exists()
    finally:
        api.stop()

    orphans["old_part"].write_bytes(b"partial")  # killed again, while only a worker runs
    _age(orphans["old_part"], ORPHAN_TEMP_AGE_S + 60)
    worker = WorkerProcess(env, tmp_path / "logs", "w1").start()
    try:
        wait_for(lambda: not orphans["old_part"].exists(), 120, "the worker to remove the orphan")
        assert orphans["fresh_part"].exists() and orphans["not_ours"].exists()
    finally:
        worker.stop()
