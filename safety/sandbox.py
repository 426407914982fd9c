"""Runtime isolation for generated code, with a fallback chain probed once at start-up.

Levels, best first:
  bwrap     bubblewrap: user/pid/net/ipc/uts namespaces as uid 65534, --cap-drop ALL, only
            the interpreter, venv, run dir and tmpfs visible, no /proc, seccomp filter.
  landlock  no user namespaces: Landlock (reads of the interpreter only, writes only in the
            run dir, no TCP, no signals out) + seccomp (no sockets, no setsid, no ptrace).
  rlimits   last resort, only when the user opts in: rlimits and an own process group.
Always: rlimits, a wall timeout that kills the whole tree, capped output, ``python -I``, a
clean environment. When we run as root, every level runs the code as ``nobody`` (see
``sandbox_identity``), in a private mount namespace where the run dir is a sized tmpfs, with a
cgroup per run bounding memory, processes and CPU for the whole tree (see cgroup.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import AgentError, UnsafePath
from safety import confine
from safety.cgroup import RunCgroup
from safety.warm import WarmWorker, WorkerPool, exec_dir_for

LEVELS = ("bwrap", "landlock", "rlimits")
SANDBOX_UID = 65534   # the uid inside bubblewrap's user namespace
RLIMITS_WARNING = ("WARNING: no sandbox available (no user namespaces, no Landlock): generated "
                   "code would run with only rlimits and its own process group, able to read "
                   "your files and reach the network, so it runs only with --allow-unsandboxed "
                   "(and tier-2 code only with your explicit approval).")
UNSANDBOXED_REFUSAL = ("no sandbox works here (neither bubblewrap nor Landlock), so generated code "
                       "is not run; install bubblewrap (bash setup.sh does), or accept the risk with "
                       "--allow-unsandboxed")
DEV_READ = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - covered by private tmpfs, not used
_ROOT = os.geteuid() == 0


def sandbox_identity() -> tuple[int, int] | None:
    """The host uid/gid generated code runs as when we are root (``nobody``); None otherwise.

    Code is never run as root: the launcher drops to this uid before bwrap, Landlock or
    rlimits apply, so nothing the code does is done by root, and bubblewrap then runs
    unprivileged in a user namespace of its own.
    """
    if not _ROOT:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


START_RETRIES = 3  # starts again of a sandbox that could not start (see did_not_start)
LAUNCH_RETRIES = 1  # starts again of a run whose launcher failed or whose cgroup vanished


def did_not_start(result: RunResult) -> bool:
    """Whether bubblewrap failed before running anything (EAGAIN making a namespace: the
    machine ran out of namespaces or processes for a moment). Code that prints the same line
    itself only gets itself run again, at most ``START_RETRIES`` times, and a pytest run always
    prints to stdout first."""
    return (result.level == "bwrap" and result.returncode == 1 and not result.stdout
            and result.stderr.lstrip().startswith("bwrap: Creating new namespace failed"))


class SandboxUnavailable(AgentError):
    """The requested sandbox level does not work on this machine."""


class SandboxDidNotStart(AgentError):
    """The sandbox could not run the code, which is not the code's doing: the launcher failed
    before the code started (it says so on a pipe the code cannot write), the run's cgroup was
    removed under it, or bubblewrap found no namespace free through every retry. Raised only
    after the run was started again; a caller records nothing about the code (no status, no
    failed iteration) and says this one line."""

    @classmethod
    def because(cls, why: str) -> SandboxDidNotStart:
        why = " ".join(why.split())[:300] or "no reason given"
        return cls(f"the sandbox could not start, so the code did not run ({why}); nothing was "
                   "recorded against it: try again")


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    level: str
    seconds: float
    truncated: bool


@dataclass
class Sandbox:
    workspace: Path
    level: str
    warning: str | None = None
    limits: confine.Limits = field(default_factory=confine.Limits)
    python: str = sys.executable
    allow_unsandboxed: bool = False   # run code at the rlimits level (not a sandbox) anyway
    warm: bool = True                 # test runs in a session reuse a warm worker (bwrap only)
    _pool: WorkerPool = field(default_factory=WorkerPool, repr=False, compare=False)
    _warm_failures: int = field(default=0, repr=False, compare=False)

    @classmethod
    def probe(cls, workspace: Path, *, force_level: str | None = None,
              allow_unsandboxed: bool = False) -> Sandbox:
        """The best level that works here (probed once per process), or ``force_level``."""
        levels = available_levels()
        if force_level is not None:
            if force_level not in LEVELS:
                raise SandboxUnavailable(f"unknown sandbox level {force_level!r}: one of {LEVELS}")
            if force_level not in levels:
                raise SandboxUnavailable(f"sandbox level {force_level!r} is not available here "
                                         f"(available: {', '.join(levels)})")
            level = force_level
        else:
            level = levels[0]
        return cls(Path(workspace).resolve(), level,
                   RLIMITS_WARNING if level == "rlimits" else None,
                   allow_unsandboxed=allow_unsandboxed)

    def describe(self) -> str:
        """One line for the REPL banner and :status."""
        text = {"bwrap": "bubblewrap (namespaces, unprivileged uid, no caps, seccomp, no network)",
                "landlock": "Landlock + seccomp (workspace-only writes, no sockets)",
                "rlimits": "rlimits only (NOT a sandbox)"}[self.level]
        return f"sandbox: {self.level} — {text}"

    # -- running ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[Sandbox]:
        """Test runs made inside (``run_warm``) share warm workers, each started once: see
        safety/warm.py. When the last session ends, its workers are stopped."""
        with self._pool.lock:
            self._pool.sessions += 1
        try:
            yield self
        finally:
            with self._pool.lock:
                self._pool.sessions -= 1
                last = self._pool.sessions == 0
            if last:
                self._pool.close_all()

    def run_warm(self, files: Mapping[str, str], args: Sequence[str], *, timeout: float = 15.0,
                 grants: frozenset[str] = frozenset(), readonly: Sequence[Path] = (),
                 output_limit: int = 64_000) -> RunResult | None:
        """Run ``python -m pytest <args>`` over ``files`` in a warm worker's fresh child
        (``{run_dir}`` in ``args`` is the run's directory), or return None when no warm worker
        can take it (not in a session, not bwrap, switched off, or none would start): the caller
        then runs it cold. The code has not run when this returns None."""
        if not (self.warm and self.level == "bwrap" and self._pool.sessions > 0 and self._warm_failures < 3):
            return None
        key = (frozenset(grants), tuple(sorted(str(Path(p).resolve()) for p in readonly)))
        for _ in range(2):
            worker = self._pool.take(key) or self._start_worker(grants, readonly)
            if worker is None:
                return None
            try:
                result = worker.run(files, args, timeout=timeout, limit=output_limit)
            except BaseException:   # Ctrl+C, say: this worker is in the middle of a run
                worker.close()
                raise
            if result is not None:
                self._pool.give_back(key, worker)
                return result
            worker.close()
        return None

    def _start_worker(self, grants: frozenset[str], readonly: Sequence[Path]) -> WarmWorker | None:
        for attempt in range(START_RETRIES + 1):
            exec_dir = exec_dir_for(self._inside(self.workspace))
            worker = WarmWorker.start(self, exec_dir, grants=grants, readonly=readonly)
            if worker is not None:
                self._pool.started += 1
                return worker
            time.sleep(0.25 * 2 ** attempt)
        self._warm_failures += 1
        return None

    def run_python(self, args: list[str], *, cwd: Path, timeout: float = 15.0,
                   grants: frozenset[str] = frozenset(), readonly: Sequence[Path] = (),
                   output_limit: int = 64_000) -> RunResult:
        """Run ``python -I <args>`` in ``cwd`` (a run directory inside the workspace).

        ``cwd`` is the only writable place; where the sandbox can, it is a private, size- and
        inode-limited tmpfs holding copies of its files, so nothing written reaches the host.
        ``readonly`` paths are visible, not writable. The whole process tree is killed on
        timeout and on any exception here (KeyboardInterrupt included), which is re-raised.
        A sandbox that could not start says nothing about the code, which never ran: bubblewrap
        finding no namespace free for a moment (a busy machine) is started again up to
        ``START_RETRIES`` times, a launcher that failed or a cgroup removed under the run
        ``LAUNCH_RETRIES`` times; then ``SandboxDidNotStart`` is raised, never a result.
        """
        launch_failures = busy = 0
        while True:
            try:
                result = self._run_once(args, cwd=cwd, timeout=timeout, grants=grants, readonly=readonly,
                                        output_limit=output_limit)
            except SandboxDidNotStart:
                launch_failures += 1
                if launch_failures > LAUNCH_RETRIES:
                    raise
                continue
            if not did_not_start(result):
                return result
            busy += 1
            if busy > START_RETRIES:
                raise SandboxDidNotStart.because(result.stderr.strip().splitlines()[0])
            time.sleep(0.25 * 2 ** (busy - 1))

    def _run_once(self, args: list[str], *, cwd: Path, timeout: float, grants: frozenset[str],
                  readonly: Sequence[Path], output_limit: int) -> RunResult:
        if self.level == "rlimits" and not self.allow_unsandboxed:
            raise SandboxUnavailable(UNSANDBOXED_REFUSAL)
        cwd = self._inside(cwd)
        started = time.monotonic()
        proc, cgroup, status = self._launch(args, cwd=cwd, readonly=[Path(p).resolve() for p in readonly],
                                            network="network" in grants, cpu_seconds=timeout,
                                            stdin=subprocess.DEVNULL)
        oom, vanished = False, False
        try:
            out, err, timed_out, truncated = _collect(proc, timeout, output_limit)
        finally:
            _kill_tree(proc, cgroup)
            failure = launch_failure(status)
            if cgroup:
                oom, vanished = cgroup.oom_killed(), cgroup.vanished()
                cgroup.remove()
        if failure:
            raise SandboxDidNotStart.because(failure)
        if vanished:
            raise SandboxDidNotStart.because("the run's cgroup was removed while it ran")
        if oom:
            err += b"\n[sandbox] the run went over its memory limit: the kernel killed part of it"
        return RunResult(proc.returncode if not timed_out else None,
                         out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                         timed_out, self.level, time.monotonic() - started, truncated)

    def _launch(self, args: Sequence[str], *, cwd: Path, readonly: list[Path], network: bool, cpu_seconds: float,
                stdin: int) -> tuple[subprocess.Popen, RunCgroup | None, int]:
        """Start ``python -I -B <args>`` through the launcher, in a cgroup of its own (as root).
        The third value is the read end of the launcher's status pipe (see ``launch_failure``)."""
        cgroup = RunCgroup.create(self.limits.memory, self.limits.processes) if _ROOT else None
        cfg = self._config(cwd, readonly, network, cpu_seconds, cgroup)
        status, status_w = os.pipe()
        cfg["status_fd"] = status_w
        cmd = [self.python, "-I", "-S", confine.LAUNCHER, json.dumps(cfg), "--", "-I", "-B", *args]
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=cfg.pop("env"), stdin=stdin,  # noqa: S603
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, close_fds=True, pass_fds=(status_w,))
        except BaseException:
            os.close(status)
            if cgroup:
                cgroup.remove()
            raise
        finally:
            os.close(status_w)
        return proc, cgroup, status

    def _inside(self, path: Path) -> Path:
        resolved = Path(path).resolve()
        if resolved != self.workspace and self.workspace not in resolved.parents:
            raise UnsafePath(f"{path} is outside the workspace {self.workspace}")
        return resolved

    def _config(self, cwd: Path, ro: list[Path], network: bool, timeout: float,
                cgroup: RunCgroup | None) -> dict:
        """What the launcher does, as data: cgroups, mounts, identity, limits, confinement."""
        identity = sandbox_identity()
        extra = 0 if self.level == "bwrap" or identity else confine.user_process_count()
        tmp = "/tmp" if self.level == "bwrap" else str(cwd)  # noqa: S108 - inside the namespace
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp,
               "LANG": "C.UTF-8", "USER": "sandbox", "LOGNAME": "sandbox",
               "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        cfg: dict = {"python": self.python, "rlimits": self.limits.rlimits(timeout, extra),
                     "cgroups": cgroup.procs_files() if cgroup else [], "env": env}
        reads = confine.python_read_paths() + [confine.LAUNCHER] + (
            list(confine.NETWORK_ETC) if network else [])
        if self.level in ("bwrap", "landlock"):
            cfg["seccomp"] = confine.seccomp_program(
                network=network, confine_group=self.level == "landlock")
        if identity:
            cfg["drop"] = list(identity)
            needs = [[p, False] for p in reads + [str(p) for p in ro]] + [[str(cwd), True]]
            cfg["mounts"] = {"needs": needs}
            if self.level != "bwrap":   # bwrap makes its own /tmp and /dev/shm and pid namespace
                cfg["mounts"]["hide"] = {p: f"mode=1777,size={self.limits.tmpfs_size}"
                                         for p in SHARED_TMP}
                cfg["pidns"] = True
            cfg["mounts"]["scratch"] = {"path": str(cwd), "size": self.limits.scratch_size,
                                        "inodes": self.limits.scratch_inodes}
        if self.level == "landlock":
            read = reads + [str(p) for p in ro] + list(DEV_READ)
            cfg["landlock"] = confine.landlock_config(confine.landlock_abi(), read,
                                                      [str(cwd), "/dev/null"], network)
        if self.level == "bwrap":
            cfg["bwrap"] = {"path": shutil.which("bwrap") or "bwrap", "chdir": str(cwd),
                            "args": _bwrap_args(cwd, ro, network, env, self.limits,
                                                scratch_ready=identity is not None)}
        return cfg


def _bwrap_args(cwd: Path, ro: list[Path], network: bool, env: dict[str, str],
                limits: confine.Limits, *, scratch_ready: bool) -> list[str]:
    """bubblewrap's arguments: namespaces, binds of only what Python needs, clean env, no /proc.

    ``scratch_ready``: the launcher already made ``cwd`` a private tmpfs (root); otherwise
    bwrap makes one here and binds the run's files into it read-only.
    """
    args = ["--unshare-all", "--unshare-user", "--disable-userns",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    if network:
        args.append("--share-net")
    # The tmpfs first: binds below /tmp (a checkout or venv there) must land on top of it.
    args += ["--size", str(limits.tmpfs_size), "--tmpfs", "/tmp"]  # noqa: S108 - a tmpfs of its own
    for path in confine.python_read_paths() + ([*confine.NETWORK_ETC] if network else []):
        if os.path.islink(path) and os.path.dirname(path) == "/":
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind-try", path, path]
    args += ["--dev", "/dev", "--size", str(limits.tmpfs_size), "--tmpfs", SHARED_TMP[2]]
    if scratch_ready:
        args += ["--bind", str(cwd), str(cwd)]
    else:
        args += ["--size", str(limits.scratch_size), "--perms", "0700", "--tmpfs", str(cwd)]
        for entry in sorted(os.scandir(cwd), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False):
                args += ["--ro-bind", entry.path, entry.path]
    for path in ro:
        args += ["--ro-bind", str(path), str(path)]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


def _collect(proc: subprocess.Popen, timeout: float, limit: int) -> tuple[bytes, bytes, bool, bool]:
    """Read both pipes until EOF, the deadline, or a flood; keep at most ``limit`` bytes each."""
    deadline = time.monotonic() + timeout
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    total, truncated, timed_out = 0, False, False
    with selectors.DefaultSelector() as sel:
        for pipe in bufs:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if proc.poll() is not None:   # main process gone: don't wait on leftover holders
                left = min(left, 0.2)
            events = sel.select(left)
            if not events and proc.poll() is not None:
                break
            for key, _ in events:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                total += len(chunk)
                keep = max(0, limit - len(buf))
                buf += chunk[:keep]
                truncated = truncated or len(chunk) > keep
            if total > 16 * limit:        # a flood: stop it rather than drain it for 15 s
                break
    if not timed_out:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, truncated


def launch_failure(status: int) -> str:
    """What the launcher said on its status pipe (read once its process is gone), then closed:
    why it gave up before the code started, or "" (it exec'd bubblewrap or the interpreter, so
    whatever happened next happened to the code)."""
    try:
        os.set_blocking(status, False)
        return os.read(status, 4096).decode("utf-8", "replace").strip()
    except OSError:   # EAGAIN: a holder still alive (cannot be, the tree is dead); EBADF
        return ""
    finally:
        with contextlib.suppress(OSError):
            os.close(status)


def _kill_tree(proc: subprocess.Popen, cgroup: RunCgroup | None) -> None:
    """SIGKILL the process group (and every cgroup member), reap, close pipes. The caller
    removes the cgroup."""
    for _ in range(50):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.002)
    if cgroup:
        cgroup.kill_all()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL'd processes exit
        pass
    for pipe in (proc.stdout, proc.stderr):
        if pipe:
            pipe.close()


@functools.lru_cache(maxsize=1)
def available_levels() -> list[str]:
    """Levels that work on this machine, best first (probed by a real run, once)."""
    levels = []
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as tmp:
        for level in ("bwrap", "landlock"):
            if level == "bwrap" and not shutil.which("bwrap"):
                continue
            if level == "landlock" and (confine.landlock_abi() < 1 or not _has_pyseccomp()):
                continue
            box = Sandbox(Path(tmp).resolve(), level)
            try:
                res = box.run_python(["-c", "print('ok')"], cwd=Path(tmp), timeout=10)
            except (OSError, SandboxDidNotStart):
                continue
            if res.returncode == 0 and res.stdout.strip() == "ok":
                levels.append(level)
    return levels + ["rlimits"]


def _has_pyseccomp() -> bool:
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True
