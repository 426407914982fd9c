"""memory.json across versions and processes: v1 -> current migration, the file lock."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from agent.memory import CURRENT_VERSION, MIGRATIONS, Memory, MemoryLocked, check

SEED_V1 = {
    "version": 1,
    "skills": [{"name": "json_validator", "status": "working", "description": "Validates JSON",
                "created_at": "2024-05-01T10:00:00.123456", "updated_at": "2024-05-02T11:00:00"}],
    "failures": [{"skill": "json_validator", "error": "SyntaxError: invalid syntax",
                  "code_snippet": "def f(:", "timestamp": "2024-05-01T10:05:00"}],
    "directives": [{"goal": "Create a JSON validator", "status": "completed",
                    "created_at": "2024-05-01T09:59:00"},
                   {"goal": "Create a regex matcher", "status": "pending",
                    "created_at": "2024-05-03T09:00:00"}],
}


def test_there_is_one_migration_per_version_step() -> None:
    assert len(MIGRATIONS) == CURRENT_VERSION - 1


@pytest.mark.parametrize("version", [1, "1.0", None])
def test_v1_seed_migrates_on_read_without_writing(workspace: Path, version: Any) -> None:
    seed = dict(SEED_V1)
    if version is None:
        del seed["version"]  # the seed may have written no version at all
    else:
        seed["version"] = version
    data = json.dumps(seed).encode()
    memory = Memory(workspace)
    memory.path.write_bytes(data)
    doc = memory.read()
    check(doc)
    assert doc["version"] == CURRENT_VERSION
    (skill,) = doc["skills"]
    assert (skill["status"], skill["path"], skill["approvals"]) == \
        ("working", "skills/json_validator.py", {})
    assert skill["created_at"].endswith("Z")
    (failure,) = doc["failures"]
    assert (failure["category"], failure["seq"], doc["failures_total"]) == ("syntax_error", 1, 1)
    assert [(d["status"], d["reason"]) for d in doc["directives"]] == \
        [("done", "passed"), ("pending", None)]
    assert len({d["id"] for d in doc["directives"]}) == 2
    assert memory.path.read_bytes() == data  # reading never writes


def test_first_write_after_migration_persists_and_keeps_the_v1_file(workspace: Path) -> None:
    memory = Memory(workspace)
    data = json.dumps(SEED_V1).encode()
    memory.path.write_bytes(data)
    memory.upsert_skill("regex_matcher")
    on_disk = json.loads(memory.path.read_text())
    assert on_disk["version"] == CURRENT_VERSION
    assert [s["name"] for s in on_disk["skills"]] == ["json_validator", "regex_matcher"]
    assert (workspace / "memory.json.v1").read_bytes() == data
    assert memory.backup_path.read_bytes() == data
    assert [f["error"] for f in memory.failure_log()] == ["SyntaxError: invalid syntax"]
    memory.upsert_skill("third")  # a second write must not log the migrated failures again
    assert len(list(memory.failure_log())) == 1


def test_migrating_more_failures_than_kept_logs_them_all(workspace: Path) -> None:
    seed = {**SEED_V1, "failures": [{**SEED_V1["failures"][0], "error": f"ImportError {i}"}
                                    for i in range(5)]}
    memory = Memory(workspace, keep_failures=2)
    memory.path.write_text(json.dumps(seed))
    memory.upsert_skill("regex_matcher")
    doc = memory.read()
    assert [f["seq"] for f in doc["failures"]] == [4, 5] and doc["failures_total"] == 5
    assert [f["category"] for f in doc["failures"]] == ["import_error"] * 2
    assert [f["seq"] for f in memory.failure_log()] == [1, 2, 3, 4, 5]


def _increment(workspace: str, times: int) -> None:
    memory = Memory(Path(workspace))
    for _ in range(times):
        def bump(doc: dict[str, Any]) -> None:
            skill = next(s for s in doc["skills"] if s["name"] == "counter")
            skill["iterations"] += 1
        memory.update(bump)


def _hold_lock(lock_path: str, held: Any, seconds: float) -> None:
    with FileLock(lock_path):
        held.set()
        time.sleep(seconds)


def test_two_processes_lose_no_updates(workspace: Path) -> None:
    Memory(workspace).upsert_skill("counter")
    ctx = multiprocessing.get_context("spawn")  # a fresh process, as a second agent is
    workers = [ctx.Process(target=_increment, args=(str(workspace), 50)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert Memory(workspace).get_skill("counter")["iterations"] == 100  # type: ignore[index]


def test_writer_waits_for_a_lock_held_elsewhere(workspace: Path) -> None:
    memory = Memory(workspace)
    ctx = multiprocessing.get_context("fork")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(memory.lock_path), held, 0.6))
    holder.start()
    assert held.wait(10)
    start = time.monotonic()
    memory.upsert_skill("after_wait")
    waited = time.monotonic() - start
    holder.join(10)
    assert waited >= 0.4
    assert memory.get_skill("after_wait") is not None


def test_lock_timeout_is_a_clear_error(workspace: Path) -> None:
    memory = Memory(workspace, lock_timeout=0.2)
    memory.upsert_skill("kept")
    before = memory.path.read_bytes()
    ctx = multiprocessing.get_context("fork")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(memory.lock_path), held, 2.0))
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(MemoryLocked, match="memory.json.lock"):
            memory.upsert_skill("never")
    finally:
        holder.join(10)
    assert memory.path.read_bytes() == before


OLD_FAILURES = ("CREATE TABLE failures (seq INTEGER PRIMARY KEY, skill TEXT NOT NULL, category TEXT NOT NULL, "
                "error TEXT NOT NULL, code_snippet TEXT NOT NULL, timestamp TEXT NOT NULL, "
                "iteration INTEGER NOT NULL, directive_id TEXT)")


def test_a_history_made_before_fixes_gains_the_column_and_keeps_its_rows(workspace: Path) -> None:
    old = {"seq": 1, "skill": "add_numbers", "category": "failed_assertion", "error": "assert 0 == 4",
           "code_snippet": "def add(a, b):\n    return a - b\n", "timestamp": "2025-01-02T03:04:05Z",
           "iteration": 1, "directive_id": "aaaa00000001"}
    path = workspace / "history" / "history.sqlite"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(OLD_FAILURES)
        conn.execute("INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tuple(old.values()))
        conn.commit()
    memory = Memory(workspace)
    memory.update(lambda doc: doc.update(failures=[dict(old)], failures_total=1))  # memory.json in step
    assert list(memory.failure_log()) == [old]  # no fix yet: none shown, as in memory.json
    memory.record_failure(skill="add_numbers", error="assert 1 == 4", category="failed_assertion",
                          code_snippet="def add(a, b):\n    return a * b\n", iteration=2,
                          directive_id="aaaa00000001")
    assert memory.record_fixes("aaaa00000001", "def add(a, b):\n    return a + b\n") == 2
    logged = list(Memory(workspace).failure_log())
    assert [f["seq"] for f in logged] == [1, 2] and all("+    return a + b" in f["fix"] for f in logged)
    assert logged == memory.read()["failures"]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert [row[1] for row in conn.execute("PRAGMA table_info(failures)")].count("fix") == 1
