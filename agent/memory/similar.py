"""Which recent failures resemble a goal or an error (the shared BM25 ranker, agent.rank), and
the change that resolved a failure: a compact unified diff to the version that passed."""

from __future__ import annotations

import difflib
from typing import Any

from agent.memory.schema import FIX_MAX
from agent.rank import rank

FIX_CUT = "\n... (diff cut)"
UNFIXABLE = ("no_code", "blocked", "model_error")  # no code of its own failed: there is nothing to diff


def similar(text: str, failures: list[dict[str, Any]], n: int = 3, *, fixed: bool = False,
            exclude: str | None = None) -> list[dict[str, Any]]:
    """The ``n`` failures most like ``text`` (skill, category, error), best first (ties: newest).

    ``fixed``: only failures that carry a ``fix``, and the best of each directive only (its
    failures were all fixed by one version, so one of them says it), none of directive
    ``exclude`` (the one asking: its own fix would be the code just rejected)."""
    found = [failures[i] for i in rank(text, [f"{f['skill']} {f['category']} {f['error']}" for f in failures],
                                       None if fixed else n)]
    if fixed:  # ranked among all (a handful of fixed ones alone make a poor corpus), then filtered
        found = [f for f in found if f.get("fix") and (exclude is None or f["directive_id"] != exclude)]
        best: dict[str, dict[str, Any]] = {}
        for failure in found:
            best.setdefault(failure["directive_id"] or f"#{failure['seq']}", failure)
        found = list(best.values())  # dicts keep insertion order: still best first
    return found[:n]


def fix_diff(failed: str, passed: str, limit: int = FIX_MAX) -> str:
    """A unified diff (one line of context) from the failing code to the passing code, at most
    ``limit`` characters (cut at a line, marked); "" when they do not differ."""
    lines = list(difflib.unified_diff(failed.splitlines(), passed.splitlines(), "failed", "passed",
                                      n=1, lineterm=""))
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    kept, size = [], len(FIX_CUT)
    for line in lines:
        line = line if len(line) <= limit // 4 else line[:limit // 4 - 3] + "..."
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept) + FIX_CUT
