"""Durable files and process locks: atomic writes, cheap backups, liveness, debris from kills."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def link_backup(path: Path, backup: Path) -> None:
    """Make ``backup`` the current ``path`` by a hard link (no copy: the next write replaces
    ``path`` with a new inode, so the link keeps the old bytes); copies where links fail."""
    tmp = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(path, tmp)
    except OSError:
        atomic_write(backup, path.read_bytes())
        return
    try:
        os.replace(tmp, backup)
    finally:  # also when a rename between two links of one file did nothing
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def try_lock(path: Path, *, shared: bool = False, wait: bool = False) -> int | None:
    """An fd holding an flock on ``path`` (created), or None if another process holds it
    (``wait``: block until it is free instead).

    The kernel drops the lock when the holder dies, even by SIGKILL: that is how a dead
    agent's directive and run directories are told from a live one's. A lock file is removed
    by whoever releases it last, so a lock taken on a file that was unlinked meanwhile is
    worthless: it is dropped and taken again on the file now at ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked an unlinked file: try the one at the path now


def unlock(fd: int, path: Path | None = None) -> None:
    """Release a ``try_lock`` (removing ``path`` first when given: nobody needs it any more)."""
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
    os.close(fd)


# temp files of atomic_write / link_backup (.memory.json.x1y2.tmp, .memory.json.bak.123.tmp)
# and of safety.paths.safe_write_text (.name.py.1a2b3c4d.tmp)
_DEBRIS = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def temp_debris(*directories: Path) -> list[Path]:
    """Temp files a killed write left in ``directories`` (regular files only, links never followed)."""
    found = []
    for directory in directories:
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            found += [Path(e.path) for e in entries
                      if _DEBRIS.match(e.name) and e.is_file(follow_symlinks=False)]
    return found
