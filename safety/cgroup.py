"""One throwaway cgroup per run, so the limits hold for the whole process tree.

rlimits bind one process at a time (four children of 1 GiB each are 4 GiB) and RLIMIT_NPROC
is never enforced for uid 0. When we may create cgroups (we run as root, or a delegated
cgroup v2 subtree is ours), each run gets one: ``memory`` (max, no swap), ``pids`` (max) and
``cpu`` (a quota of one CPU), under the cgroup this process is in. cgroup v2 is used when
its controllers are there; otherwise the v1 hierarchies that are mounted. The launcher joins
the run's cgroups before it drops privileges; once it is an unprivileged uid it cannot move
itself out (the cgroup files belong to root). The cgroups are removed after every run; ones
left by an agent that died (their owner pid is gone) are swept at the next creation.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from pathlib import Path

BASE = Path("/sys/fs/cgroup")
PREFIX = "agent-sandbox-"
STALE = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+$")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            out[name.removeprefix("name=")] = path
    return out


def _v2_parent() -> tuple[Path, list[str]] | None:
    """Where a v2 child with memory/pids (cpu) can be made: our own cgroup, if delegated."""
    own = _own_paths().get("")
    if own is None or not (BASE / "cgroup.controllers").exists():
        return None
    parent = BASE / own.lstrip("/")
    enabled = _read(parent / "cgroup.subtree_control").split()
    wanted = [c for c in ("memory", "pids", "cpu") if c in enabled]
    if "memory" not in wanted or "pids" not in wanted or not os.access(parent, os.W_OK):
        return None
    return parent, wanted


def _v1_parents() -> dict[str, Path]:
    own, out = _own_paths(), {}
    for controller in ("memory", "pids", "cpu"):
        mount = BASE / controller
        if controller in own and (mount / "cgroup.procs").exists():
            parent = mount / own[controller].lstrip("/")
            if os.access(parent, os.W_OK):
                out[controller] = parent
    return out


def _limits_v2(memory: int, pids: int) -> dict[str, str]:
    return {"memory.max": str(memory), "memory.swap.max": "0", "pids.max": str(pids),
            "cpu.max": "100000 100000"}


def _limits_v1(controller: str, memory: int, pids: int) -> dict[str, str]:
    return {"memory": {"memory.limit_in_bytes": str(memory), "memory.swappiness": "0"},
            "pids": {"pids.max": str(pids)},
            "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}}[controller]


class RunCgroup:
    """The cgroups of one run (one directory on v2, one per controller on v1)."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    @property
    def controllers(self) -> list[str]:
        return sorted(self.dirs)

    @classmethod
    def create(cls, memory: int, pids: int) -> RunCgroup | None:
        """A new cgroup with the limits, or None where none can be made (then rlimits only)."""
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        v2 = _v2_parent()
        if v2 is not None:
            parent, controllers = v2
            sweep(parent)
            made = cls._make({"": parent / name}, lambda _: _limits_v2(memory, pids))
            if made is not None:
                made.dirs = {c: made.dirs[""] for c in controllers}
            return made
        parents = _v1_parents()
        if "pids" not in parents and "memory" not in parents:
            return None
        for parent in parents.values():
            sweep(parent)
        return cls._make({c: p / name for c, p in parents.items()},
                         lambda c: _limits_v1(c, memory, pids))

    @classmethod
    def _make(cls, dirs: dict[str, Path], limits) -> RunCgroup | None:
        made: dict[str, Path] = {}
        try:
            for controller, path in dirs.items():
                path.mkdir()
                made[controller] = path
                for key, value in limits(controller).items():
                    if (path / key).exists():
                        (path / key).write_text(value)
        except OSError:
            cls(made).remove()
            return None
        return cls(made)

    def procs_files(self) -> list[str]:
        """What the launcher writes its pid to (as root, before dropping privileges)."""
        return sorted({str(p / "cgroup.procs") for p in self.dirs.values()})

    def pids(self) -> set[int]:
        return {int(p) for d in set(self.dirs.values()) for p in _read(d / "cgroup.procs").split()}

    def kill_all(self) -> None:
        """SIGKILL every member, again until none is left (forks race the first pass)."""
        for d in set(self.dirs.values()):
            if (d / "cgroup.kill").exists():
                try:
                    (d / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        for _ in range(200):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    def oom_killed(self) -> bool:
        """Whether the memory limit killed something in this run."""
        d = self.dirs.get("memory")
        if d is None:
            return False
        events = _read(d / "memory.events") + _read(d / "memory.oom_control")
        return bool(re.search(r"^oom_kill [1-9]", events, re.M))

    def remove(self) -> None:
        for d in set(self.dirs.values()):
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill_all()
                    time.sleep(0.005)


def sweep(parent: Path) -> int:
    """Remove run cgroups whose agent process is gone; return how many were removed."""
    removed = 0
    try:
        entries = list(parent.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = STALE.match(entry.name)
        if not m or _alive(int(m.group(1))):
            continue
        RunCgroup({"stale": entry}).remove()
        removed += not entry.exists()
    return removed


def leftovers() -> list[Path]:
    """Every run cgroup that exists now (the leak test's view)."""
    v2 = _v2_parent()
    parents = [*_v1_parents().values(), *([v2[0]] if v2 else [])]
    return [e for p in parents for e in p.iterdir() if e.name.startswith(PREFIX)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def available() -> bool:
    return _v2_parent() is not None or bool(_v1_parents())
