"""Path guard: every file the agent itself touches resolves inside the workspace.

`..`, absolute paths and symlinks that lead out are refused. Reads and writes open each
component with O_NOFOLLOW relative to a directory fd, so a symlink planted by sandboxed code
(even between our check and our open) is never followed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path, PurePosixPath

from agent.errors import UnsafePath

SKILL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
DEFAULT_READ_LIMIT = 1_000_000


class InvalidSkillName(ValueError):
    """A skill name that is not a plain lowercase Python identifier of 1-64 characters."""


def validate_skill_name(name: str) -> str:
    if not isinstance(name, str) or not SKILL_NAME.fullmatch(name):
        raise InvalidSkillName(
            f"invalid skill name {name!r}: use lowercase letters, digits and _ "
            "(start with a letter or _, at most 64 characters)")
    return name


def _parts(relative: str | Path) -> list[str]:
    """Split a workspace-relative path; refuse absolute paths, `..`, NUL and empty names."""
    text = os.fspath(relative)
    if "\x00" in text:
        raise UnsafePath(f"path {text!r} contains a NUL byte")
    pure = PurePosixPath(text)
    if pure.is_absolute() or text.startswith("~"):
        raise UnsafePath(f"absolute path {text!r} refused: paths are relative to the workspace")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"path {text!r} climbs out of the workspace with '..'")
    if not parts:
        raise UnsafePath(f"path {text!r} names the workspace itself")
    return parts


def resolve_inside(workspace: Path, relative: str | Path) -> Path:
    """The absolute path of ``relative`` under ``workspace``; raise UnsafePath if it leaves it.

    Symlinks on the way are resolved and must stay inside. The result may not exist yet.
    """
    root = Path(workspace).resolve()
    target = (root / Path(*_parts(relative))).resolve()
    if target != root and root not in target.parents:
        raise UnsafePath(f"path {os.fspath(relative)!r} resolves outside the workspace ({target})")
    return target


def _open_parent(workspace: Path, parts: list[str], create: bool) -> int:
    """An fd of the directory holding ``parts[-1]``, walked with O_NOFOLLOW from the root."""
    fd = os.open(Path(workspace).resolve(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in parts[:-1]:
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                raise UnsafePath(f"cannot enter {name!r} safely: {err.strerror}") from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def safe_read_text(workspace: Path, relative: str | Path, limit: int = DEFAULT_READ_LIMIT) -> str:
    """Read a workspace file without following any symlink; at most ``limit`` bytes."""
    parts = _parts(relative)
    dir_fd = _open_parent(workspace, parts, create=False)
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as err:
            raise UnsafePath(f"cannot open {os.fspath(relative)!r} safely: {err.strerror}") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise UnsafePath(f"{os.fspath(relative)!r} is not a regular file")
        return fh.read(limit).decode("utf-8", errors="replace")


def safe_write_text(workspace: Path, relative: str | Path, text: str, *, durable: bool = False) -> Path:
    """Write a workspace file (creating parents) without following symlinks; atomic rename.
    A write that fails (a full disk) leaves the old file and no temp file. ``durable``: the
    file and the rename reach the disk before this returns (fsync)."""
    parts = _parts(relative)
    dir_fd = _open_parent(workspace, parts, create=True)
    tmp = f".{parts[-1]}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                     dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.rename(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # replaces a link, never follows
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        if durable:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return resolve_inside(workspace, relative)


def safe_rmtree(path: Path) -> str | None:
    """Remove a tree that sandboxed code may have shaped; never raise, never follow a link.

    Iterative and fd-based: subdirectories are renamed up into the top directory rather than
    descended into, so any depth costs a constant number of fds and no recursion; entries are
    looked at with lstat and opened with O_NOFOLLOW. Returns None when the tree is gone, else
    one line saying where what could not be removed was quarantined (renamed into
    ``<parent>/../quarantine/``, permissions stripped).
    """
    path = Path(path)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        _remove(parent, path.name)
        return None
    except OSError as err:
        return _quarantine(path, parent, err)
    finally:
        os.close(parent)


def _remove(parent: int, name: str, budget: int = 1_000_000) -> None:
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    top = _open_dir(parent, name)
    try:
        while budget > 0:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in os.scandir(top)]
            if not entries:
                break
            for entry, is_dir in entries:
                budget -= 1
                if is_dir:
                    _flatten(top, entry)
                else:
                    os.unlink(entry, dir_fd=top)
        else:
            raise OSError(f"more than {budget} entries")
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=parent)


def _flatten(top: int, name: str) -> None:
    """Unlink ``name``'s files, move its subdirectories up into ``top``, then remove it."""
    fd = _open_dir(top, name)
    try:
        for entry in list(os.scandir(fd)):
            if entry.is_dir(follow_symlinks=False):
                os.rename(entry.name, f".up-{secrets.token_hex(8)}", src_dir_fd=fd, dst_dir_fd=top)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=top)


def _open_dir(parent: int, name: str) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=parent)
    except PermissionError:   # a directory the code made unreadable (it is ours: lstat said so)
        os.chmod(name, 0o700, dir_fd=parent)
        return os.open(name, flags, dir_fd=parent)


def _quarantine(path: Path, parent: int, err: OSError) -> str:
    """Move what is left out of the way, unusable; one line for the user."""
    qdir = path.parent.parent / "quarantine"
    target = qdir / f"{path.name}-{secrets.token_hex(4)}"
    try:
        qdir.mkdir(mode=0o700, exist_ok=True)
        os.rename(path.name, target, src_dir_fd=parent)
        os.chmod(target, 0)
    except OSError as again:
        return f"could not remove {path} ({err}) nor quarantine it ({again})"
    return f"could not remove {path} ({err}); quarantined at {target} with no permissions"


def harvest(directory: Path, names: list[str], limit: int = DEFAULT_READ_LIMIT) -> dict[str, str]:
    """Read files a sandboxed run left in ``directory``; symlinks and non-files are skipped."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = safe_read_text(directory, name, limit)
        except (UnsafePath, OSError):
            continue
    return out
