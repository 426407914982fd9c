"""The one ranker: BM25 (``rank_bm25``) over short texts, for skills and for past failures alike.

BM25+ rather than the classic Okapi: over a small set (a few skills, the failures of one
workspace) Okapi gives a word found in most documents a negative weight, so a document that
shares more of the query can rank lower; BM25+'s floor keeps every shared word worth something."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rank_bm25 import BM25Plus

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")  # splits snake_case and CamelCase


def tokens(text: str) -> list[str]:
    """Lower-cased words of ``text``: ``json_validator AssertionError`` -> json, validator, assertion, error."""
    return [word.lower() for word in _WORD.findall(text)]


def rank(query: str, documents: Sequence[str], n: int | None = None) -> list[int]:
    """Indexes of the documents sharing at least one word with ``query``, best BM25 score first
    (ties: the later document first, so the newest of equal failures wins); at most ``n``."""
    query_words = tokens(query)
    if not query_words or not documents:
        return []
    corpus = [tokens(doc) for doc in documents]
    wanted = set(query_words)
    scores = BM25Plus([words or [""] for words in corpus]).get_scores(query_words)
    hits = [i for i, words in enumerate(corpus) if wanted & set(words)]
    hits.sort(key=lambda i: (scores[i], i), reverse=True)
    return hits if n is None else hits[:n]
