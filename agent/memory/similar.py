"""Which recent failures resemble a goal or an error: cosine over the words they share."""

from __future__ import annotations

import math
import re
from typing import Any

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")  # splits snake_case and CamelCase


def tokens(text: str) -> set[str]:
    """Lower-cased words of ``text``: ``json_validator AssertionError`` -> json, validator, ..."""
    return {word.lower() for word in _WORD.findall(text) if len(word) > 1}


def similar(text: str, failures: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` failures sharing most words with ``text``, best first (ties: newest first)."""
    query = tokens(text)
    if not query:
        return []
    scored = []
    for failure in failures:
        words = tokens(f"{failure['skill']} {failure['category']} {failure['error']}")
        overlap = len(query & words)
        if overlap:
            scored.append((overlap / math.sqrt(len(query) * len(words)), failure["seq"], failure))
    scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [failure for _, _, failure in scored[:n]]
