"""Which recent failures resemble a goal or an error: the shared BM25 ranker (agent.rank)."""

from __future__ import annotations

from typing import Any

from agent.rank import rank


def similar(text: str, failures: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` failures most like ``text`` (skill, category, error), best first (ties: newest)."""
    found = rank(text, [f"{f['skill']} {f['category']} {f['error']}" for f in failures], n)
    return [failures[i] for i in found]
