"""A warm test runner inside the sandbox: started once (per directive), it runs each test run in
a fresh child forked from it, then leaves nothing of that run behind. Runs as
``python -I -B _worker.py`` inside bubblewrap (see safety/warm.py, which talks to it).

Why: a cold run pays for the sandbox's start and for importing pytest and hypothesis (~300 ms)
every time; a child forked from a process that has them imported pays neither (~60 ms).

What keeps one run from another, each step before the worker says it is ready again:
- the child gets only its own output pipes and /dev/null: none of the worker's descriptors,
  so it cannot write the worker's replies; the worker is not dumpable, and the seccomp filter
  refuses ptrace and process_vm_writev, so it cannot reach the worker's memory either;
- when the child ends (or its time is up), every other process in the sandbox's pid namespace
  is SIGKILLed (``kill(-1)``), until none is left: nothing a run started outlives it;
- then every filesystem the sandbox uid can write (bubblewrap's root, /dev, /tmp, /dev/shm,
  the run directory) is put back as it was when the worker started: what a run added is
  removed and modes it changed are set back, so no file of a run is there for the next one;
- SysV and POSIX message-queue IPC, the one kernel state that outlives processes, is refused
  by the seccomp filter, as are limits and scheduling set on another process (the worker);
  the worker also checks its own after each run and ends if they changed.
If any of that cannot be done, the worker exits, and the next run starts a fresh sandbox.

Protocol, one JSON object a line: it reads requests on stdin and writes replies on the
descriptor that was its stdout (its own stdout and stderr then go to /dev/null and stderr).
  -> {"ready": true}                                          after start, and after each cleanup
  <- {"files": {name: text}, "args": [...], "timeout": s, "cpu": s, "limit": bytes}
  -> {"forked": true}                                         the child runs: from here, the code ran
  -> {"returncode": n|null, "stdout": str, "stderr": str, "timed_out": bool, "truncated": bool}
"""

import ctypes
import errno
import gc
import json
import os
import re
import resource
import selectors
import signal
import stat
import sys
import time

FILE_NAME = re.compile(r"[A-Za-z0-9_]{1,120}\.py")
PR_SET_DUMPABLE = 4
KILL_WAIT = 2.0      # seconds to wait for killed processes to be gone


def warm_up():
    """Import what a test run needs, so children are forked with it loaded."""
    import _pytest.config
    import pytest  # noqa: F401
    for name in _pytest.config.default_plugins:
        try:
            __import__(f"_pytest.{name}")
        except ImportError:
            continue
    for name in ("doctest", "hypothesis", "hypothesis.strategies", "typeguard", "ast", "inspect",
                 "typing", "copy", "unittest.mock", "decimal", "fractions", "json", "math", "re",
                 "collections", "itertools", "functools", "string", "datetime"):
        try:
            __import__(name)
        except ImportError:
            continue
    gc.collect()
    gc.freeze()  # the imported heap is never scanned again: a child's gc.collect stays cheap


def send(channel, obj):
    channel.write(json.dumps(obj) + "\n")
    channel.flush()


def child(run_dir, args, cpu, out_w, err_w, names):
    """In the forked child: only its own pipes, its own CPU limit, none of the worker's modules
    named like the run's files (a skill called ``fractions`` is the skill, as in a cold run),
    then pytest, then what an interpreter does at exit (waiting for threads, atexit)."""
    try:
        os.chdir(run_dir)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process ends with it
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        for module in [m for m in sys.modules if m.split(".")[0] in names]:
            del sys.modules[module]
        import pytest
        code = int(pytest.main(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - whatever the code did, this child ends here
        import traceback
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()         # as pytest's console_main does
        import atexit
        import threading
        threading._shutdown()      # as at an interpreter's exit: non-daemon threads are waited for
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def collect(pid, pipes, timeout, limit):
    """Read the child's two pipes until it has ended (and they are quiet), the deadline, or a flood."""
    deadline = time.monotonic() + timeout
    bufs = {fd: bytearray() for fd in pipes}
    total, truncated, timed_out, status = 0, False, False, None
    pidfd = os.pidfd_open(pid)
    with selectors.DefaultSelector() as sel:
        for fd in pipes:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        ended_at = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = status is None
                break
            if ended_at is not None:
                left = min(left, ended_at + 0.2 - time.monotonic())  # a leftover holds the pipe
                if left <= 0 or not sel.get_map():
                    break
            for key, _ in sel.select(left):
                if key.fd == pidfd:
                    _, raw = os.waitpid(pid, 0)
                    status = os.waitstatus_to_exitcode(raw)
                    ended_at = time.monotonic()
                    sel.unregister(pidfd)
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                total += len(chunk)
                keep = max(0, limit - len(bufs[key.fd]))
                bufs[key.fd] += chunk[:keep]
                truncated = truncated or len(chunk) > keep
            if total > 16 * limit:
                truncated = True
                break
    os.close(pidfd)
    return status, [bytes(bufs[fd]) for fd in pipes], timed_out, truncated


def kill_everything_else(pid):
    """SIGKILL every process of this sandbox but the worker, and wait until none is left."""
    deadline = time.monotonic() + KILL_WAIT
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.kill(-1, 0)
        except ProcessLookupError:
            return True   # nothing left that this uid may signal (bwrap's pid 1 is not counted)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def scan(root, found=None, *, nested=True):
    """Everything on ``root``'s own filesystem, by path: (kind, mode, link target or size).
    Mount points below it are listed as such and not entered; with ``nested``, the writable
    ones are scanned as roots of their own (kind "root")."""
    found = {} if found is None else found
    dev = os.lstat(root).st_dev
    found[root] = ("root", stat.S_IMODE(os.lstat(root).st_mode), None)
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except PermissionError:
            os.chmod(directory, stat.S_IRWXU | stat.S_IMODE(os.lstat(directory).st_mode))
            entries = list(os.scandir(directory))
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except PermissionError:   # a directory the code made readable but not searchable
                os.chmod(directory, stat.S_IRWXU | stat.S_IMODE(os.lstat(directory).st_mode))
                st = entry.stat(follow_symlinks=False)
            if st.st_dev != dev:
                if nested and stat.S_ISDIR(st.st_mode) and os.access(entry.path, os.W_OK):
                    scan(entry.path, found)
                else:
                    found.setdefault(entry.path, ("mount", None, None))
                continue
            kind = ("dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode)
                    else "file" if stat.S_ISREG(st.st_mode) else "other")
            found[entry.path] = (kind, None if kind == "link" else stat.S_IMODE(st.st_mode),
                                 os.readlink(entry.path) if kind == "link" else st.st_size if kind == "file" else None)
            if kind == "dir":
                stack.append(entry.path)
    return found


def remove(path):
    """Remove ``path`` (a tree the sandbox uid owns), whatever modes the code gave it."""
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, stat.S_IRWXU)
        for entry in list(os.scandir(path)):
            remove(entry.path)
        os.rmdir(path)
    else:
        os.unlink(path)


def restore(snapshot):
    """Put every writable filesystem of the sandbox back as it was when the worker started:
    what a run added is removed, modes it changed are set back. Anything else changed (a file
    or link of the start replaced or removed) cannot be put back here: OSError."""
    now = {}
    for root in sorted(p for p, (kind, _, _) in snapshot.items() if kind == "root"):
        os.chmod(root, stat.S_IRWXU | snapshot[root][1])   # the code may have locked it
        scan(root, now, nested=False)
    for path in sorted(set(now) - set(snapshot)):
        if os.path.dirname(path) in snapshot and os.path.lexists(path):
            remove(path)   # the top of what the run added; what lies below goes with it
    for path, (kind, mode, extra) in snapshot.items():
        seen = now.get(path)
        if seen is None or seen[0] != kind or (kind in ("link", "file") and seen[2] != extra):
            raise OSError(errno.EEXIST, f"the run changed {path}, which was there at the start")
        if mode is not None and seen[1] != mode:
            os.chmod(path, mode)


def run_one(request, home, number, channel):
    run_dir = os.path.join(home, f"run-{number}")
    os.mkdir(run_dir, 0o700)
    for name, text in request["files"].items():
        if not FILE_NAME.fullmatch(name):
            raise ValueError(f"not a file name for a run: {name!r}")
        fd = os.open(os.path.join(run_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    args = [run_dir if a == "{run_dir}" else a for a in request["args"]]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        names = {name[:-3] for name in request["files"]}
        child(run_dir, args, int(request["cpu"]), out_w, err_w, names)
    os.close(out_w)
    os.close(err_w)
    send(channel, {"forked": True})   # from here on, the code has run
    try:
        status, (out, err), timed_out, truncated = collect(pid, [out_r, err_r], float(request["timeout"]),
                                                          int(request["limit"]))
    finally:
        os.close(out_r)
        os.close(err_r)
    return {"returncode": None if timed_out else status, "stdout": out.decode("utf-8", "replace"),
            "stderr": err.decode("utf-8", "replace"), "timed_out": timed_out, "truncated": truncated}, pid


def own_state():
    """What a run could change of the worker from outside it (prlimit, setpriority, affinity,
    the scheduler, given its pid): compared after each run, and the worker ends if it changed."""
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")}
    return (limits, os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), os.sched_getscheduler(0),
            os.sched_getparam(0).sched_priority)


def main():
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    snapshot, state = scan("/"), own_state()
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)           # a stray print never reaches the channel
    os.set_inheritable(channel.fileno(), False)
    home = os.getcwd()
    warm_up()
    send(channel, {"ready": True})
    number = 0
    for line in sys.stdin:
        number += 1
        request = json.loads(line)
        reply, pid = run_one(request, home, number, channel)
        send(channel, reply)
        if not kill_everything_else(pid):
            sys.stderr.write("worker: a process of the run could not be killed\n")
            return 3
        restore(snapshot)
        if own_state() != state:
            sys.stderr.write("worker: the run changed the worker's limits or scheduling\n")
            return 3
        send(channel, {"ready": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
