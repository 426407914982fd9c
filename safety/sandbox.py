"""Runtime isolation for generated code, with a fallback chain probed once at start-up.

Levels, best first:
  bwrap     bubblewrap: user/pid/net/ipc/uts namespaces as uid 65534, --cap-drop ALL, only
            the interpreter, venv, workspace and a tmpfs visible, seccomp filter.
  landlock  no user namespaces: Landlock (reads of the interpreter only, writes only in the
            workspace, no TCP, no signals out) + seccomp (no sockets, no setsid, no ptrace).
  rlimits   last resort: rlimits and an own process group. Loud warning; not a boundary.
Always: rlimits, a wall timeout that kills the whole tree, capped output, ``python -I``, a
clean environment. When we run as root, a pids cgroup (if writable) caps the process count,
since RLIMIT_NPROC does not bind uid 0.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import AgentError, UnsafePath
from safety import confine
from safety.cgroup import PidsCgroup

LEVELS = ("bwrap", "landlock", "rlimits")
SANDBOX_UID = 65534
RLIMITS_WARNING = ("WARNING: no sandbox available (no user namespaces, no Landlock): generated "
                   "code runs with only rlimits and its own process group. It can read your "
                   "files and reach the network. Tier-2 code is refused unless you approve it.")


# /proc entries a uid that maps to root outside could write (bubblewrap covers only irq, bus).
PROC_COVER = ("sys", "sysrq-trigger", "mtrr", "fs", "acpi", "scsi", "driver", "tty", "sysvipc",
              "kcore", "kmsg", "timer_list", "keys", "key-users")
DEV_READ = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


class SandboxUnavailable(AgentError):
    """The requested sandbox level does not work on this machine."""


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
    allow_unsandboxed: bool = False

    @classmethod
    def probe(cls, workspace: Path, *, force_level: str | None = None, allow_unsandboxed: bool = False) -> Sandbox:
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
                   RLIMITS_WARNING if level == "rlimits" else None, allow_unsandboxed=allow_unsandboxed)

    def describe(self) -> str:
        """One line for the REPL banner and :status."""
        text = {"bwrap": "bubblewrap (namespaces, uid 65534, no caps, seccomp, no network)",
                "landlock": "Landlock + seccomp (workspace-only writes, no sockets)",
                "rlimits": "rlimits only (NOT a sandbox)"}[self.level]
        return f"sandbox: {self.level} — {text}"

    # -- running ---------------------------------------------------------------------------

    def run_python(self, args: list[str], *, cwd: Path, timeout: float = 15.0,
                   grants: frozenset[str] = frozenset(), readonly: Sequence[Path] = (),
                   output_limit: int = 64_000, writable: Sequence[Path] | None = None) -> RunResult:
        """Run ``python -I <args>`` in ``cwd`` (inside the workspace) at this level.

        ``writable`` defaults to the whole workspace; ``readonly`` paths are visible but not
        writable (bound over writable ones). The whole process tree is killed on timeout and
        on any exception here (KeyboardInterrupt included), which is then re-raised.
        """
        cwd = self._inside(cwd)
        rw = [self._inside(p) for p in (writable if writable is not None else [self.workspace])]
        ro = [Path(p).resolve() for p in readonly]
        network = "network" in grants
        cmd, env = self._command(args, cwd, rw, ro, network, timeout)
        cgroup = PidsCgroup.create(self.limits.processes) if os.geteuid() == 0 else None
        started = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,  # noqa: S603
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, close_fds=True,
                                    preexec_fn=cgroup.join if cgroup else None)
        except BaseException:
            if cgroup:
                cgroup.remove()
            raise
        try:
            out, err, timed_out, truncated = _collect(proc, timeout, output_limit)
        finally:
            _kill_tree(proc, cgroup)
        return RunResult(proc.returncode if not timed_out else None,
                         out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                         timed_out, self.level, time.monotonic() - started, truncated)

    def _inside(self, path: Path) -> Path:
        resolved = Path(path).resolve()
        if resolved != self.workspace and self.workspace not in resolved.parents:
            raise UnsafePath(f"{path} is outside the workspace {self.workspace}")
        return resolved

    def _command(self, args: list[str], cwd: Path, rw: list[Path], ro: list[Path],
                 network: bool, timeout: float) -> tuple[list[str], dict[str, str]]:
        root = os.geteuid() == 0
        extra = 0 if self.level == "bwrap" or root else confine.user_process_count()
        cfg: dict = {"python": self.python, "rlimits": self.limits.rlimits(timeout, extra),
                     "drop_caps": self.level != "bwrap"}
        if self.level in ("bwrap", "landlock"):
            cfg["seccomp"] = confine.seccomp_program(
                network=network, deny_all_sockets=self.level == "landlock",
                confine_group=self.level == "landlock")
        tmp = "/tmp" if self.level == "bwrap" else str(cwd / ".tmp")  # noqa: S108 - inside the namespace
        if self.level != "bwrap":
            os.makedirs(tmp, exist_ok=True)
        if self.level == "landlock":
            read = confine.python_read_paths() + [confine.LAUNCHER] + [str(p) for p in ro]
            read += list(confine.NETWORK_ETC) if network else []
            write = [str(p) for p in rw] + ["/dev/null"]
            cfg["landlock"] = confine.landlock_config(confine.landlock_abi(), read + list(DEV_READ),
                                                      write, network)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp,
               "LANG": "C.UTF-8", "USER": "sandbox", "LOGNAME": "sandbox",
               "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        inner = [self.python, "-I", "-S", confine.LAUNCHER, json.dumps(cfg), "--", "-I", "-B",
                 *args]
        if self.level != "bwrap":
            return inner, env
        return _bwrap_args(cwd, rw, ro, network, env, self.limits) + inner, {}


def _bwrap_args(cwd: Path, rw: list[Path], ro: list[Path], network: bool,
                env: dict[str, str], limits: confine.Limits) -> list[str]:
    """bubblewrap's command line: namespaces, binds of only what Python needs, clean env."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
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
    args += ["--ro-bind", confine.LAUNCHER, confine.LAUNCHER, "--proc", "/proc", "--dev", "/dev"]
    for entry in PROC_COVER:   # the sandbox uid maps to our uid: keep kernel knobs read-only
        args += ["--ro-bind-try", f"/proc/{entry}", f"/proc/{entry}"]
    for path in rw:
        args += ["--bind", str(path), str(path)]
    for path in ro:
        args += ["--ro-bind", str(path), str(path)]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args + ["--chdir", str(cwd), "--"]


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


def _kill_tree(proc: subprocess.Popen, cgroup: PidsCgroup | None) -> None:
    """SIGKILL the process group (and every cgroup member), reap, close pipes."""
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
    if cgroup:
        cgroup.remove()


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
            except OSError:
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
