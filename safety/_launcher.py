"""Confine this process, then exec Python. Runs as ``python -I -S _launcher.py CONFIG -- ARGS``.

Standard library only (it runs inside the sandbox, with no site-packages): the parent builds
the seccomp program (with pyseccomp) and the Landlock path lists, and passes them as JSON.
Order: rlimits, drop capabilities (when root outside a user namespace), Landlock, seccomp,
then execv. Any failure to confine is fatal: exit 126, never run unconfined.
"""

import ctypes
import json
import os
import resource
import sys

PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_SET_SECCOMP = 38, 24, 47, 22
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF, SYS_CAPSET = 444, 445, 446, 126
LIBC = ctypes.CDLL(None, use_errno=True)


def fail(what):
    err = ctypes.get_errno()
    sys.stderr.write(f"sandbox launcher: {what} failed ({os.strerror(err) if err else 'error'})\n")
    os._exit(126)


def set_rlimits(limits):
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def drop_capabilities():
    """Empty the bounding, ambient, effective, permitted and inheritable sets."""
    LIBC.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            fail("dropping the capability bounding set")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if LIBC.syscall(SYS_CAPSET, header, data) != 0:
        fail("capset")


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
            if LIBC.syscall(SYS_ADD_RULE, fd, 1, ctypes.byref(rule), 0) != 0:
                fail(f"landlock_add_rule {path}")
            os.close(pfd)
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("no_new_privs")
    if LIBC.syscall(SYS_RESTRICT_SELF, fd, 0) != 0:
        fail("landlock_restrict_self")
    os.close(fd)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp(bpf_hex):
    program = bytes.fromhex(bpf_hex)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("no_new_privs")
    if LIBC.prctl(PR_SET_SECCOMP, 2, ctypes.byref(prog), 0, 0) != 0:
        fail("seccomp")


def main(argv):
    cfg = json.loads(argv[1])
    args = argv[argv.index("--") + 1:]
    try:
        set_rlimits(cfg["rlimits"])
    except (OSError, ValueError) as err:
        sys.stderr.write(f"sandbox launcher: rlimits failed ({err})\n")
        os._exit(126)
    if cfg.get("drop_caps") and os.geteuid() == 0:
        drop_capabilities()
    if cfg.get("landlock"):
        apply_landlock(cfg["landlock"])
    if cfg.get("seccomp"):
        apply_seccomp(cfg["seccomp"])
    os.execv(cfg["python"], [cfg["python"], *args])  # noqa: S606 - the launcher execs the interpreter by path


if __name__ == "__main__":
    main(sys.argv)
