"""Confine this process, then exec the sandbox. Runs as ``python -I -S _launcher.py CONFIG -- ARGS``.

Standard library only: the parent builds the seccomp program (with pyseccomp), the mount plan
and the Landlock path lists, and passes them as JSON. Any failure to confine is fatal: exit
126, never run unconfined. The order, each step only when the config asks for it:

1. join the run's cgroups (memory, pids, cpu), while still allowed to write them;
2. (root) a private mount namespace: directories the sandbox uid cannot enter are covered by
   a small tmpfs with only what it needs bound back (the interpreter under /root, say), and
   the run directory becomes a size- and inode-limited tmpfs holding copies of its files,
   so nothing the code writes ever reaches the host disk;
3. (root, no bwrap) a pid namespace: this process waits while its child, pid 1 there, runs
   the code with a fresh /proc; when pid 1 dies, the kernel kills everything it started;
4. rlimits; then (root) drop to the unprivileged sandbox uid/gid, no supplementary groups,
   no capabilities, no_new_privs;
5. either exec bubblewrap (its arguments from a pipe, so /proc shows no argv; the seccomp
   program from another), or apply Landlock and seccomp here and exec the interpreter.
"""

import ctypes
import json
import os
import resource
import signal
import stat
import sys

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_SET_SECCOMP = 1, 38, 47, 22
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
LIBC = ctypes.CDLL(None, use_errno=True)
STATUS = [-1]   # the parent's status pipe: written only when the launcher fails, closed by exec


def give_up(message):
    """Exit 126, saying why on stderr and on the status pipe. The pipe is closed on exec, so no
    code the sandbox runs can write it: what comes through it is the launcher's own failure."""
    sys.stderr.write(f"{message}\n")
    if STATUS[0] >= 0:
        try:
            os.write(STATUS[0], message.encode()[:4000])
        except OSError:
            pass
    os._exit(126)


def fail(what):
    err = ctypes.get_errno()
    give_up(f"sandbox launcher: {what} failed ({os.strerror(err) if err else 'error'})")


def check(result, what):
    if result != 0:
        fail(what)


def mount(source, target, fstype, flags, data=None):
    enc = (lambda s: None if s is None else s.encode())  # noqa: E731 - tiny local helper
    check(LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          f"mount {target}")


def join_cgroups(paths):
    for procs in paths:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


# -- 2. private mounts (root only) ------------------------------------------------------------

def searchable(st, uid, gid):
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & 0o100)
    if st.st_gid == gid:
        return bool(mode & 0o010)
    return bool(mode & 0o001)


def blocked_ancestor(path, uid, gid):
    """The first directory above ``path`` that the sandbox uid may not enter, or None."""
    parts = path.strip("/").split("/")
    for i in range(len(parts)):
        prefix = "/" + "/".join(parts[:i])
        if not searchable(os.stat(prefix), uid, gid):
            return prefix
    return None


def expose(needs, hide, uid, gid):
    """Cover each directory the sandbox uid cannot enter (and each in ``hide``) with a tmpfs,
    then bind back what the sandbox needs from under it."""
    tops = {path: [] for path in hide if os.path.isdir(path)}
    for path, writable in needs:
        if not os.path.lexists(path):
            continue
        top = next((h for h in hide if path.startswith(h + "/")), None)
        top = top or blocked_ancestor(path, uid, gid)
        if top is not None:
            tops.setdefault(top, []).append((path, writable))
    masks = {}
    for top in sorted(tops, key=len):   # a blocked directory inside another is covered by it
        outer = next((m for m in masks if top.startswith(m + "/")), top)
        masks.setdefault(outer, []).extend(tops[top])
    for top, inside in masks.items():
        fds = [(os.open(p, os.O_PATH | os.O_CLOEXEC), p, w) for p, w in sorted(set(inside), key=len)]
        options = hide.get(top, "mode=0755,size=1m,nr_inodes=4096")
        mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for fd, path, writable in fds:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            os.makedirs(path if is_dir else os.path.dirname(path), 0o755, exist_ok=True)
            if not is_dir and not os.path.exists(path):
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
            mount(None, path, None, flags)
            os.close(fd)


def scratch(path, size, inodes, uid, gid, limit=8 << 20):
    """Make ``path`` a private tmpfs owned by the sandbox uid, holding copies of its files."""
    files, total = {}, 0
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for entry in os.scandir(dfd):
        if entry.is_file(follow_symlinks=False) and total < limit:
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
            with os.fdopen(fd, "rb") as fh:
                files[entry.name] = fh.read(limit - total)
            total += len(files[entry.name])
    os.close(dfd)
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
          f"mode=0700,uid={uid},gid={gid},size={size},nr_inodes={inodes}")
    for name, data in files.items():
        fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def private_mounts(plan, drop):
    check(LIBC.unshare(CLONE_NEWNS), "unshare(mount namespace)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    uid, gid = drop
    expose([(p, bool(w)) for p, w in plan["needs"]], plan.get("hide", {}), uid, gid)
    if plan.get("scratch"):
        s = plan["scratch"]
        scratch(s["path"], s["size"], s["inodes"], uid, gid)
        os.chdir(s["path"])   # the old cwd is the host directory under the new tmpfs


# -- 3. pid namespace (root, no bwrap) --------------------------------------------------------

def pid_namespace():
    """Return in the child (pid 1 of a new pid namespace, fresh /proc); the parent relays its exit."""
    check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    check(LIBC.unshare(CLONE_NEWPID), "unshare(pid namespace)")
    pid = os.fork()
    if pid == 0:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


# -- 4. limits and identity -------------------------------------------------------------------

def set_rlimits(limits):
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def drop_to(uid, gid):
    """Become the unprivileged sandbox user: no groups, no capabilities, no way back."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
        fail("dropping to the sandbox uid")
    LIBC.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")  # a uid change clears it


# -- 5. bubblewrap, or Landlock + seccomp here ------------------------------------------------

def pipe_with(data):
    """A read end holding ``data`` (inheritable), for bwrap's --args / --seccomp."""
    r, w = os.pipe()
    if len(data) > 65536:
        fail("a config for bwrap that fits a pipe")
    os.write(w, data)
    os.close(w)
    os.set_inheritable(r, True)
    return r


def exec_bwrap(bwrap, args, seccomp_hex):
    extra = []
    if seccomp_hex:
        extra = ["--seccomp", str(pipe_with(bytes.fromhex(seccomp_hex)))]
    options = bwrap["args"] + extra + ["--chdir", bwrap["chdir"]]
    fd = pipe_with(b"".join(a.encode() + b"\0" for a in options))
    os.execv(bwrap["path"], ["bwrap", "--args", str(fd), "--", *args])  # noqa: S606 - bwrap by its resolved path


class RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def apply_landlock(cfg):
    """Reads only under cfg["read"], writes only under cfg["write"]; optional net and scopes."""
    attr = RulesetAttr(cfg["fs_handled"], cfg["net_handled"], cfg["scoped"])
    size = 8 * cfg["attr_words"]  # ABI < 4 has no net field, < 6 no scoped field
    fd = LIBC.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if fd < 0:
        fail("landlock_create_ruleset")
    for access, paths in ((cfg["read_access"], cfg["read"]), (cfg["write_access"], cfg["write"])):
        for path in paths:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this machine lacks needs no rule
            mask = access if os.path.isdir(path) else access & cfg["file_access"]
            rule = PathBeneath(mask, pfd)
            check(LIBC.syscall(SYS_ADD_RULE, fd, 1, ctypes.byref(rule), 0), f"landlock_add_rule {path}")
            os.close(pfd)
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    check(LIBC.syscall(SYS_RESTRICT_SELF, fd, 0), "landlock_restrict_self")
    os.close(fd)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp(bpf_hex):
    program = bytes.fromhex(bpf_hex)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    check(LIBC.prctl(PR_SET_SECCOMP, 2, ctypes.byref(prog), 0, 0), "seccomp")


def main(argv):
    cfg = json.loads(argv[1])
    args = argv[argv.index("--") + 1:]
    if cfg.get("status_fd") is not None:
        STATUS[0] = cfg["status_fd"]
        os.set_inheritable(STATUS[0], False)   # closed by the exec of bwrap or the interpreter
    try:
        join_cgroups(cfg.get("cgroups", []))
        if cfg.get("mounts"):
            private_mounts(cfg["mounts"], cfg["drop"])
        if cfg.get("pidns"):
            pid_namespace()
        set_rlimits(cfg["rlimits"])
        if cfg.get("drop"):
            drop_to(*cfg["drop"])
        if cfg.get("bwrap"):
            exec_bwrap(cfg["bwrap"], [cfg["python"], *args], cfg.get("seccomp"))
        if cfg.get("landlock"):
            apply_landlock(cfg["landlock"])
        if cfg.get("seccomp"):
            apply_seccomp(cfg["seccomp"])
        os.execv(cfg["python"], [cfg["python"], *args])  # noqa: S606 - the launcher execs the interpreter by path
    except (OSError, ValueError) as err:
        give_up(f"sandbox launcher: {err}")


if __name__ == "__main__":
    main(sys.argv)
