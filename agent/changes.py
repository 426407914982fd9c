"""Crash-consistent skill changes: a change happens whole or not at all.

The rule, in three lines:

1. Kept files (``versions/<name>/``) never change once written; each is written, durably, before
   any record names it (amended tests are a new file).
2. memory.json is the commit point: one atomic update switches a skill's current version (its
   record names its files and their SHA-256), or removes the skill.
3. ``skills/<name>.py`` and its tests are copies of the current version's kept files, written
   after the switch.

While a change runs, ``history/changes/<name>.json`` says so. Whatever stops it (SIGKILL, a
full disk, Ctrl+C), ``reconcile`` makes the files agree with memory: a kept file no record
names goes, ``skills/`` is copied again from the current version's kept files, and a skill
memory no longer lists loses its files. The change's own failure reconciles at once; a killed
change is reconciled by the next start, under the workspace's exclusive lock (no other agent
lives then), in one line. Files are verified by their hashes before they are run, shown as
current or rolled back to (``damage``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent import faults
from agent.errors import AgentError, UnsafePath
from agent.library import SkillLibrary, digest
from agent.memory import Memory, now
from agent.memory.files import fsync_dir, try_lock, unlock
from safety.paths import SKILL_NAME

JOURNAL = Path("history") / "changes"


def _journal(memory: Memory, name: str) -> Path:
    return memory.workspace / JOURNAL / f"{name}.json"


@contextlib.contextmanager
def change(memory: Memory, library: SkillLibrary, name: str, op: str) -> Iterator[None]:
    """One skill change (``op``: save, rollback, forget, examples, version): journaled while it
    runs, and one at a time per skill across agents (the journal file is flock-ed for the change's
    life: a second agent waits, then reads memory afresh); if it fails, the files are made to agree
    with memory before the error goes on. Not reentrant for the same skill."""
    path = _journal(memory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.is_symlink() or path.parent.parent.is_symlink():
        raise UnsafePath(f"{path.parent} is a link: the agent never follows links for its own files")
    faults.step(f"{op} {name}: journal")
    fd = try_lock(path, wait=True)
    assert fd is not None
    try:
        if os.fstat(fd).st_size:  # the change before ours was killed while it held this: finish it first
            reconcile(memory, library, name)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"op": op, "skill": name, "started": now()}).encode(), 0)
        os.fsync(fd)
        fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield
        faults.step(f"{op} {name}: done")
    except BaseException:
        try:
            reconcile(memory, library, name)
        except Exception:  # noqa: BLE001 - the disk may still be full: then the next start does it
            os.close(fd)
        else:
            unlock(fd, path)
        raise
    unlock(fd, path)


def current(skill: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record of the version now in ``skills/``, or None (no versions kept yet)."""
    if not skill or not skill.get("versions"):
        return None
    return next((v for v in skill["versions"] if v["version"] == skill.get("version")), skill["versions"][-1])


def hashes(code: str, tests: str) -> dict[str, str]:
    return {"code": digest(code), "tests": digest(tests)}


def _problem(record: dict[str, Any], found: tuple[str | None, str | None]) -> str | None:
    """Why a kept version's files, given as their digests (None: gone), are not what its record
    keeps; None when they are (or the record predates hashes)."""
    sha = record.get("sha256") or {}
    for path, got, key in ((record["path"], found[0], "code"), (record["test_path"], found[1], "tests")):
        if got is None:
            return f"v{record['version']}'s kept file {path} is missing"
        if sha.get(key) and got != sha[key]:
            return f"v{record['version']}'s kept file {path} is damaged (it does not match its recorded hash)"
    return None


def kept_files(library: SkillLibrary, name: str, record: dict[str, Any]) -> tuple[str, str] | str:
    """A kept version's module and tests, verified against the hashes its record keeps; or one
    line saying why they cannot be used (gone, or not what was kept)."""
    code, tests = library.kept(name, record["path"]), library.kept(name, record["test_path"])
    problem = _problem(record, (None if code is None else digest(code), None if tests is None else digest(tests)))
    return problem or (code, tests)  # type: ignore[return-value]


def damage(library: SkillLibrary, name: str, skill: dict[str, Any] | None) -> str | None:
    """Why the skill's files cannot be trusted now (one line with the repair), or None. A skill
    from before versions were kept has nothing to check against. Reads digests, cached by file
    identity, so that checking every skill stays quick."""
    record = current(skill)
    if record is None:
        return None
    number = record["version"]
    kept = library.kept_digest(name, record["path"]), library.kept_digest(name, record["test_path"])
    problem = _problem(record, kept)
    if problem:
        others = [v["version"] for v in skill["versions"] if v is not record]  # type: ignore[index]
        repair = f":rollback {name} {others[-1]} or :forget {name}" if others else f":forget {name}"
        return f"{problem}; repair with {repair}"
    for live, want in ((library.module_path(name), kept[0]), (library.test_path(name), kept[1])):
        if library.digest_of(live) != want:
            return (f"{live} is not v{number}'s kept file (damaged or changed by hand); "
                    f"repair with :rollback {name} {number} (or :forget {name})")
    return None


def reconcile(memory: Memory, library: SkillLibrary, name: str) -> list[str]:
    """Make ``name``'s files agree with memory; returns what was repaired (empty: nothing)."""
    skill = memory.get_skill(name)
    if skill is None:
        return ["its files are removed (memory no longer lists it)"] if library.remove(name) else []
    done = []
    records = skill.get("versions") or []
    named = {r["path"] for r in records} | {r["test_path"] for r in records}
    stray = [path for path in library.kept_names(name) if path not in named]
    for path in stray:
        library.unlink(path)
    if stray:
        done.append(f"removed {len(stray)} kept file{'s' if len(stray) > 1 else ''} no version names")
    record = current(skill)
    if record is None:
        return done
    files = kept_files(library, name, record)
    if isinstance(files, str):
        return [*done, files]
    if (library.source(name), library.tests(name)) != files:
        library.save(name, *files)
        done.append(f"skills/ holds v{record['version']}'s files again")
    return done


def record_hashes(memory: Memory, library: SkillLibrary) -> str | None:
    """Versions kept before hashes were recorded get them, from their files as they are now
    (trusted on first use); one line, or None when every record has its hashes."""
    todo: dict[tuple[str, int], dict[str, str]] = {}
    for skill in memory.read()["skills"]:
        for record in skill.get("versions") or []:
            if "sha256" not in record:
                files = kept_files(library, skill["name"], record)
                if not isinstance(files, str):
                    todo[(skill["name"], record["version"])] = hashes(*files)
    if not todo:
        return None

    def apply(doc: dict[str, Any]) -> None:
        for skill in doc["skills"]:
            for record in skill.get("versions") or []:
                sha = todo.get((skill["name"], record["version"]))
                if sha and "sha256" not in record:
                    record["sha256"] = sha
    memory.update(apply)
    return f"recorded the content hashes of {len(todo)} kept version{'s' if len(todo) > 1 else ''}"


def recover(memory: Memory, library: SkillLibrary) -> list[str]:
    """At a start with no other agent alive: finish or undo every change a kill cut off, one line
    each; then record missing hashes."""
    notes = []
    folder = memory.workspace / JOURNAL
    entries = [] if folder.is_symlink() or not folder.is_dir() else sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        name = entry.name.removesuffix(".json")
        if not entry.name.endswith(".json") or not SKILL_NAME.fullmatch(name) or not entry.is_file(
                follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
            continue
        try:
            op = json.loads(Path(entry.path).read_text(encoding="utf-8")).get("op", "a change")
        except (OSError, ValueError, AttributeError):
            op = "a change"
        try:
            repaired = reconcile(memory, library, name)
        except (AgentError, OSError) as err:  # a full disk, a path that is not ours: try again next start
            notes.append(f"{op} of {name} was cut off and could not be repaired now ({err}); the next start "
                         "tries again")
            continue
        skill = memory.get_skill(name)
        state = (f"{name} is v{skill.get('version', 1)} ({skill['status']})" if skill else f"{name} is forgotten")
        what = "; ".join(repaired) if repaired else "nothing was left half-done"
        notes.append(f"{op} of {name} was cut off: {what}; {state}")
        os.unlink(entry.path)
    hashed = record_hashes(memory, library)
    return [*notes, *([hashed] if hashed else [])]
