"""memory.json grows by versioned migration: ``MIGRATIONS[i]`` takes version ``i + 1`` to ``i + 2``.

A migration only reshapes the document; the store keeps the pre-migration file for good
(``memory.json.v<N>``) the first time it writes the migrated one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.memory.schema import (
    CURRENT_VERSION,
    ERROR_MAX,
    SNIPPET_MAX,
    TRUNCATED,
    empty,
    iso,
    new_skill,
    now,
    truncate,
)

DEFAULT_MAX_ITERATIONS = 12  # only for directives migrated from v1, which did not record a cap
_CATEGORY_NEEDLES = [("SyntaxError", "syntax_error"), ("IndentationError", "syntax_error"),
                     ("ImportError", "import_error"), ("ModuleNotFoundError", "import_error"),
                     ("assert", "failed_assertion"), ("Assert", "failed_assertion"),
                     ("imeout", "timeout"), ("blocked", "blocked")]


def _utc(value: Any, default: str) -> str:
    """Normalize a v1 timestamp (naive local ``isoformat()``, epoch, or missing) to UTC."""
    try:  # a naive stamp is local time (the seed wrote datetime.now().isoformat())
        return iso(datetime.fromtimestamp(value, UTC) if isinstance(value, (int, float))
                   else datetime.fromisoformat(str(value)))
    except (TypeError, ValueError, OverflowError, OSError):
        return default


def guess_category(error: str) -> str:
    """The failure category an error message most likely belongs to (first needle found)."""
    return next((category for needle, category in _CATEGORY_NEEDLES if needle in error), "crash")


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
            "code_snippet": truncate(str(old.get("code_snippet") or ""), SNIPPET_MAX, TRUNCATED),
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
    out["version"] = 2
    return out


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    """v3 only adds: skill evidence and probes, a ``crashed`` directive, two failure categories."""
    return {**doc, "version": 3}


def _v3_to_v4(doc: dict[str, Any]) -> dict[str, Any]:
    """v4 only adds the ``cut_off`` reason (the process died mid-directive); the full failure log
    moved from history/failures.jsonl to history/history.sqlite (imported by the store)."""
    return {**doc, "version": 4}


def _v4_to_v5(doc: dict[str, Any]) -> dict[str, Any]:
    """v5 only adds: skill versions (``version``, ``versions``, files under versions/<name>/), the
    ``broken_dependency`` status, and a failure's ``fix`` (the change that resolved it)."""
    return {**doc, "version": 5}


def _v5_to_v6(doc: dict[str, Any]) -> dict[str, Any]:
    """v6 only adds: a kept version's content hashes (``sha256``, recorded from its files at the
    first start, see ``agent.changes.record_hashes``) and the ``disk_full`` and ``sandbox_unavailable``
    reasons."""
    return {**doc, "version": 6}


MIGRATIONS: list[Callable[[dict[str, Any]], dict[str, Any]]] = [_v1_to_v2, _v2_to_v3, _v3_to_v4, _v4_to_v5,
                                                               _v5_to_v6]
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
