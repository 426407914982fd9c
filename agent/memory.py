"""memory.json: the agent's skills, recent failures and directives.

One JSON document per workspace, validated with ``memory.schema.json`` on every load and save,
written atomically (temp file in the same dir, fsync, rename, fsync the dir) under a file lock,
with the previous file kept as ``memory.json.bak``. A file that is not valid JSON or does not
match the schema raises :class:`MemoryCorrupted` and is never overwritten.

The failure log stays fast at any size: memory.json keeps only the most recent ``keep_failures``
failures, while every failure is appended (under the same lock) to ``history/failures.jsonl``.
The document grows by versioned migration: ``MIGRATIONS[i]`` takes version ``i + 1`` to ``i + 2``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from agent.errors import AgentError, MemoryCorrupted

T = TypeVar("T")
CURRENT_VERSION = 3
SCHEMA_PATH = Path(__file__).with_name("memory.schema.json")
ERROR_MAX = 500  # a failure's error is a short message; the full output belongs in the sandbox log
SNIPPET_MAX = 2000
_TRUNCATED = "\n# ... truncated"
DEFAULT_MAX_ITERATIONS = 12  # only for directives migrated from v1, which did not record a cap
_CATEGORY_NEEDLES = [("SyntaxError", "syntax_error"), ("IndentationError", "syntax_error"),
                     ("ImportError", "import_error"), ("ModuleNotFoundError", "import_error"),
                     ("assert", "failed_assertion"), ("Assert", "failed_assertion"),
                     ("imeout", "timeout"), ("blocked", "blocked")]
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")  # splits snake_case and CamelCase


class MemoryLocked(AgentError, TimeoutError):
    """Another process held memory.json's lock for longer than the lock timeout."""


# -- schema ---------------------------------------------------------------------------------------

def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with its local ``#/$defs/...`` refs replaced by their targets (none recurse)."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return _inline(defs[ref.removeprefix("#/$defs/")], defs)
    return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}


@functools.cache
def validator() -> Draft202012Validator:
    """The compiled schema validator, loaded once per process.

    The refs are inlined first: resolving them through the registry per item made validation
    about 1.6x slower, and validation is most of what a load costs.
    """
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(_inline(schema, schema.get("$defs", {})))


def check(doc: Any) -> None:
    """Raise the most relevant ``ValidationError`` if ``doc`` is not a valid current memory."""
    error = best_match(validator().iter_errors(doc))
    if error is not None:
        raise error
    for key, field in (("skills", "name"), ("directives", "id")):
        seen = Counter(item[field] for item in doc[key])
        dupes = sorted(k for k, count in seen.items() if count > 1)
        if dupes:
            raise ValidationError(f"duplicate {key[:-1]} {field}: {', '.join(dupes)}")


def one_line(error: ValidationError) -> str:
    """``$.skills[0].status: 'x' is not one of [...]`` on one line, capped at 200 chars."""
    text = f"{error.json_path}: {error.message}".replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


def empty() -> dict[str, Any]:
    """A fresh memory at the current version."""
    return {"version": CURRENT_VERSION, "skills": [], "failures": [], "directives": [],
            "failures_total": 0}


def new_skill(name: str, stamp: str) -> dict[str, Any]:
    """A skill entry with every required field at its default (``untested``, no grants)."""
    return {"name": name, "status": "untested", "description": "", "signature": "",
            "created_at": stamp, "updated_at": stamp, "last_tested": None,
            "path": f"skills/{name}.py", "test_path": f"skills/tests/test_{name}.py",
            "iterations": 0, "sandbox_level": None, "approvals": {}}


def _iso(stamp: datetime) -> str:
    return stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    """The current time as an ISO 8601 UTC string with milliseconds."""
    return _iso(datetime.now(UTC))


# -- migrations -----------------------------------------------------------------------------------

def _utc(value: Any, default: str) -> str:
    """Normalize a v1 timestamp (naive local ``isoformat()``, epoch, or missing) to UTC."""
    try:  # a naive stamp is local time (the seed wrote datetime.now().isoformat())
        return _iso(datetime.fromtimestamp(value, UTC) if isinstance(value, (int, float))
                    else datetime.fromisoformat(str(value)))
    except (TypeError, ValueError, OverflowError, OSError):
        return default


def guess_category(error: str) -> str:
    """The failure category an error message most likely belongs to (first needle found)."""
    return next((category for needle, category in _CATEGORY_NEEDLES if needle in error), "crash")


def truncate(text: str, limit: int, marker: str = "...") -> str:
    """``text`` cut to at most ``limit`` characters, ending with ``marker`` when cut."""
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


_V1_SKILL_STATUS = {"working": "working", "active": "working", "passed": "working",
                    "failed": "failed", "error": "failed", "broken": "failed"}
_V1_DIRECTIVE_STATUS = {"pending": "pending", "failed": "failed", "error": "failed", "done": "done",
                        "completed": "done", "complete": "done", "success": "done"}


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """The seed's shape -> v2: fill the new fields, map old statuses, normalize timestamps."""
    stamp = now()
    out = empty()
    skills = doc.get("skills") or []
    if isinstance(skills, dict):  # tolerate {name: {...}} as well as [{name, ...}]
        skills = [{"name": key, **value} for key, value in skills.items()]
    for old in skills:
        created = _utc(old.get("created_at"), stamp)
        out["skills"].append({
            **new_skill(old.get("name"), created),
            "status": _V1_SKILL_STATUS.get(str(old.get("status", "")).lower(), "untested"),
            "description": str(old.get("description") or ""),
            "signature": str(old.get("signature") or ""),
            "updated_at": _utc(old.get("updated_at"), created),
        })
    for seq, old in enumerate(doc.get("failures") or [], start=1):
        error = str(old.get("error") or "")
        out["failures"].append({
            "seq": seq, "skill": old.get("skill") or "", "error": truncate(error, ERROR_MAX),
            "category": guess_category(error),
            "code_snippet": truncate(str(old.get("code_snippet") or ""), SNIPPET_MAX, _TRUNCATED),
            "timestamp": _utc(old.get("timestamp"), stamp), "iteration": 0, "directive_id": None,
        })
    out["failures_total"] = len(out["failures"])
    for old in doc.get("directives") or []:
        # anything else (e.g. 'running') was cut short: it cannot still be running
        status = _V1_DIRECTIVE_STATUS.get(str(old.get("status", "")).lower(), "interrupted")
        created = _utc(old.get("created_at"), stamp)
        out["directives"].append({
            "id": uuid.uuid4().hex[:12], "goal": str(old.get("goal") or "?"), "status": status,
            "created_at": created, "updated_at": created, "skill": None, "iterations": 0,
            "reason": {"done": "passed", "interrupted": "interrupted"}.get(status),
            "max_iterations": DEFAULT_MAX_ITERATIONS,
        })
    return out


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    """v3 only adds: skill evidence and probes, a ``crashed`` directive, two failure categories."""
    return {**doc, "version": 3}


MIGRATIONS: list[Callable[[dict[str, Any]], dict[str, Any]]] = [_v1_to_v2, _v2_to_v3]
assert len(MIGRATIONS) == CURRENT_VERSION - 1


def migrate(doc: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Apply the migrations in order; return the current-version doc and the version it had."""
    raw = doc.get("version", 1)  # the seed may have written no version, or "1.0"
    if "version" not in doc and not {"skills", "failures", "directives"} & doc.keys():
        raise ValueError("no version and none of skills/failures/directives")
    if isinstance(raw, str) and re.fullmatch(r"\d+(\.0)?", raw):
        raw = int(float(raw))
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise ValueError(f"unknown version {raw!r}")
    if raw > CURRENT_VERSION:
        raise ValueError(f"version {raw} is newer than this agent understands ({CURRENT_VERSION})")
    for index in range(raw - 1, CURRENT_VERSION - 1):
        doc = MIGRATIONS[index](doc)
    return doc, raw


# -- files ----------------------------------------------------------------------------------------

def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _tokens(text: str) -> set[str]:
    """Lower-cased words of ``text``: ``json_validator AssertionError`` -> json, validator, ..."""
    return {word.lower() for word in _WORD.findall(text) if len(word) > 1}


# -- the store ------------------------------------------------------------------------------------

class Memory:
    """The workspace's memory.json. Reads take no lock (writes are atomic renames); writes do."""

    def __init__(self, workspace: Path | str, *, keep_failures: int = 200,
                 lock_timeout: float = 30.0) -> None:
        if keep_failures < 1:
            raise ValueError("keep_failures must be at least 1")
        self.workspace = Path(workspace)
        self.path = self.workspace / "memory.json"
        self.backup_path = self.workspace / "memory.json.bak"
        self.lock_path = self.workspace / "memory.json.lock"
        self.failure_log_path = self.workspace / "history" / "failures.jsonl"
        self.keep_failures = keep_failures
        self.lock_timeout = lock_timeout
        self._lock = FileLock(self.lock_path)
        self._in_update = False
        self._log_pending: list[dict[str, Any]] = []  # failure lines to append once a save is valid
        self._valid_raw: bytes | None = None  # skip re-validating bytes already checked

    def _corrupted(self, reason: str) -> MemoryCorrupted:
        backup = (f"restore the backup ({self.backup_path})" if self.backup_path.exists()
                  else f"there is no backup ({self.backup_path} does not exist), so")
        return MemoryCorrupted(
            f"{self.path} is corrupted: {reason}; nothing was changed. To recover, {backup} "
            f"move the file away (mv {self.path} {self.path}.broken) to start an empty memory.")

    def _load(self, raw: bytes | None) -> tuple[dict[str, Any], int]:
        """Parse, migrate and validate file bytes (``None``: no file yet)."""
        if raw is None:
            return empty(), CURRENT_VERSION
        if raw == self._valid_raw:  # the very bytes this instance last validated or wrote
            return json.loads(raw), CURRENT_VERSION
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._corrupted(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise self._corrupted(f"the top level is a {type(doc).__name__}, not an object")
        try:
            doc, version = migrate(doc)
            check(doc)
        except ValidationError as exc:
            raise self._corrupted(f"does not match its schema ({one_line(exc)})") from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self._corrupted(f"cannot be migrated ({exc})".replace("\n", " ")) from None
        if version == CURRENT_VERSION:
            self._valid_raw = raw
        return doc, version

    def _read_bytes(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def read(self) -> dict[str, Any]:
        """A validated copy of the memory; a fresh empty one when there is no file yet."""
        return self._load(self._read_bytes())[0]

    def update(self, fn: Callable[[dict[str, Any]], T]) -> T:
        """Lock, load, let ``fn`` mutate the doc, validate, write atomically with a backup.

        Returns ``fn``'s result. If ``fn`` raises or leaves an invalid doc, nothing is written
        (an invalid doc raises ``ValueError``). A doc that did not change is not rewritten, so
        the backup keeps the previous real version.
        """
        if self._in_update:
            raise RuntimeError("Memory.update is not reentrant: do all the work in one fn")
        self.workspace.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise MemoryLocked(f"{self.lock_path} is held by another process (waited "
                               f"{self.lock_timeout:g} s); is another agent running?") from None
        self._in_update = True
        try:
            raw = self._read_bytes()
            doc, version = self._load(raw)
            if version < CURRENT_VERSION:  # migrated: every failure is new to the jsonl log
                self._log_pending = list(doc["failures"])
            result = fn(doc)
            doc["failures"] = doc["failures"][-self.keep_failures:]
            try:
                check(doc)
            except ValidationError as exc:
                raise ValueError(f"memory update rejected, {self.path} unchanged: "
                                 f"{one_line(exc)}") from exc
            data = json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
            if data != raw:
                self._save(raw, data, version)
            return result
        finally:
            self._in_update = False
            self._log_pending = []
            self._lock.release()

    def _save(self, raw: bytes | None, data: bytes, version: int) -> None:
        """Append pending log lines, back up the old file, replace it. Caller holds the lock."""
        if self._log_pending:
            self._append_log(self._log_pending)
        if raw is not None:
            if version < CURRENT_VERSION:  # keep the pre-migration file for good
                keep = self.path.with_name(f"memory.json.v{version}")
                if not keep.exists():
                    atomic_write(keep, raw)
            atomic_write(self.backup_path, raw)
        atomic_write(self.path, data)
        _fsync_dir(self.workspace)
        self._valid_raw = data

    def _append_log(self, records: list[dict[str, Any]]) -> None:
        """Append one JSON line per record to history/failures.jsonl, durably."""
        self.failure_log_path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with open(self.failure_log_path, "ab+") as handle:
            if handle.tell() > 0:  # a crash mid-line must not glue two records together
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    lines = b"\n" + lines
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def add_directive(self, goal: str, max_iterations: int) -> str:
        """Record a directive as ``pending`` before any work starts; return its id."""
        directive_id = uuid.uuid4().hex[:12]
        stamp = now()
        self.update(lambda doc: doc["directives"].append({
            "id": directive_id, "goal": goal, "status": "pending", "created_at": stamp,
            "updated_at": stamp, "skill": None, "iterations": 0, "reason": None,
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

    def start_directive(self, directive_id: str) -> None:
        """Mark a directive ``running`` (work has started)."""
        self._set_directive(directive_id, status="running")

    def finish_directive(self, directive_id: str, *, status: str, reason: str | None,
                         skill: str | None, iterations: int, error: str | None = None) -> None:
        """Record how a directive ended (``pending`` again is allowed: model unavailable)."""
        extra = {"error": truncate(" ".join(error.split()), ERROR_MAX)} if error else {}
        self._set_directive(directive_id, status=status, reason=reason, skill=skill,
                            iterations=iterations, **extra)

    def pending_directives(self) -> list[dict[str, Any]]:
        """Directives recorded but not started (or sent back to pending), oldest first."""
        return [d for d in self.read()["directives"] if d["status"] == "pending"]

    def upsert_skill(self, name: str, **fields: Any) -> None:
        """Insert or update a skill; sets ``created_at`` on insert and ``updated_at`` always."""
        def apply(doc: dict[str, Any]) -> None:
            stamp = now()
            for skill in doc["skills"]:
                if skill["name"] == name:
                    skill.update(fields, updated_at=stamp)
                    return
            doc["skills"].append({**new_skill(name, stamp), **fields, "updated_at": stamp})
        self.update(apply)

    def get_skill(self, name: str) -> dict[str, Any] | None:
        """The skill entry, or ``None``."""
        return next((s for s in self.read()["skills"] if s["name"] == name), None)

    def record_failure(self, *, skill: str, error: str, category: str, code_snippet: str,
                       iteration: int, directive_id: str | None) -> None:
        """Log a failure: appended to history/failures.jsonl and kept among the recent ones."""
        def apply(doc: dict[str, Any]) -> None:
            doc["failures_total"] += 1
            record = {"seq": doc["failures_total"], "skill": skill,
                      "error": truncate(error, ERROR_MAX), "category": category,
                      "code_snippet": truncate(code_snippet, SNIPPET_MAX, _TRUNCATED),
                      "timestamp": now(), "iteration": iteration, "directive_id": directive_id}
            doc["failures"].append(record)
            self._log_pending.append(record)
        self.update(apply)

    def recent_failures(self, n: int = 10, skill: str | None = None) -> list[dict[str, Any]]:
        """Up to ``n`` of the most recent failures (newest first), optionally for one skill."""
        failures = reversed(self.read()["failures"])
        return [f for f in failures if skill is None or f["skill"] == skill][:n]

    def similar_failures(self, text: str, n: int = 3) -> list[dict[str, Any]]:
        """The recent failures sharing most words with ``text`` (cosine over token sets)."""
        query = _tokens(text)
        if not query:
            return []
        scored = []
        for failure in self.read()["failures"]:
            words = _tokens(f"{failure['skill']} {failure['category']} {failure['error']}")
            overlap = len(query & words)
            if overlap:
                scored.append((overlap / math.sqrt(len(query) * len(words)), failure["seq"], failure))
        scored.sort(key=lambda item: (item[0], item[1]), reverse=True)  # ties: newest first
        return [failure for _, _, failure in scored[:n]]

    def failure_log(self) -> Iterator[dict[str, Any]]:
        """Every failure ever logged, oldest first (streams history/failures.jsonl)."""
        if not self.failure_log_path.exists():
            return
        with open(self.failure_log_path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def summary(self) -> dict[str, Any]:
        """Skills by status, failures logged, the 5 latest failures, pending directives."""
        doc = self.read()
        by_status = Counter(s["status"] for s in doc["skills"])
        return {"skills": {status: by_status.get(status, 0) for status in ("working", "untested", "failed")},
                "failures": doc["failures_total"],
                "recent_failures": list(reversed(doc["failures"][-5:])),
                "pending_directives": [d for d in doc["directives"] if d["status"] == "pending"]}

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
