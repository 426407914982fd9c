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
# keyrings and modules, BPF, perf. Each returns EPERM (code sees an error, not a crash).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "quotactl",
    "iopl", "ioperm", "personality", "lookup_dcookie", "vhangup",
)
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                         0x20000000, 0x40000000, 0x00000080)  # NEWNS CGROUP UTS IPC USER PID NET TIME
INET_FAMILIES = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_PACKET", 17),
                 getattr(socket, "AF_NETLINK", 16))


@functools.lru_cache(maxsize=16)
def seccomp_program(*, network: bool, deny_all_sockets: bool, confine_group: bool) -> str:
    """A seccomp-BPF program, hex-encoded, for the launcher to load.

    network: inet sockets allowed (a granted "network" need). deny_all_sockets: also unix
    sockets (the Landlock level has no network namespace to hide the host's). confine_group:
    setsid/setpgid refused, so the process group we kill is the whole tree.
    """
    import pyseccomp as sc

    filt = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(eperm, name)
        except (OSError, RuntimeError, ValueError):
            continue  # syscall unknown to this libseccomp/arch
    for flag in CLONE_NAMESPACE_FLAGS:
        filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # flags hide in a struct: make libc use clone
    if not network:
        if deny_all_sockets:
            filt.add_rule(sc.ERRNO(errno.EACCES), "socket")
        else:
            for family in INET_FAMILIES:
                filt.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.EQ, family))
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
    processes: int = 128             # not enforced for uid 0 outside a user namespace: see cgroup
    tmpfs_size: int = 128 << 20      # /tmp inside bubblewrap

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
