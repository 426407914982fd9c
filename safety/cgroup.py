"""A throwaway pids cgroup per run, used when we run as root.

RLIMIT_NPROC is never enforced for uid 0 (the kernel exempts the root user even inside a
user namespace that maps to it), so a fork bomb would only be stopped by the wall timeout.
When a pids controller is writable (cgroup v2 or v1), each run gets ``pids.max``. Best
effort: without one, the timeout and the tree kill still apply.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

CANDIDATES = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


def _pids_root() -> Path | None:
    for base in CANDIDATES:
        if (base / "cgroup.procs").exists() and os.access(base, os.W_OK) and (
                (base / "pids.max").exists() or base.name == "pids"
                or "pids" in _read(base / "cgroup.subtree_control")):
            return base
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class PidsCgroup:
    """One cgroup with ``pids.max``; ``join`` runs in the child before exec."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._procs = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        root = _pids_root()
        if root is None:
            return None
        path = root / f"agent-sandbox-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_pids))
            return cls(path)
        except OSError:
            try:
                path.rmdir()
            except OSError:
                pass
            return None

    def join(self) -> None:
        """Called in the forked child (preexec_fn): move itself into the cgroup."""
        os.write(self._procs, b"0")

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.path / "cgroup.procs").split()]

    def kill_all(self) -> None:
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    def remove(self) -> None:
        os.close(self._procs)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError:
                self.kill_all()
                time.sleep(0.01)


def available() -> bool:
    return _pids_root() is not None
