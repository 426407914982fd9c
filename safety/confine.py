"""What the launcher applies: seccomp programs (built with pyseccomp), Landlock rules, rlimits.

Kept apart from sandbox.py so each level's policy reads as data.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Syscalls no generated code needs: debugging other processes, namespaces, mounts, kernel
# keyrings and modules, BPF, perf, extended attributes (file capabilities), device nodes.
# Each returns EPERM (code sees an error, not a crash). Reviewed against what Codex CLI's
# Linux sandbox, Anthropic's sandbox-runtime and Nix's build sandbox deny.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "quotactl",
    "iopl", "ioperm", "personality", "lookup_dcookie", "vhangup", "uselib", "nfsservctl",
    "fanotify_init", "migrate_pages", "move_pages", "mbind", "set_mempolicy",
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat", "removexattr", "lremovexattr",
    "fremovexattr", "removexattrat", "mknod", "mknodat",
    # SysV IPC and POSIX message queues: kernel objects that outlive the processes that made them
    "shmget", "msgget", "semget", "mq_open",
)
# Syscalls that do file, socket or process work on the code's behalf, out of the filter's
# sight (io_uring runs openat/socket/connect from a kernel worker): ENOSYS, as if absent.
HIDDEN_SYSCALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "openat2", "clone3")
# Setuid/setgid bits: refused on chmod and on file creation, whatever the mount allows.
SETID = 0o6000
MODE_ARG = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2, "creat": 1, "open": 2,
            "openat": 3, "mkdir": 1, "mkdirat": 2}
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                         0x20000000, 0x40000000, 0x00000080)  # NEWNS CGROUP UTS IPC USER PID NET TIME
IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Syscalls that set another process's limits or scheduling, by the argument holding its pid (0:
# the caller itself, which stays allowed): a run could otherwise change the warm worker's.
OTHER_PROCESS_ARG = {"prlimit64": 0, "setpriority": 1, "sched_setaffinity": 0, "sched_setscheduler": 0,
                     "sched_setparam": 0, "sched_setattr": 0, "ioprio_set": 1}


@functools.lru_cache(maxsize=16)
def seccomp_program(*, network: bool, confine_group: bool) -> str:
    """A seccomp-BPF program, hex-encoded, for the launcher (or bwrap) to load.

    network: a granted "network" need: IPv4/IPv6 sockets only (no unix, netlink, packet...);
    without it no socket() at all. socketpair() stays (asyncio's self-pipe needs it; the pair
    reaches nothing). confine_group: setsid/setpgid refused, so the process group we kill is
    the whole tree.
    """
    import pyseccomp as sc

    filt = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for action, names in ((eperm, DENIED_SYSCALLS), (sc.ERRNO(errno.ENOSYS), HIDDEN_SYSCALLS)):
        for name in names:
            try:
                filt.add_rule(action, name)
            except (OSError, RuntimeError, ValueError):
                continue  # syscall unknown to this libseccomp/arch
    for name, arg in MODE_ARG.items():
        for bit in (0o4000, 0o2000):
            try:
                filt.add_rule(eperm, name, sc.Arg(arg, sc.MASKED_EQ, bit, bit))
            except (OSError, RuntimeError, ValueError):
                continue
    for name, arg in OTHER_PROCESS_ARG.items():   # limits and scheduling of another process
        try:
            filt.add_rule(eperm, name, sc.Arg(arg, sc.NE, 0))
        except (OSError, RuntimeError, ValueError):
            continue
    for flag in CLONE_NAMESPACE_FLAGS:
        filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    if network:
        for family in range(0, 64):   # everything but IPv4/IPv6 is refused
            if family not in IP_FAMILIES:
                filt.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.EQ, family))
    else:
        filt.add_rule(sc.ERRNO(errno.EACCES), "socket")
    if confine_group:
        filt.add_rule(eperm, "setsid")
        filt.add_rule(eperm, "setpgid")
    with tempfile.TemporaryFile() as fh:
        filt.export_bpf(fh)
        fh.seek(0)
        return fh.read().hex()


# Landlock access bits (uapi/linux/landlock.h).
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_TRUNCATE, FS_IOCTL_DEV = 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1, 2


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0 when unavailable), via PyPI `landlock`."""
    try:
        import landlock
        return int(landlock.landlock_abi_version())
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return 0


def landlock_config(abi: int, read: list[str], write: list[str], network: bool) -> dict:
    """Rules for the launcher: read+exec under ``read``, everything under ``write``."""
    fs_all = (1 << 13) - 1                                     # ABI 1: bits 0..12
    fs_all |= (1 << 13) if abi >= 2 else 0                     # REFER
    fs_all |= FS_TRUNCATE if abi >= 3 else 0
    fs_all |= FS_IOCTL_DEV if abi >= 5 else 0
    file_access = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (FS_TRUNCATE if abi >= 3 else 0) | (
        FS_IOCTL_DEV if abi >= 5 else 0)
    net = 0 if network or abi < 4 else NET_BIND_TCP | NET_CONNECT_TCP
    scoped = SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0
    return {"fs_handled": fs_all, "net_handled": net, "scoped": scoped,
            "attr_words": 3 if abi >= 6 else 2 if abi >= 4 else 1,
            "read_access": FS_EXECUTE | FS_READ_FILE | FS_READ_DIR, "write_access": fs_all,
            "file_access": file_access, "read": read, "write": write}


@dataclass(frozen=True)
class Limits:
    """rlimits for every run, whatever the level."""

    address_space: int = 2 << 30     # bytes of virtual memory per process
    file_size: int = 64 << 20        # largest file it may write
    open_files: int = 256
    processes: int = 128             # per user; for the whole tree, the run's pids cgroup
    memory: int = 1 << 30            # the whole tree (the run's memory cgroup, where one exists)
    tmpfs_size: int = 64 << 20       # /tmp and /dev/shm (private tmpfs)
    scratch_size: int = 128 << 20    # the run directory, a private tmpfs: all files together
    scratch_inodes: int = 4096       # ... and how many files and directories

    def rlimits(self, timeout: float, extra_processes: int = 0) -> dict[str, int]:
        return {"RLIMIT_AS": self.address_space, "RLIMIT_CPU": math.ceil(timeout) + 1,
                "RLIMIT_FSIZE": self.file_size, "RLIMIT_NOFILE": self.open_files,
                "RLIMIT_NPROC": self.processes + extra_processes, "RLIMIT_CORE": 0}


def user_process_count() -> int:
    """Processes this uid already runs: RLIMIT_NPROC counts them too, outside a namespace."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                continue
    return count


def python_read_paths() -> list[str]:
    """What the interpreter, the venv and the C libraries need to read, and nothing else."""
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    paths |= {os.path.realpath(p) for p in list(paths)}
    paths |= {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache", "/etc/localtime"}
    return sorted(p for p in paths if os.path.exists(p))


NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf",
               "/etc/ssl", "/etc/ca-certificates", "/usr/share/ca-certificates")
LAUNCHER = str(Path(__file__).with_name("_launcher.py"))
