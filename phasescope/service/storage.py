"""Files that survive a killed process and a power loss, and a disk that says when it is full.

Every file phasescope writes (results, series, attention patterns) goes through
:func:`atomic_write_bytes`: the bytes go to a temporary file ``.<name>.<8 random>.tmp`` beside the
target, are flushed to the disk (``fsync``), the file is renamed over the target, and the directory
is flushed too, so the rename itself is on the disk. A reader sees the old file or the new one, never
a mix; after a killed process *or* a power loss the new file is there in full or not at all (on
filesystems that honour ``fsync``: ext4, xfs, btrfs, tmpfs; some network filesystems do not).

A process killed between creating and renaming its temporary file leaves that file behind:
:func:`remove_orphan_temp_files` removes old ones when the API or a worker starts.

Write failures that no retry can fix are raised as :class:`~phasescope.errors.StorageFull` (no space,
quota used up, file over a size limit) or :class:`~phasescope.errors.StorageError` (read-only
filesystem, permission denied), with a message that says what to do and never names a server path.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from phasescope.errors import StorageError, StorageFull

__all__ = [
    "ORPHAN_TEMP_AGE_S",
    "atomic_write_bytes",
    "commit_temp_file",
    "ensure_free_space",
    "free_space_mib",
    "fsync_dir",
    "make_dirs",
    "raise_storage_error",
    "remove_orphan_temp_files",
]

log = logging.getLogger("phasescope.service.storage")

# A live writer holds its temporary file for one write and one fsync, and every write() moves its
# mtime; even a 1 GB merged result on a slow network disk takes well under a minute. A temporary
# file untouched for 15 minutes is therefore an orphan of a killed process, never a file in use.
ORPHAN_TEMP_AGE_S = 15 * 60

# What tempfile.mkstemp(prefix=".<name>.", suffix=".tmp") creates: 8 characters from
# tempfile's alphabet (lowercase letters, digits, underscore). ResultStore.delete renames a folder
# to ".deleting-<8>/" before removing it; a kill in between leaves that folder.
_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_DELETING_DIR = re.compile(r"^\.deleting-[a-z0-9_]{8}$")

_FULL = {
    errno.ENOSPC: "no space is left on the disk of phasescope's data directory",
    errno.EDQUOT: "the disk quota of phasescope's data directory is used up",
    errno.EFBIG: "a file would be larger than the filesystem or process limit allows",
}
_REFUSED = {
    errno.EROFS: "the data directory is on a read-only filesystem",
    errno.EACCES: "phasescope's user may not write to the data directory",
    errno.EPERM: "phasescope's user may not write to the data directory",
}


def raise_storage_error(exc: OSError, path: Path | str) -> None:
    """Raise StorageFull / StorageError for an OSError no retry can fix; return for any other.

    Args:
        exc: the error a write raised.
        path: the file being written (kept in the exception's context for logs, not in its message).
    """
    if exc.errno in _FULL:
        raise StorageFull(
            f"{_FULL[exc.errno]}: free disk space (or move PHASESCOPE_DATA_DIR to a larger disk), "
            "then submit again",
            path=str(path),
            errno=exc.errno,
        ) from exc
    if exc.errno in _REFUSED:
        raise StorageError(
            f"{_REFUSED[exc.errno]}: an operator must make PHASESCOPE_DATA_DIR writable",
            path=str(path),
            errno=exc.errno,
        ) from exc


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to the disk."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise_storage_error(exc, directory)
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (a few FUSE and network ones) cannot fsync a directory: they say EINVAL.
        if exc.errno != errno.EINVAL:
            raise_storage_error(exc, directory)
            raise
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """``mkdir -p`` whose new entries survive a power loss (each new folder's parent is flushed)."""
    missing = []
    for d in (directory, *directory.parents):
        if d.is_dir():
            break
        missing.append(d)
    for d in reversed(missing):
        try:
            d.mkdir(exist_ok=True)
        except OSError as exc:
            raise_storage_error(exc, d)
            raise
        fsync_dir(d.parent)


def _readable(tmp: str) -> None:
    """Give a temporary file the permissions a plain ``open`` would (mkstemp makes it owner-only),
    so a store or series on a shared volume stays readable by the API's and workers' users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def commit_temp_file(tmp: str | Path, path: Path) -> None:
    """Make a fully written temporary file the file ``path``: flush it, rename it, flush the rename.

    The temporary file is removed when this fails.
    """
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            # The bytes reach the disk before the name points at them: after a power loss the
            # target is the old file or the whole new one, never an empty or torn file.
            os.fsync(fd)
        finally:
            os.close(fd)
        _readable(str(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise_storage_error(exc, path)
        raise
    fsync_dir(Path(path).parent)  # the rename itself


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a flushed temporary file and a flushed rename.

    Raises:
        StorageFull: no space, quota or size limit left (nothing is left behind).
        StorageError: the directory cannot be written (read-only, permissions).
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise_storage_error(exc, path)
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise_storage_error(exc, path)
        raise
    commit_temp_file(tmp, path)


def free_space_mib(path: Path) -> float:
    """MiB an unprivileged user may still write on the filesystem holding ``path`` (or its nearest
    existing parent, so a data directory not yet created is measured where it will be)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free / 2**20
    return shutil.disk_usage("/").free / 2**20


def ensure_free_space(path: Path, min_free_mib: float) -> float:
    """Refuse new work when the filesystem of ``path`` has less than ``min_free_mib`` MiB free.

    Returns:
        The free space in MiB.

    Raises:
        StorageFull: below the minimum (``PHASESCOPE_MIN_FREE_DISK_MB``).
    """
    free = free_space_mib(path)
    if min_free_mib > 0 and free < min_free_mib:
        raise StorageFull(
            f"only {free:.1f} MiB are free on the disk of phasescope's data directory, below "
            f"PHASESCOPE_MIN_FREE_DISK_MB ({min_free_mib:g} MiB): free disk space, delete finished "
            "analyses you no longer need, or move PHASESCOPE_DATA_DIR to a larger disk, then submit again",
            free_mb=round(free, 1),
            min_free_mb=min_free_mib,
        )
    return free


def remove_orphan_temp_files(root: Path, older_than_s: float = ORPHAN_TEMP_AGE_S) -> int:
    """Remove temporary files (and half-deleted folders) that killed writers left under ``root``.

    Only names this module and ``ResultStore.delete`` create are touched, and only when untouched for
    ``older_than_s`` seconds, so a writer that is still running keeps its file. Never raises: a store
    that cannot be cleaned (read-only, vanished) must not stop a service from starting.

    Args:
        root: a folder phasescope owns (the results store, the zoo).
        older_than_s: minimum age in seconds (time since the last modification).

    Returns:
        How many files and folders were removed.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if not _TEMP_FILE.match(name):
                continue
            path = Path(dirpath) / name
            with suppress(OSError):
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        for name in list(dirnames):
            if not _DELETING_DIR.match(name):
                continue
            dirnames.remove(name)  # do not walk into what is being removed
            path = Path(dirpath) / name
            with suppress(OSError):
                if path.lstat().st_mtime < cutoff:
                    shutil.rmtree(path)
                    removed += 1
    if removed:
        log.info("removed %d temporary files left by killed writers under %s", removed, root)
    return removed
