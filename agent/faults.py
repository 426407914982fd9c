"""Fault points: where the crash-consistency tests kill the agent or fill the disk.

Every durable write step of a skill change calls ``step(label)``. With ``AGENT_FAULT`` unset
(always, outside those tests) it does nothing but count. ``AGENT_FAULT="<n>:kill"`` SIGKILLs
this process at the n-th step; ``"<n>:enospc"`` raises ``OSError(ENOSPC)`` there, as a full disk
would; ``AGENT_FAULT_LOG=<file>`` appends each step's label to that file, so a test can list a
change's steps first and then fault each one in turn (not at random times).
"""

from __future__ import annotations

import errno
import os
import signal

_count = 0


def step(label: str) -> None:
    """One durable write step is about to happen."""
    global _count
    _count += 1
    log = os.environ.get("AGENT_FAULT_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{_count} {label}\n")
    fault = os.environ.get("AGENT_FAULT")
    if not fault:
        return
    at, _, kind = fault.partition(":")
    if not at.isdigit() or int(at) != _count:
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), label)


def reset() -> None:
    """Start counting again (a test's process that runs one change after another)."""
    global _count
    _count = 0
