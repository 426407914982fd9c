"""One throwaway cgroup per run, so the limits hold for the whole process tree.

rlimits bind one process at a time (four children of 1 GiB each are 4 GiB) and RLIMIT_NPROC
is never enforced for uid 0. When we may create cgroups (we run as root, or a delegated
cgroup v2 subtree is ours), each run gets one: ``memory`` (max, no swap), ``pids`` (max) and
``cpu`` (a quota of one CPU), under the cgroup this process is in. cgroup v2 is used when
its controllers are there; otherwise the v1 hierarchies that are mounted. The launcher joins
the run's cgroups before it drops privileges; once it is an unprivileged uid it cannot move
itself out (the cgroup files belong to root). The cgroups are removed after every run.

Who owns a run cgroup is proved by a lock, not by a pid. Before its cgroup exists, the agent
takes an exclusive ``flock`` on ``<LOCKS>/<cgroup name>.lock`` and holds it (an open file
description of its own) for the cgroup's life; the kernel drops the lock when the agent
ends, however it ends. A pid says nothing across pid namespaces (an agent in a container, under
``unshare --pid`` or in a CI runner sees every other agent's pid as dead), a lock does. The
sweep at each creation removes a run cgroup only when it can take that lock itself: its owner
provably ended. A cgroup whose lock file it cannot see (another agent with a private ``/run``
and ``/tmp``, a cgroup made by an older version) is left alone: a leak, never a live run killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import signal
import stat
import tempfile
import time
from pathlib import Path

BASE = Path("/sys/fs/cgroup")
PREFIX = "agent-sandbox-"
STALE = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+$")
# Where the owners' lock files live: shared by every agent of this machine that can see it.
LOCK_DIRS = (Path("/run/agent-sandbox"), Path(tempfile.gettempdir()) / f"agent-sandbox-{os.geteuid()}")


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


class OwnerLock:
    """The proof that a run cgroup's owner lives: an exclusive flock on its lock file, held by
    an open file description of the owner's own (close-on-exec: no run inherits it)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    @classmethod
    def take(cls, name: str) -> OwnerLock | None:
        """A new lock file for the cgroup ``name``, locked before anyone can see it (it is made
        under a temporary name and renamed once locked); None where no lock directory is usable."""
        for directory in LOCK_DIRS:
            if not _usable(directory):
                continue
            tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(tmp, directory / f"{name}.lock")
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    tmp.unlink()
                continue
            return cls(fd, directory / f"{name}.lock")
        return None

    @classmethod
    def claim(cls, name: str) -> OwnerLock | None:
        """The lock of the cgroup ``name`` when its owner provably ended (no one holds it); None
        when it is held (its owner lives) or there is no lock file to see (unknown: not ours to touch)."""
        for directory in LOCK_DIRS:
            path = directory / f"{name}.lock"
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return None   # held: its owner is running
            return cls(fd, path)
        return None

    def record(self, dirs) -> None:
        """Write the run's cgroup directories into the lock file: a sweep in another cgroup (an agent
        started elsewhere in the hierarchy) finds them there, not under its own parents."""
        data = "".join(f"{d}\n" for d in dirs).encode()
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)

    def recorded(self, name: str) -> list[Path]:
        """The directories ``record`` wrote, each checked to be a run cgroup named ``name``."""
        try:
            text = os.pread(self.fd, 65536, 0).decode("utf-8", "replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            path = Path(line)
            if (path.is_absolute() and path.name == name and BASE in path.parents
                    and ".." not in path.parts):
                found.append(path)
        return found

    def release(self, *, forget: bool) -> None:
        """Drop the lock; ``forget``: the cgroup is gone, so its lock file goes too (first)."""
        if self.fd < 0:
            return
        if forget:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = -1


def _usable(directory: Path) -> bool:
    """A lock directory only this uid may write (so no one else can plant or remove a lock)."""
    with contextlib.suppress(OSError):
        directory.mkdir(mode=0o700)
    try:
        st = directory.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022
            and os.access(directory, os.W_OK))


class RunCgroup:
    """The cgroups of one run (one directory on v2, one per controller on v1)."""

    def __init__(self, dirs: dict[str, Path], lock: OwnerLock | None = None) -> None:
        self.dirs, self.lock = dirs, lock

    @property
    def controllers(self) -> list[str]:
        return sorted(self.dirs)

    @classmethod
    def create(cls, memory: int, pids: int) -> RunCgroup | None:
        """A new cgroup with the limits, or None where none can be made (then rlimits only)."""
        # the pid is for people reading the hierarchy; ownership is the lock (see the module's doc)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        v2 = _v2_parent()
        if v2 is not None:
            parent, controllers = v2
            sweep([parent])
            made = cls._make({"": parent / name}, lambda _: _limits_v2(memory, pids), name)
            if made is not None:
                made.dirs = {c: made.dirs[""] for c in controllers}
            return made
        parents = _v1_parents()
        if "pids" not in parents and "memory" not in parents:
            return None
        sweep(parents.values())
        return cls._make({c: p / name for c, p in parents.items()},
                         lambda c: _limits_v1(c, memory, pids), name)

    @classmethod
    def _make(cls, dirs: dict[str, Path], limits, name: str) -> RunCgroup | None:
        # Locked before the cgroup exists: no sweep ever sees it without a live owner. Where no
        # lock directory is usable, the cgroup is made all the same; no other agent will sweep it.
        made = cls({}, OwnerLock.take(name))
        try:
            for controller, path in dirs.items():
                path.mkdir()
                made.dirs[controller] = path
                for key, value in limits(controller).items():
                    if (path / key).exists():
                        (path / key).write_text(value)
        except OSError:
            made.remove()
            return None
        if made.lock is not None:
            made.lock.record(made.dirs.values())
        return made

    def procs_files(self) -> list[str]:
        """What the launcher writes its pid to (as root, before dropping privileges)."""
        return sorted({str(p / "cgroup.procs") for p in self.dirs.values()})

    def pids(self) -> set[int]:
        return {int(p) for d in set(self.dirs.values()) for p in _read(d / "cgroup.procs").split()}

    def vanished(self) -> bool:
        """Whether one of its cgroups was removed by someone else (the run did not run as made)."""
        return any(not d.is_dir() for d in set(self.dirs.values()))

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
                if pid <= 0 or pid == os.getpid():   # 0: a member outside our pid namespace
                    continue
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
        """Kill what is left in it, remove it, then drop the lock (and its file, once all is gone)."""
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
        if self.lock is not None:
            self.lock.release(forget=not any(d.exists() for d in self.dirs.values()))
            self.lock = None


def sweep(parents) -> int:
    """Remove the run cgroups (under ``parents``) whose owner provably ended: their lock file is
    there and no one holds its lock. Return how many were removed. Lock files left with no
    cgroup (an owner that died between taking the lock and making the cgroup) go the same way."""
    found: dict[str, list[Path]] = {}
    for parent in parents:
        try:
            entries = list(Path(parent).iterdir())
        except OSError:
            continue
        for entry in entries:
            if STALE.match(entry.name):
                found.setdefault(entry.name, []).append(entry)
    removed = 0
    for name, dirs in found.items():
        lock = OwnerLock.claim(name)
        if lock is None:
            continue
        RunCgroup({str(i): d for i, d in enumerate(dirs)}, lock).remove()
        removed += not any(d.exists() for d in dirs)
    for directory in LOCK_DIRS:
        try:
            orphans = [p.name.removesuffix(".lock") for p in directory.iterdir() if p.name.endswith(".lock")]
        except OSError:
            continue
        for name in orphans:  # its cgroup is not under our parents: where its owner recorded it, if anywhere
            if name not in found and STALE.match(name) and (lock := OwnerLock.claim(name)) is not None:
                RunCgroup({str(i): d for i, d in enumerate(lock.recorded(name))}, lock).remove()
    return removed


def leftovers() -> list[Path]:
    """Every run cgroup that exists now (the leak test's view)."""
    v2 = _v2_parent()
    parents = [*_v1_parents().values(), *([v2[0]] if v2 else [])]
    return [e for p in parents for e in p.iterdir() if e.name.startswith(PREFIX)]


def available() -> bool:
    return _v2_parent() is not None or bool(_v1_parents())
