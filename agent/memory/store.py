"""``Memory``: memory.json, read and updated safely by any number of agents on one workspace.

- Every write happens under a file lock, validated against the schema, atomically (temp file,
  fsync, rename, fsync the dir); the previous file stays as ``memory.json.bak`` (a hard link, no
  copy). A file that is not valid JSON or does not match the schema raises
  :class:`MemoryCorrupted` and is never overwritten; a missing file with a backup is restored.
- It stays fast at 10,000 skills. A process keeps the document it last read or wrote with the
  file's bytes and identity (inode, size, mtime). A read trusts it while the identity holds; an
  update (under the lock) only while the bytes are the same, since a coarse clock can give a
  rewritten file an old identity. An update validates and re-serializes only the items it
  changed (one item per line in the file). A start skips validating bytes this agent validated
  or wrote (their size and hash are recorded in history.sqlite with the schema's digest).
- The failure log beyond the recent window, and the audit trail, live in history/history.sqlite
  (``History``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout
from jsonschema import ValidationError

from agent import faults
from agent.errors import AgentError, DiskFull, MemoryCorrupted
from agent.memory.files import atomic_write, fsync_dir, link_backup, temp_debris, try_lock, unlock
from agent.memory.history import History
from agent.memory.migrations import migrate
from agent.memory.schema import (
    CURRENT_VERSION,
    ERROR_MAX,
    SECTIONS,
    SKILL_STATUSES,
    SNIPPET_MAX,
    TRUNCATED,
    check,
    check_changed,
    empty,
    new_skill,
    now,
    one_line,
    schema_digest,
    truncate,
)
from agent.memory.similar import UNFIXABLE, fix_diff, similar

T = TypeVar("T")
Stamp = tuple[int, int, int]  # (inode, size, mtime_ns): a rename always makes a new inode
RESUMABLE = ("pending", "interrupted")


class MemoryLocked(AgentError, TimeoutError):
    """Another process held memory.json's lock for longer than the lock timeout."""


Index = dict[tuple[str, int], tuple[Any, Any, str]]  # (section, id(item)) -> (item, pristine copy, line)


class _Cached:
    """The document as last read or written, the file identity and bytes it came from, and
    (once an update needs it) each item's pristine copy and serialized line, by section and
    the item's identity (an item moved to another section counts as new there)."""

    def __init__(self, doc: dict[str, Any], stamp: Stamp, raw: bytes) -> None:
        self.doc, self.stamp, self.raw = doc, stamp, raw
        self.items: Index | None = None

    def index(self) -> Index:
        """The items' pristine copies and lines; built on first use (one more parse)."""
        if self.items is None:
            pristine = json.loads(self.raw)
            self.items = {(section, id(item)): (item, copy, _dumps(copy)) for section in SECTIONS
                          for item, copy in zip(self.doc[section], pristine[section], strict=True)}
        return self.items


def _dumps(item: Any) -> str:
    return json.dumps(item, ensure_ascii=False)


def _serialize(doc: dict[str, Any], lines: dict[str, list[str]]) -> bytes:
    """The document with one item per line: readable, and cheap to rebuild from cached lines."""
    parts = []
    for key, value in doc.items():
        if key in lines:
            body = ",\n    ".join(lines[key])
            parts.append(f'  "{key}": [\n    {body}\n  ]' if body else f'  "{key}": []')
        else:
            parts.append(f"  {_dumps(key)}: {_dumps(value)}")
    return ("{\n" + ",\n".join(parts) + "\n}\n").encode("utf-8")


def _copy(value: T) -> T:
    """A deep copy of plain JSON data, for callers (memory's own document is not theirs to change)."""
    return json.loads(_dumps(value))


def _stamp(stat: os.stat_result) -> Stamp:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class Memory:
    """The workspace's memory.json (and its history.sqlite).

    ``read()`` returns the live document: treat it as read-only (change it only through
    ``update``), which is what lets a read cost nothing while the file is unchanged.
    """

    def __init__(self, workspace: Path | str, *, keep_failures: int = 200,
                 lock_timeout: float = 30.0) -> None:
        if keep_failures < 1:
            raise ValueError("keep_failures must be at least 1")
        self.workspace = Path(workspace)
        self.path = self.workspace / "memory.json"
        self.backup_path = self.workspace / "memory.json.bak"
        self.lock_path = self.workspace / "memory.json.lock"
        self.legacy_log_path = self.workspace / "history" / "failures.jsonl"  # before v4
        self.running_dir = self.workspace / "history" / "running"
        self.history = History(self.workspace / "history" / "history.sqlite")
        self.keep_failures = keep_failures
        self.lock_timeout = lock_timeout
        self._lock = FileLock(self.lock_path)
        self._in_update = False
        self._log_pending: list[dict[str, Any]] = []  # failures to log once the update is valid
        self._fixes_pending: dict[int, str] = {}  # seq -> fix, for history.sqlite once the update is valid
        self._cache: _Cached | None = None
        self._running: dict[str, int] = {}  # directive id -> fd of its liveness lock

    # -- loading ---------------------------------------------------------------------------------

    def _corrupted(self, reason: str) -> MemoryCorrupted:
        backup = (f"restore the backup ({self.backup_path})" if self.backup_path.exists()
                  else f"there is no backup ({self.backup_path} does not exist), so")
        return MemoryCorrupted(
            f"{self.path} is corrupted: {reason}; nothing was changed. To recover, {backup} "
            f"move the file away (mv {self.path} {self.path}.broken) to start an empty memory.")

    @staticmethod
    def _validated_mark(raw: bytes) -> str:
        """What history.sqlite records of a file validated (or written) by this agent: its size
        and content hash, under this schema (6 ms for 6 MB)."""
        return f"{schema_digest()}:{len(raw)}:{hashlib.blake2b(raw, digest_size=16).hexdigest()}"

    def _known(self, mark: str) -> bool:
        """Whether history.sqlite says these bytes were validated (no: when it cannot be opened
        for a full disk; validating again is only slower)."""
        try:
            return self.history.get_meta(str(self.path)) == mark
        except DiskFull:
            return False

    def _parse(self, raw: bytes, path: Path | None = None) -> tuple[dict[str, Any], int]:
        """Parse, migrate and validate file bytes; bytes this agent validated or wrote are not
        validated again (``path`` None: a file that is not memory.json, always validated)."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._corrupted(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise self._corrupted(f"the top level is a {type(doc).__name__}, not an object")
        mark = self._validated_mark(raw) if path is None else None
        if mark is not None and doc.get("version") == CURRENT_VERSION and self._known(mark):
            return doc, CURRENT_VERSION
        try:
            doc, version = migrate(doc)
            check(doc)
        except ValidationError as exc:
            raise self._corrupted(f"does not match its schema ({one_line(exc)})") from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self._corrupted(f"cannot be migrated ({exc})".replace("\n", " ")) from None
        if mark is not None and version == CURRENT_VERSION:
            with contextlib.suppress(DiskFull):  # only a cache: a full disk must not stop a read
                self.history.set_meta(str(self.path), mark)
        return doc, version

    def _current(self, *, exact: bool = False) -> tuple[dict[str, Any], int, _Cached | None]:
        """The document now on disk: (doc, the version it had, its cache entry or None). The
        cache is trusted while the file's identity (inode, size, mtime) is unchanged, or with
        ``exact`` (an update, under the lock) only while its bytes are: a coarse clock can give
        a rewritten file the identity of an older one."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not hang us
        except FileNotFoundError:
            self._cache = None
            return empty(), CURRENT_VERSION, None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise MemoryCorrupted(f"{self.path} is not a regular file; nothing was changed. Move it away "
                                  f"(mv {self.path} {self.path}.broken) to start an empty memory")
        with os.fdopen(fd, "rb") as handle:
            stamp = _stamp(info)
            cached = self._cache
            if cached is not None and cached.stamp == stamp and not exact:
                return cached.doc, CURRENT_VERSION, cached
            raw = handle.read()
        if cached is not None and raw == cached.raw:
            cached.stamp = stamp
            return cached.doc, CURRENT_VERSION, cached
        doc, version = self._parse(raw)
        self._cache = _Cached(doc, stamp, raw) if version == CURRENT_VERSION else None
        return doc, version, self._cache

    def read(self) -> dict[str, Any]:
        """The validated memory (live: do not mutate it); an empty one when there is no file."""
        return self._current()[0]

    # -- writing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.workspace.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise MemoryLocked(f"{self.lock_path} is held by another process (waited "
                               f"{self.lock_timeout:g} s); is another agent running?") from None
        try:
            yield
        finally:
            self._lock.release()

    def update(self, fn: Callable[[dict[str, Any]], T]) -> T:
        """Lock, load, let ``fn`` mutate the doc, validate, write atomically with a backup.

        Returns ``fn``'s result. If ``fn`` raises or leaves an invalid doc, nothing is written
        (an invalid doc raises ``ValueError``). A doc that did not change is not rewritten, so
        the backup keeps the previous real version.
        """
        if self._in_update:
            raise RuntimeError("Memory.update is not reentrant: do all the work in one fn")
        with self._locked():
            self._in_update = True
            try:
                self._restore_if_missing()
                doc, version, cached = self._current(exact=True)
                index = cached.index() if cached is not None else {}
                if version < CURRENT_VERSION:  # migrated: its failures are new to the log
                    self._log_pending = list(doc["failures"])
                result = fn(doc)
                doc["failures"] = doc["failures"][-self.keep_failures:]
                data, lines = self._validated_bytes(doc, index)
                if self._fixes_pending:  # the log first, as for new failures
                    self.history.set_fixes(self._fixes_pending.items())
                if cached is None or data != cached.raw:
                    self._save(cached, data, version, doc, lines)
                return result
            except BaseException:
                self._cache = None  # fn may have changed the live doc: read the file again
                raise
            finally:
                self._in_update = False
                self._log_pending = []
                self._fixes_pending = {}

    def _validated_bytes(self, doc: dict[str, Any], index: Index) -> tuple[bytes, Index]:
        """Check the items that changed (all of them without an index) and serialize the doc.

        An item is unchanged when it is the same object, in the same section, equal to its
        pristine copy. (Python equality takes True for 1: such a change goes unseen and the
        file keeps the old, valid value.)"""
        changed: dict[str, list[tuple[int, Any]]] = {}
        lines: dict[str, list[str]] = {}
        fresh: Index = {}
        try:
            for section in SECTIONS:
                out = lines[section] = []
                for position, item in enumerate(doc.get(section) or []):
                    key = (section, id(item))
                    known = index.get(key)
                    if known is not None and known[0] is item and known[1] == item:
                        fresh[key] = known
                        out.append(known[2])
                        continue
                    changed.setdefault(section, []).append((position, item))
                    line = _dumps(item)
                    fresh[key] = (item, json.loads(line), line)
                    out.append(line)
            check_changed(doc, changed)
        except ValidationError as exc:
            raise ValueError(f"memory update rejected, {self.path} unchanged: {one_line(exc)}") from exc
        except (TypeError, AttributeError, KeyError) as exc:  # not JSON, a section that is not a list
            raise ValueError(f"memory update rejected, {self.path} unchanged: {exc}") from exc
        return _serialize(doc, lines), fresh

    def _save(self, cached: _Cached | None, data: bytes, version: int, doc: dict[str, Any],
              items: Index) -> None:
        """Log pending failures, back up the old file, replace it. Caller holds the lock."""
        faults.step("write memory.json")
        if self._log_pending:
            self.history.add_failures(self._log_pending)
        if self.path.exists():
            if version < CURRENT_VERSION:  # keep the pre-migration file for good
                keep = self.path.with_name(f"memory.json.v{version}")
                if not keep.exists():
                    atomic_write(keep, self.path.read_bytes())
            link_backup(self.path, self.backup_path)
        atomic_write(self.path, data)
        fsync_dir(self.workspace)
        self._cache = _Cached(doc, _stamp(os.stat(self.path)), data)
        self._cache.items = items
        self.history.set_meta(str(self.path), self._validated_mark(data))

    # -- recovery --------------------------------------------------------------------------------

    def _restore_if_missing(self) -> str | None:
        """memory.json gone but its backup here: restore the backup (validated), never start
        empty over it. Returns a one-line notice. Caller holds the lock."""
        if self.path.exists() or not self.backup_path.exists():
            return None
        raw = self.backup_path.read_bytes()
        try:
            doc, _ = self._parse(raw, self.backup_path)
        except MemoryCorrupted as err:
            raise MemoryCorrupted(f"{self.path} is missing and its backup cannot be used: "
                                  f"{str(err).split(': ', 1)[-1].split('; nothing')[0]}; move "
                                  f"{self.backup_path} away to start an empty memory") from None
        atomic_write(self.path, raw)
        fsync_dir(self.workspace)
        return (f"memory.json was missing: restored it from memory.json.bak "
                f"({len(doc['skills'])} skills, {len(doc['directives'])} directives)")

    def recover(self) -> list[str]:
        """What a start does: remove temp files of killed writes, restore a missing memory.json
        from its backup, move a pre-v4 failure log into history.sqlite, and mark directives
        whose process died (``running`` with nobody holding their lock) ``interrupted`` /
        ``cut_off`` (``resumable_directives`` offers them). Returns one-line notices of what it
        repaired."""
        notices = []
        with self._locked():  # memory's temp files are written only under this lock: all are debris
            for debris in temp_debris(self.workspace):
                if debris.name.startswith(f".{self.path.name}."):
                    debris.unlink(missing_ok=True)
            restored = self._restore_if_missing()
            if restored:
                notices.append(restored)
            imported = self._import_legacy_log()
            if imported:
                notices.append(imported)
        doc, version, _ = self._current()
        if version < CURRENT_VERSION or any(d["status"] == "running" for d in doc["directives"]):
            self.update(self._mark_cut_off)  # also writes a migrated file: its ids must not change
        return notices

    def _import_legacy_log(self) -> str | None:
        """history/failures.jsonl (before v4) -> history.sqlite; the file is kept, renamed."""
        if not self.legacy_log_path.is_file():
            return None
        records = []
        with open(self.legacy_log_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    seq = record["seq"]
                    if not isinstance(seq, int) or isinstance(seq, bool):
                        continue
                    records.append({"seq": seq, "iteration": record.get("iteration") or 0,
                                    "directive_id": record.get("directive_id")}
                                   | {f: str(record.get(f) or "") for f in ("skill", "category", "error",
                                                                           "code_snippet", "timestamp")})
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue  # a line torn by a crash, or not a failure record
        self.history.add_failures(records)
        os.replace(self.legacy_log_path, self.legacy_log_path.with_name("failures.jsonl.imported"))
        return f"moved {len(records)} logged failures from history/failures.jsonl into history/history.sqlite"

    def _mark_cut_off(self, doc: dict[str, Any]) -> int:
        count = 0
        for item in doc["directives"]:
            if item["status"] == "running" and not self.directive_alive(item["id"]):
                item.update(status="interrupted", reason="cut_off", updated_at=now())
                count += 1
        return count

    # -- directives ------------------------------------------------------------------------------

    def add_directive(self, goal: str, max_iterations: int, skill: str | None = None) -> str:
        """Record a directive as ``pending`` before any work starts; return its id. ``skill`` is
        the name the user asked for, if any (a resumed directive plans under it again)."""
        directive_id = uuid.uuid4().hex[:12]
        stamp = now()
        self.update(lambda doc: doc["directives"].append({
            "id": directive_id, "goal": goal, "status": "pending", "created_at": stamp,
            "updated_at": stamp, "skill": skill, "iterations": 0, "reason": None,
            "max_iterations": max_iterations}))
        return directive_id

    def _set_directive(self, directive_id: str, **fields: Any) -> None:
        def apply(doc: dict[str, Any]) -> None:
            for item in doc["directives"]:
                if item["id"] == directive_id:
                    item.update(fields, updated_at=now())
                    return
            raise KeyError(f"no directive {directive_id!r} in {self.path}")
        self.update(apply)

    def _lock_path(self, directive_id: str) -> Path:
        return self.running_dir / f"{directive_id}.lock"

    def start_directive(self, directive_id: str) -> None:
        """Mark a directive ``running``, holding a lock that dies with this process. Only a
        directive that has not ended can start (pending, interrupted, or ``running`` with its
        process gone: we hold its lock now); anything else is a one-line ``AgentError``."""
        if directive_id not in self._running:
            fd = try_lock(self._lock_path(directive_id))
            if fd is None:
                raise AgentError(f"directive {directive_id} is running in another agent")
            self._running[directive_id] = fd

        def start(doc: dict[str, Any]) -> None:
            item = next((d for d in doc["directives"] if d["id"] == directive_id), None)
            if item is None:
                raise AgentError(f"no directive {directive_id} in {self.path}")
            if item["status"] not in (*RESUMABLE, "running"):
                raise AgentError(f"directive {directive_id} already ended ({item['status']}): nothing to resume")
            item.update(status="running", reason=None, updated_at=now())
        try:
            self.update(start)
        except BaseException:
            unlock(self._running.pop(directive_id), self._lock_path(directive_id))
            raise

    def finish_directive(self, directive_id: str, *, status: str, reason: str | None,
                         skill: str | None, iterations: int, error: str | None = None) -> None:
        """Record how a directive ended (``pending`` again is allowed: model unavailable)."""
        extra = {"error": truncate(" ".join(error.split()), ERROR_MAX)} if error else {}
        try:
            self._set_directive(directive_id, status=status, reason=reason, skill=skill,
                                iterations=iterations, **extra)
        finally:  # released after the record: a reader never sees it running with nobody behind it
            fd = self._running.pop(directive_id, None)
            if fd is not None:
                unlock(fd, self._lock_path(directive_id))

    def directive_alive(self, directive_id: str) -> bool:
        """Whether some process (this one included) is running the directive now."""
        if directive_id in self._running:
            return True
        fd = try_lock(self._lock_path(directive_id))
        if fd is None:
            return True
        unlock(fd, self._lock_path(directive_id))
        return False

    def directive(self, directive_id: str) -> dict[str, Any] | None:
        """One directive's record (a copy), or None."""
        return _copy(next((d for d in self.read()["directives"] if d["id"] == directive_id), None))

    def pending_directives(self) -> list[dict[str, Any]]:
        """Directives recorded but not started (or sent back to pending), oldest first."""
        return _copy([d for d in self.read()["directives"] if d["status"] == "pending"])

    def resumable_directives(self) -> list[dict[str, Any]]:
        """Directives that can be continued: pending, interrupted, or cut off (oldest first); a
        ``running`` one whose process is gone counts as cut off."""
        return _copy([dict(d, reason="cut_off") if d["status"] == "running" else d
                      for d in self.read()["directives"]
                      if d["status"] in RESUMABLE or (d["status"] == "running" and not self.directive_alive(d["id"]))])

    # -- skills and grants -----------------------------------------------------------------------

    def upsert_skill(self, name: str, **fields: Any) -> None:
        """Insert or update a skill; sets ``created_at`` on insert and ``updated_at`` always.
        The values are copied: changing them afterwards does not change memory."""
        fields = json.loads(_dumps(fields))

        def apply(doc: dict[str, Any]) -> None:
            stamp = now()
            for skill in doc["skills"]:
                if skill["name"] == name:
                    skill.update(fields, updated_at=stamp)
                    return
            doc["skills"].append({**new_skill(name, stamp), **fields, "updated_at": stamp})
        self.update(apply)

    def add_version(self, name: str, record: dict[str, Any], **fields: Any) -> None:
        """Append a version record to a skill (creating the skill if needed) and make it the
        current one, with the skill's other ``fields``, in one update."""
        record, fields = json.loads(_dumps(record)), json.loads(_dumps(fields))

        def apply(doc: dict[str, Any]) -> None:
            stamp = now()
            entry = next((s for s in doc["skills"] if s["name"] == name), None)
            if entry is None:
                entry = new_skill(name, stamp)
                doc["skills"].append(entry)
            if any(v["version"] == record["version"] for v in entry.get("versions") or []):
                raise ValueError(f"{name} already has a version {record['version']}: nothing was changed")
            entry.setdefault("versions", []).append(record)
            entry.update(fields, version=record["version"], updated_at=stamp)
        self.update(apply)

    def remove_skill(self, name: str) -> bool:
        """Forget a skill's entry (its grants and versions with it); ``True`` if there was one."""
        def apply(doc: dict[str, Any]) -> bool:
            kept = [s for s in doc["skills"] if s["name"] != name]
            removed = len(kept) != len(doc["skills"])
            doc["skills"][:] = kept
            return removed
        return self.update(apply)

    def dependents(self, name: str) -> list[str]:
        """The skills that import ``name``, directly or through others, nearest first."""
        skills = self.read()["skills"]
        found: list[str] = []
        frontier = [name]
        while frontier:
            nxt = [s["name"] for s in skills if set(s.get("dependencies") or ()) & set(frontier)
                   and s["name"] not in found and s["name"] != name]
            found.extend(dict.fromkeys(nxt))
            frontier = nxt
        return found

    def get_skill(self, name: str) -> dict[str, Any] | None:
        """The skill entry (a copy), or ``None``."""
        return _copy(next((s for s in self.read()["skills"] if s["name"] == name), None))

    def load_grants(self, skill: str) -> dict[str, str]:
        """The remembered grants of ``skill`` (need -> "always" | "deny")."""
        entry = self.get_skill(skill)
        return dict(entry["approvals"]) if entry else {}

    def save_grant(self, skill: str, need: str, decision: str) -> None:
        """Remember a grant on the skill, creating an ``untested`` skill entry if needed."""
        def apply(doc: dict[str, Any]) -> None:
            entry = next((s for s in doc["skills"] if s["name"] == skill), None)
            if entry is None:
                entry = new_skill(skill, now())
                doc["skills"].append(entry)
            entry["approvals"][need] = decision
            entry["updated_at"] = now()
        self.update(apply)

    def revoke_grant(self, skill: str, need: str) -> bool:
        """Forget one grant; ``True`` if there was one."""
        def apply(doc: dict[str, Any]) -> bool:
            entry = next((s for s in doc["skills"] if s["name"] == skill), None)
            return entry is not None and entry["approvals"].pop(need, None) is not None
        return self.update(apply)

    def all_grants(self) -> dict[str, dict[str, str]]:
        """Every skill's grants, skills without any left out."""
        return {s["name"]: dict(s["approvals"]) for s in self.read()["skills"] if s["approvals"]}

    # -- failures --------------------------------------------------------------------------------

    def record_failure(self, *, skill: str, error: str, category: str, code_snippet: str,
                       iteration: int, directive_id: str | None) -> None:
        """Log a failure: kept in history.sqlite for good and among memory.json's recent ones."""
        def apply(doc: dict[str, Any]) -> None:
            doc["failures_total"] += 1
            record = {"seq": doc["failures_total"], "skill": skill,
                      "error": truncate(error, ERROR_MAX), "category": category,
                      "code_snippet": truncate(code_snippet, SNIPPET_MAX, TRUNCATED),
                      "timestamp": now(), "iteration": iteration, "directive_id": directive_id}
            doc["failures"].append(record)
            self._log_pending.append(record)
        self.update(apply)

    def record_fixes(self, directive_id: str, passing_code: str) -> int:
        """Record on a directive's failures the change that resolved them: on each (among
        memory.json's recent failures and in history.sqlite alike, in one update) a unified diff
        from its code to ``passing_code``. A later pass of the same directive (the user corrected
        a result) replaces them. Failures without code of their own (no code, blocked) get none.
        Returns how many failures have a fix now; nothing is written when none does."""
        logged = {row["seq"]: row for row in self.history.directive_failures(directive_id)}
        if not logged and not any(f["directive_id"] == directive_id for f in self.read()["failures"]):
            return 0

        def apply(doc: dict[str, Any]) -> int:
            recent = [item for item in doc["failures"] if item["directive_id"] == directive_id]
            rows = {**logged, **{item["seq"]: item for item in recent}}
            fixes = {seq: fix for seq, row in rows.items() if row["category"] not in UNFIXABLE
                     and (fix := fix_diff(row["code_snippet"], passing_code))}
            for item in recent:
                if item["seq"] in fixes and item.get("fix") != fixes[item["seq"]]:
                    item["fix"] = fixes[item["seq"]]
            self._fixes_pending = fixes
            return len(fixes)
        return self.update(apply)

    def recent_failures(self, n: int = 10, skill: str | None = None) -> list[dict[str, Any]]:
        """Up to ``n`` of the most recent failures (newest first), optionally for one skill."""
        failures = reversed(self.read()["failures"])
        return _copy([f for f in failures if skill is None or f["skill"] == skill][:n])

    def similar_failures(self, text: str, n: int = 3, *, fixed: bool = False,
                         exclude: str | None = None) -> list[dict[str, Any]]:
        """The recent failures most like ``text`` (BM25), best first; with ``fixed`` only those
        with a ``fix`` (the change that resolved them), one per directive, not directive ``exclude``."""
        return _copy(similar(text, self.read()["failures"], n, fixed=fixed, exclude=exclude))

    def failure_log(self) -> Iterator[dict[str, Any]]:
        """Every failure ever logged, oldest first (from history.sqlite)."""
        return self.history.failures()

    def summary(self) -> dict[str, Any]:
        """Skills by status, failures logged, the 5 latest failures, pending directives."""
        doc = self.read()
        by_status = Counter(s["status"] for s in doc["skills"])
        return _copy({"skills": {status: by_status.get(status, 0) for status in SKILL_STATUSES},
                      "failures": doc["failures_total"],
                      "recent_failures": list(reversed(doc["failures"][-5:])),
                      "pending_directives": [d for d in doc["directives"] if d["status"] == "pending"]})
