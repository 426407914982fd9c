"""Domain errors. Library code raises these; only the CLI/REPL turns them into one-line messages.

Errors the *model* caused (unusable reply, failing code) are not exceptions: they are data fed
back into the loop. These are for conditions the user must fix.
"""

import errno
import os
import sqlite3


class AgentError(Exception):
    """Base class: str(err) is a one-line message that says what to fix."""


class ConfigError(AgentError):
    """Bad flag, environment variable or TOML value."""


class ModelUnavailable(AgentError):
    """The model cannot be reached or loaded (server down, model not pulled, bad GGUF, bad key).

    A directive that hits this stays ``pending``; the REPL stays up.
    """


class MemoryCorrupted(AgentError):
    """memory.json is not valid JSON or does not match its schema. Never silently overwritten."""


class UnsafePath(AgentError):
    """A path the agent was asked to touch resolves outside the workspace."""


class SkillCallError(AgentError):
    """A called skill raised: ``exception`` is its type's name, ``message`` its first line."""

    def __init__(self, call: str, exception: str, message: str) -> None:
        self.call, self.exception, self.message = call, exception, message
        super().__init__(f"{call} raised {exception}" + (f": {message}" if message else ""))


class CallRefused(AgentError):
    """A skill call that did not run: a gate blocked it, or a tier-2 need was not approved
    (``denied`` names those needs), or no sandbox may run it."""

    def __init__(self, message: str, denied: tuple[str, ...] = ()) -> None:
        self.denied = denied
        super().__init__(message)


def start_error(err: AgentError | OSError) -> str:
    """The one line an entry point prints when an agent cannot start on its workspace."""
    if isinstance(err, DiskFull):
        return True
    if isinstance(err, OSError):
        return f"error: cannot use workspace {err.filename}: {err.strerror}"
    return f"error: {err}"


class SkillDamaged(AgentError):
    """A skill's files do not match what its record keeps (damaged, or changed by hand): they are
    never run, shown as current or rolled back to. The message names the repair."""


class DiskFull(AgentError):
    """The disk filled up during a write: nothing was half-written (the change did not happen,
    or a directive was kept to resume). The message says where to free space."""


def no_space(err: BaseException, where: object = None) -> bool:
    """Whether ``err`` is the disk (or a quota) filling up, as an OSError or as SQLite says it. A
    SQLite "disk I/O error" (what WAL mode reports on a full tmpfs) counts when the filesystem of
    ``where`` (a path) has almost no room left."""
    if isinstance(err, DiskFull):
        return True
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(err, sqlite3.Error):
        return False
    return "disk is full" in str(err) or ("disk I/O error" in str(err) and where is not None
                                           and _almost_full(str(where)))


def _almost_full(path: str, room: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < room or (st.f_files > 0 and st.f_favail == 0)


def disk_full(where: object, what: str = "nothing was half-written") -> DiskFull:
    """The one line for a full disk: ``where`` is the folder whose filesystem needs space."""
    return DiskFull(f"no space left on the disk: free space in {where} and try again ({what})")
