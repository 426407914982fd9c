"""memory.json's shape: the JSON Schema, and checking a whole document or only what changed.

Validating every item is what a load costs (about 120 µs a skill: 1.2 s for 10,000), so the
store validates a whole document once and afterwards only the items an update changed, against
the same schema split in two: the document with its arrays' items left open, and each item.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

CURRENT_VERSION = 6
SCHEMA_PATH = Path(__file__).with_name("memory.schema.json")
# each array of the document, and the field that identifies its items
SECTIONS = {"skills": "name", "directives": "id", "failures": "seq"}
SKILL_STATUSES = ("working", "untested", "failed", "broken_dependency")
ERROR_MAX = 500  # a failure's error is a short message; the full output belongs in the sandbox log
SNIPPET_MAX = 2000
FIX_MAX = 2000  # a failure's fix: the unified diff to the version that passed
TRUNCATED = "\n# ... truncated"


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
def _schema() -> dict[str, Any]:
    """The schema with its refs inlined (resolving them per item made validation 1.6x slower)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return _inline(schema, schema.get("$defs", {}))


@functools.cache
def schema_digest() -> str:
    """Identifies the schema: a document validated under another schema is validated again."""
    return hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()[:16]


@functools.cache
def validator() -> Draft202012Validator:
    """The whole document's validator, compiled once per process."""
    return Draft202012Validator(_schema())


@functools.cache
def _shell_validator() -> Draft202012Validator:
    """The document with its arrays' items unchecked (they are checked one by one, by the caller:
    even ``{"type": "object"}`` per item costs 5 ms a thousand items)."""
    schema = json.loads(json.dumps(_schema()))
    for section in SECTIONS:
        del schema["properties"][section]["items"]
    return Draft202012Validator(schema)


@functools.cache
def _item_validator(section: str) -> Draft202012Validator:
    return Draft202012Validator(_schema()["properties"][section]["items"])


def _raise_first(validator_: Draft202012Validator, instance: Any, *at: str | int) -> None:
    """Raise the best error, its path prefixed with ``at`` (where ``instance`` sits in the doc)."""
    error = best_match(validator_.iter_errors(instance))
    if error is not None:
        raise error if not at else ValidationError(error.message, path=[*at, *error.path])


def _check_unique(doc: dict[str, Any]) -> None:
    for key, field in SECTIONS.items():
        keys = [item[field] for item in doc[key]]
        if len(set(keys)) == len(keys):
            continue
        dupes = sorted(k for k, count in Counter(keys).items() if count > 1)
        if dupes:
            raise ValidationError(f"duplicate {key[:-1]} {field}: {', '.join(map(str, dupes))}")


def check(doc: Any) -> None:
    """Raise the most relevant ``ValidationError`` if ``doc`` is not a valid current memory."""
    _raise_first(validator(), doc)
    _check_unique(doc)


def check_changed(doc: Any, changed: dict[str, list[tuple[int, dict[str, Any]]]]) -> None:
    """``check`` for a document whose items were valid except ``changed`` (section -> (index, item));
    every item of ``changed`` is checked, so a new item that is not an object is caught."""
    _raise_first(_shell_validator(), doc)
    for section, items in changed.items():
        for index, item in items:
            _raise_first(_item_validator(section), item, section, index)
    _check_unique(doc)


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


def iso(stamp: datetime) -> str:
    """``stamp`` as an ISO 8601 UTC string with milliseconds (``...T12:00:00.000Z``)."""
    return stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    """The current time as an ISO 8601 UTC string with milliseconds."""
    return iso(datetime.now(UTC))


def truncate(text: str, limit: int, marker: str = "...") -> str:
    """``text`` cut to at most ``limit`` characters, ending with ``marker`` when cut."""
    return text if len(text) <= limit else text[: limit - len(marker)] + marker
