"""history/history.sqlite: what grows without bound, kept out of memory.json.

- ``failures``: every failure ever logged (memory.json keeps only a recent window), with the
  change that resolved it (``fix``, a unified diff) once its directive passed;
- ``runs``: one row per directive (goal, outcome, iterations, tokens, seconds), for ``:history``;
- ``events``: each directive's audit trail: prompts, replies, code versions, gate findings, test
  results, sandbox level, tokens and seconds, in order, for ``:history <n>``;
- ``meta``: the digest of the last memory.json validated against the schema, so a start does
  not validate 10,000 unchanged skills again.

Why SQLite: these are append-mostly logs read by key and by recency ("the 20 latest directives",
"directive X's events"), which a JSON Lines file answers only by scanning all of it. SQLite is in
the standard library, transactional and crash-safe (WAL), and serializes writers from several
agents on one workspace (busy timeout). LangGraph's checkpoints live in their own file
(history/checkpoints.sqlite), owned by ``langgraph-checkpoint-sqlite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.errors import AgentError, disk_full, no_space

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    seq INTEGER PRIMARY KEY, skill TEXT NOT NULL, category TEXT NOT NULL, error TEXT NOT NULL,
    code_snippet TEXT NOT NULL, timestamp TEXT NOT NULL, iteration INTEGER NOT NULL,
    directive_id TEXT, fix TEXT);
CREATE TABLE IF NOT EXISTS runs (
    directive_id TEXT PRIMARY KEY, goal TEXT NOT NULL, started TEXT NOT NULL, ended TEXT,
    outcome TEXT, reason TEXT, skill TEXT, iterations INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0, level TEXT,
    model TEXT);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, directive_id TEXT NOT NULL, timestamp TEXT NOT NULL,
    kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_directive ON events (directive_id, id);
"""
# After _SCHEMA (whose failures table may be older than its fix column) has run.
_FAILURES_DIRECTIVE = "CREATE INDEX IF NOT EXISTS failures_directive ON failures (directive_id)"
FAILURE_FIELDS = ("seq", "skill", "category", "error", "code_snippet", "timestamp", "iteration",
                  "directive_id", "fix")  # fix: optional (NULL until the directive passed)
RUN_FIELDS = ("directive_id", "goal", "started", "ended", "outcome", "reason", "skill", "iterations",
              "tokens", "seconds", "level", "model")
_ADD_FAILURE = ("INSERT OR REPLACE INTO failures (seq, skill, category, error, code_snippet, timestamp, "
                "iteration, directive_id, fix) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_ALL_FAILURES = ("SELECT seq, skill, category, error, code_snippet, timestamp, iteration, directive_id, fix "
                 "FROM failures ORDER BY seq")
_SELECT_RUNS = ("SELECT directive_id, goal, started, ended, outcome, reason, skill, iterations, tokens, "
                "seconds, level, model FROM runs")


class HistoryError(AgentError):
    """history.sqlite cannot be read or written (disk full, permissions, a broken file)."""


@contextlib.contextmanager
def _one_line(path: Path):
    try:
        yield
    except sqlite3.Error as err:
        if no_space(err, path.parent):
            raise disk_full(path.parent) from None
        raise HistoryError(f"{path}: {err} (the history and failure log could not be used)") from None


def _add_fix_column(conn: sqlite3.Connection) -> None:
    """A database made before failures had a ``fix`` column gets one (NULL in the old rows)."""
    if any(row[1] == "fix" for row in conn.execute("PRAGMA table_info(failures)")):
        return
    try:
        conn.execute("ALTER TABLE failures ADD COLUMN fix TEXT")
    except sqlite3.OperationalError as err:  # another agent added it a moment ago
        if "duplicate column" not in str(err):
            raise


class History:
    """One connection per process to history/history.sqlite, opened on first use (and again in
    a forked child, which must not use its parent's). A failure is a one-line ``HistoryError``."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _one_line(self.path):
                conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False,
                                       isolation_level=None)  # autocommit; transactions are explicit
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; never corrupt
                conn.executescript(_SCHEMA)
                _add_fix_column(conn)
                conn.execute(_FAILURES_DIRECTIVE)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def check(self) -> None:
        """Raise ``HistoryError`` (one line) if the file cannot be opened as a database."""
        self._rows("SELECT 1 FROM meta LIMIT 1")

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        with self._lock, _one_line(self.path):
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with _one_line(self.path):
            return self.conn.execute(sql, params).fetchall()

    # -- meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A cached fact, or None (also when the file cannot be read: facts are only shortcuts)."""
        with contextlib.suppress(HistoryError):
            rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
            return rows[0][0] if rows else None
        return None

    def set_meta(self, key: str, value: str) -> None:
        with contextlib.suppress(HistoryError):
            self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [(key, value)])

    # -- failures --------------------------------------------------------------------------------

    def add_failures(self, records: Iterable[dict[str, Any]]) -> None:
        """Keep failure records; a record with a ``seq`` already kept replaces it (a write of
        memory.json that failed after the log did leaves that seq to the next failure)."""
        self._write(_ADD_FAILURE,
                    ([record.get(f) if f == "fix" else record[f] for f in FAILURE_FIELDS] for record in records))

    def failures(self) -> Iterator[dict[str, Any]]:
        """Every failure ever logged, oldest first (``fix`` only on those that have one, as in
        memory.json)."""
        with _one_line(self.path):
            for row in self.conn.execute(_ALL_FAILURES):
                record = dict(zip(FAILURE_FIELDS, row, strict=True))
                if record["fix"] is None:
                    del record["fix"]
                yield record

    def directive_failures(self, directive_id: str) -> list[dict[str, Any]]:
        """A directive's failures (seq, category, code_snippet), oldest first."""
        rows = self._rows("SELECT seq, category, code_snippet FROM failures WHERE directive_id = ? ORDER BY seq",
                          (directive_id,))
        return [{"seq": seq, "category": category, "code_snippet": code} for seq, category, code in rows]

    def set_fixes(self, fixes: Iterable[tuple[int, str]]) -> None:
        """Record on logged failures (by seq) the change that resolved them."""
        self._write("UPDATE failures SET fix = ? WHERE seq = ?", ((fix, seq) for seq, fix in fixes))

    def failure_count(self) -> int:
        return self._rows("SELECT count(*) FROM failures")[0][0]

    # -- runs and their events -------------------------------------------------------------------

    def start_run(self, directive_id: str, goal: str, started: str, model: str | None = None) -> None:
        """Record that a directive started (again, when resumed: its row is kept and reopened)."""
        self._write("INSERT INTO runs (directive_id, goal, started, model) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (directive_id) DO UPDATE SET ended = NULL, outcome = NULL, "
                    "model = coalesce(excluded.model, model)", [(directive_id, goal, started, model)])

    def end_run(self, directive_id: str, *, ended: str, outcome: str, reason: str | None,
                skill: str | None, iterations: int, tokens: int, seconds: float,
                level: str | None) -> None:
        """Record how a directive (or this resumption of it) ended: ``tokens`` is the directive's
        total so far (its checkpoints carry it across resumptions), ``seconds`` add up."""
        self._write("UPDATE runs SET ended = ?, outcome = ?, reason = ?, skill = coalesce(?, skill), "
                    "iterations = ?, tokens = ?, seconds = seconds + ?, "
                    "level = coalesce(?, level) WHERE directive_id = ?",
                    [(ended, outcome, reason, skill, iterations, tokens, seconds, level, directive_id)])

    def recent_runs(self, n: int = 20) -> list[dict[str, Any]]:
        """The ``n`` most recently started directives, newest first."""
        rows = self._rows(_SELECT_RUNS + " ORDER BY started DESC, rowid DESC LIMIT ?", (n,))
        return [dict(zip(RUN_FIELDS, row, strict=True)) for row in rows]

    def find_run(self, prefix: str) -> dict[str, Any] | None:
        """The directive whose id starts with ``prefix`` (hex, 4+ characters), if exactly one does."""
        if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
            return None
        rows = self._rows(_SELECT_RUNS + " WHERE directive_id >= ? AND directive_id < ? LIMIT 2",
                          (prefix, prefix + "g"))
        return dict(zip(RUN_FIELDS, rows[0], strict=True)) if len(rows) == 1 else None

    def add_event(self, directive_id: str, timestamp: str, kind: str, data: dict[str, Any]) -> None:
        self._write("INSERT INTO events (directive_id, timestamp, kind, data) VALUES (?, ?, ?, ?)",
                    [(directive_id, timestamp, kind, json.dumps(data, ensure_ascii=False))])

    def events(self, directive_id: str) -> Iterator[dict[str, Any]]:
        """A directive's audit trail in order: ``{"timestamp", "kind", **data}`` each."""
        with _one_line(self.path):
            cursor = self.conn.execute("SELECT timestamp, kind, data FROM events WHERE directive_id = ? "
                                       "ORDER BY id", (directive_id,))
            for timestamp, kind, data in cursor:
                yield {"timestamp": timestamp, "kind": kind, **json.loads(data)}
