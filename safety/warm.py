"""Warm test runs: one sandbox per directive, each test run in a fresh child forked inside it.

A cold test run starts a sandbox, an interpreter, pytest and hypothesis every time (~400 ms,
most of a test run). ``Sandbox.session()`` keeps a worker (safety/_worker.py) running in a
sandbox built exactly like a cold run's (same launcher, bubblewrap arguments, seccomp filter,
uid, rlimits and cgroup), which forks a child for each run and, after it, kills every process
left in its pid namespace and empties every directory the sandbox may write. See _worker.py
for what keeps one run from the next, and safety/README.md for the threat model.

Only at the bwrap level: the cleanup's ``kill(-1)`` is safe only in a pid namespace of its
own. Anything unexpected (the worker would not start, died, or could not clean up) ends that
worker; the run is then made in a fresh one, or cold, and never counted against the code unless
the code ran.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import selectors
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from safety.cgroup import RunCgroup
from safety.paths import safe_rmtree

if TYPE_CHECKING:
    from safety.sandbox import RunResult, Sandbox

WORKER = str(Path(__file__).with_name("_worker.py"))
START_TIMEOUT = 60.0   # seconds for the worker to import pytest and hypothesis and say ready
READY_TIMEOUT = 10.0   # seconds for its cleanup after a run
WORKER_CPU = 3600      # the worker's own CPU limit; each child gets the run's
STDERR_LIMIT = 16_000


class WarmWorker:
    """One worker sandbox; not thread-safe (the pool hands it to one run at a time)."""

    def __init__(self, proc: subprocess.Popen, cgroup: RunCgroup | None, exec_dir: Path, level: str) -> None:
        self.proc, self.cgroup, self.exec_dir, self.level = proc, cgroup, exec_dir, level
        self.stderr = bytearray()
        self._buffer = bytearray()
        self.ready = False

    @classmethod
    def start(cls, sandbox: Sandbox, exec_dir: Path, *, grants: frozenset[str],
              readonly: Sequence[Path]) -> WarmWorker | None:
        """A worker that said ready, or None (it could not start; nothing of it is left)."""
        try:
            proc, cgroup, status = sandbox._launch(
                [WORKER], cwd=exec_dir, readonly=[Path(p).resolve() for p in readonly] + [Path(WORKER)],
                network="network" in grants, cpu_seconds=WORKER_CPU - 1, stdin=subprocess.PIPE)
        except BaseException:
            safe_rmtree(exec_dir)
            raise
        os.close(status)   # a worker that does not say ready is given up, whatever the reason
        worker = cls(proc, cgroup, exec_dir, sandbox.level)
        try:
            worker.ready = worker._read() == {"ready": True}
        except BaseException:
            worker.close()
            raise
        if not worker.ready:
            worker.close()
            return None
        return worker

    def run(self, files: Mapping[str, str], args: Sequence[str], *, timeout: float,
            limit: int) -> RunResult | None:
        """The run's result, or None when the worker could not take it (the code never ran)."""
        from safety.sandbox import RunResult
        if not self.ready:
            self.ready = self._read(READY_TIMEOUT) == {"ready": True}
            if not self.ready:
                return None
        request = {"files": dict(files), "args": list(args), "timeout": timeout,
                   "cpu": math.ceil(timeout) + 1, "limit": limit}
        started = time.monotonic()
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        self.ready = False
        if self._read(READY_TIMEOUT) != {"forked": True}:
            self.close()
            return None   # the worker died before the code ran (while writing its files, say)
        reply = self._read(timeout + 5.0)
        seconds = time.monotonic() - started
        oom = bool(self.cgroup and self.cgroup.oom_killed())
        note = "\n[sandbox] the run went over its memory limit: the kernel killed part of it" if oom else ""
        ended = not isinstance(reply, dict) or "returncode" not in reply
        if ended and self.cgroup is not None and self.cgroup.vanished():
            self.close()
            return None   # its cgroup was removed under it (its processes killed): not the code's doing
        if ended:
            # The sandbox died (the code killed it, or the memory limit did) or hung: the run failed.
            timed_out = self.proc.poll() is None
            self.close()
            stderr = "[sandbox] the test run's sandbox stopped before the run ended" + note
            return RunResult(None if timed_out else -9, "", stderr, timed_out, self.level, seconds, False)
        if oom:
            self.close()   # its cgroup's counter now says OOM for good: a fresh one for the next run
        return RunResult(reply["returncode"], reply["stdout"], reply["stderr"] + note,
                         bool(reply["timed_out"]), self.level, seconds, bool(reply["truncated"]))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self, timeout: float = START_TIMEOUT) -> object:
        """The next JSON line from the worker (None on EOF, a deadline, or not JSON); drains stderr."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            sel.register(self.proc.stderr, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.get_map():
                    return None
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 1 << 20)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        if key.fileobj is self.proc.stdout:
                            return None
                    elif key.fileobj is self.proc.stdout:
                        self._buffer += chunk
                    else:
                        self.stderr = (self.stderr + chunk)[-STDERR_LIMIT:]
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def close(self) -> None:
        """Kill the worker's whole tree, remove its cgroup and its run directory."""
        from safety.sandbox import _kill_tree
        self.ready = False
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        _kill_tree(self.proc, self.cgroup)
        if self.cgroup:
            self.cgroup.remove()
            self.cgroup = None
        safe_rmtree(self.exec_dir)


class WorkerPool:
    """Idle workers of one sandbox, by what they were started with (grants, read-only paths)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._idle: dict[tuple, list[WarmWorker]] = {}
        self.sessions = 0
        self.started = 0

    def take(self, key: tuple) -> WarmWorker | None:
        with self.lock:
            idle = self._idle.get(key, [])
            while idle:
                worker = idle.pop()
                if worker.alive:
                    return worker
                worker.close()
        return None

    def give_back(self, key: tuple, worker: WarmWorker) -> None:
        with self.lock:
            if self.sessions > 0 and worker.alive:
                self._idle.setdefault(key, []).append(worker)
                return
        worker.close()

    def close_all(self) -> None:
        with self.lock:
            workers = [w for idle in self._idle.values() for w in idle]
            self._idle.clear()
        for worker in workers:
            worker.close()


def exec_dir_for(workspace: Path) -> Path:
    """A fresh directory for a worker (its private tmpfs is mounted over it)."""
    path = workspace / "exec" / f"warm-{secrets.token_hex(4)}"
    path.mkdir(parents=True, mode=0o700)
    path.chmod(0o700)
    return path
