"""memory.json: schema, atomic writes, backup, corruption, directives, failures, grants."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError

from agent.errors import MemoryCorrupted
from agent.memory import CURRENT_VERSION, SNIPPET_MAX, Memory, check, empty, new_skill
from agent.memory.schema import FIX_MAX

STAMP = "2025-01-02T03:04:05.678Z"
DELETE = object()


def valid_doc() -> dict[str, Any]:
    """A current-version doc with one of everything."""
    doc = empty()
    doc["skills"].append({**new_skill("json_validator", STAMP), "status": "working",
                          "approvals": {"network": "always"}, "dependencies": ["text_utils"]})
    doc["failures"].append({"seq": 1, "skill": "json_validator", "error": "AssertionError",
                            "category": "failed_assertion", "code_snippet": "assert f() == 1",
                            "timestamp": STAMP, "iteration": 1, "directive_id": "0123456789ab"})
    doc["directives"].append({"id": "0123456789ab", "goal": "Create a JSON validator",
                              "status": "done", "created_at": STAMP, "updated_at": STAMP,
                              "skill": "json_validator", "iterations": 1, "reason": "passed",
                              "max_iterations": 12})
    doc["failures_total"] = 1
    return doc


def write_doc(ws: Path, doc: Any) -> bytes:
    data = json.dumps(doc).encode()
    (ws / "memory.json").write_bytes(data)
    return data


# -- schema ---------------------------------------------------------------------------------------

def test_valid_doc_passes_schema() -> None:
    check(valid_doc())
    check(empty())


@pytest.mark.parametrize("where, value", [
    (("version",), 1), (("version",), "2"), (("failures_total",), -1), (("surprise",), 1),
    (("skills", 0, "name"), "JsonValidator"), (("skills", 0, "name"), "1abc"),
    (("skills", 0, "name"), "a" * 65), (("skills", 0, "status"), "done"),
    (("skills", 0, "description"), DELETE), (("skills", 0, "surprise"), 1),
    (("skills", 0, "created_at"), "yesterday"), (("skills", 0, "updated_at"), "2025-01-02T03:04:05"),
    (("skills", 0, "updated_at"), "2025-01-02T03:04:05+02:00"), (("skills", 0, "last_tested"), 5),
    (("skills", 0, "path"), "/etc/passwd"), (("skills", 0, "path"), "skills/../../x.py"),
    (("skills", 0, "test_path"), "..\\x.py"), (("skills", 0, "iterations"), -1),
    (("skills", 0, "iterations"), "3"), (("skills", 0, "sandbox_level"), 3),
    (("skills", 0, "approvals"), {"network": "once"}), (("skills", 0, "dependencies"), ["Bad-Name"]),
    (("failures", 0, "category"), "oops"), (("failures", 0, "error"), "x" * 501),
    (("failures", 0, "code_snippet"), "x" * (SNIPPET_MAX + 1)), (("failures", 0, "seq"), 0),
    (("failures", 0, "skill"), "Bad Skill"), (("failures", 0, "directive_id"), "XYZ"),
    (("failures", 0, "timestamp"), DELETE), (("failures", 0, "iteration"), None),
    (("directives", 0, "status"), "completed"), (("directives", 0, "reason"), "because"),
    (("directives", 0, "goal"), ""), (("directives", 0, "max_iterations"), 0),
    (("directives", 0, "id"), DELETE), (("directives", 0, "skill"), 7),
])
def test_each_bad_field_is_rejected(where: tuple[Any, ...], value: Any) -> None:
    doc = valid_doc()
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    with pytest.raises(ValidationError):
        check(doc)


@pytest.mark.parametrize("key", ["skills", "directives"])
def test_duplicate_names_and_ids_are_rejected(key: str) -> None:
    doc = valid_doc()
    doc[key].append(copy.deepcopy(doc[key][0]))
    with pytest.raises(ValidationError, match="duplicate"):
        check(doc)


# -- load, atomic write, backup -------------------------------------------------------------------

def test_missing_file_reads_as_empty_and_creates_nothing(workspace: Path) -> None:
    memory = Memory(workspace)
    assert memory.read() == empty()
    assert memory.read()["version"] == CURRENT_VERSION
    assert list(workspace.iterdir()) == []


def test_update_writes_valid_file_and_keeps_backup(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("first")
    first = memory.path.read_bytes()
    assert not memory.backup_path.exists()  # nothing to back up on the very first write
    memory.upsert_skill("second")
    assert memory.backup_path.read_bytes() == first
    check(json.loads(memory.path.read_bytes()))
    assert [s["name"] for s in memory.read()["skills"]] == ["first", "second"]


def test_unchanged_doc_is_not_rewritten_so_the_backup_survives(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("first")
    memory.upsert_skill("second")
    backup, current = memory.backup_path.read_bytes(), memory.path.read_bytes()
    assert memory.update(lambda doc: len(doc["skills"])) == 2
    assert memory.revoke_grant("first", "network") is False
    assert (memory.backup_path.read_bytes(), memory.path.read_bytes()) == (backup, current)


@pytest.mark.parametrize("fail_on", ["memory.json.bak", "memory.json"])
def test_crash_during_rename_leaves_old_file_and_no_temp(workspace: Path, fail_on: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept")
    before = memory.path.read_bytes()
    real_replace = os.replace

    def crashing_replace(src: Any, dst: Any) -> None:
        if Path(dst).name == fail_on:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        memory.upsert_skill("lost")
    monkeypatch.undo()
    assert memory.path.read_bytes() == before
    assert [p.name for p in workspace.iterdir() if p.name.endswith(".tmp")] == []
    assert memory.get_skill("lost") is None and memory.get_skill("kept") is not None


def test_fn_that_raises_writes_nothing(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept")
    before = memory.path.read_bytes()

    def half_done(doc: dict[str, Any]) -> None:
        doc["skills"].clear()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        memory.update(half_done)
    assert memory.path.read_bytes() == before


def test_invalid_update_raises_one_line_value_error(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept")
    before = memory.path.read_bytes()
    with pytest.raises(ValueError) as info:
        memory.update(lambda doc: doc["skills"][0].update(status="great"))
    assert isinstance(info.value.__cause__, ValidationError)
    assert "\n" not in str(info.value) and "status" in str(info.value)
    assert memory.path.read_bytes() == before


def test_corruption_after_a_write_is_still_caught(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept")
    memory.read()
    memory.path.write_text(memory.path.read_text().replace('"untested"', '"great"'))
    with pytest.raises(MemoryCorrupted, match="status"):
        memory.read()


def test_nested_update_is_refused(workspace: Path) -> None:
    memory = Memory(workspace)
    with pytest.raises(RuntimeError, match="reentrant"):
        memory.update(lambda doc: memory.upsert_skill("inner"))
    assert memory.get_skill("inner") is None


# -- corruption -----------------------------------------------------------------------------------

CORRUPT = {
    "bad_json": b'{"version": 2, "skills": [',
    "empty_file": b"",
    "not_utf8": b"\xff\xfe{}",
    "top_level_list": b"[]",
    "schema_mismatch": json.dumps({**empty(), "skills": "none"}).encode(),
    "bad_total": json.dumps({**valid_doc(), "failures_total": "many"}).encode(),
    "unversioned_unknown": b'{"notes": "not a memory"}',
    "v1_unmigratable": json.dumps({"version": 1, "skills": "none"}).encode(),
    "future_version": json.dumps({**empty(), "version": 99}).encode(),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
@pytest.mark.parametrize("with_backup", [True, False])
def test_corrupted_file_stops_with_one_line_and_is_never_overwritten(
        workspace: Path, name: str, with_backup: bool) -> None:
    memory = Memory(workspace)
    if with_backup:
        memory.backup_path.write_text(json.dumps(valid_doc()))
    memory.path.write_bytes(CORRUPT[name])
    for attempt in (memory.read, lambda: memory.upsert_skill("x"),
                    lambda: memory.record_failure(skill="x", error="e", category="crash",
                                                  code_snippet="", iteration=0, directive_id=None)):
        with pytest.raises(MemoryCorrupted) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message
        assert str(memory.path) in message and str(memory.backup_path) in message
        assert ("restore the backup" in message) == with_backup and "move the file away" in message
    assert memory.path.read_bytes() == CORRUPT[name]
    assert list(memory.failure_log()) == []


# -- directives -----------------------------------------------------------------------------------

def test_directive_is_pending_on_disk_before_work_then_done(workspace: Path) -> None:
    memory = Memory(workspace)
    directive_id = memory.add_directive("Create a JSON validator", max_iterations=12)
    on_disk = json.loads(memory.path.read_text())["directives"]
    assert [(d["id"], d["status"], d["reason"]) for d in on_disk] == [(directive_id, "pending", None)]
    assert [d["id"] for d in memory.pending_directives()] == [directive_id]
    memory.start_directive(directive_id)
    assert memory.pending_directives() == []
    memory.finish_directive(directive_id, status="done", reason="passed", skill="json_validator",
                            iterations=3)
    (done,) = memory.read()["directives"]
    assert (done["status"], done["reason"], done["skill"], done["iterations"]) == \
        ("done", "passed", "json_validator", 3)
    assert done["updated_at"] >= done["created_at"] and done["max_iterations"] == 12


def test_directive_back_to_pending_when_model_unavailable(workspace: Path) -> None:
    memory = Memory(workspace)
    directive_id = memory.add_directive("Create a regex matcher", max_iterations=5)
    memory.finish_directive(directive_id, status="pending", reason="model_unavailable", skill=None,
                            iterations=0)
    assert [d["reason"] for d in memory.pending_directives()] == ["model_unavailable"]


def test_directive_errors(workspace: Path) -> None:
    memory = Memory(workspace)
    directive_id = memory.add_directive("goal", max_iterations=3)
    before = memory.path.read_bytes()
    with pytest.raises(KeyError):
        memory.finish_directive("ffffffffffff", status="done", reason="passed", skill=None, iterations=1)
    with pytest.raises(ValueError):
        memory.finish_directive(directive_id, status="won", reason="passed", skill=None, iterations=1)
    assert memory.path.read_bytes() == before


# -- skills and grants ----------------------------------------------------------------------------

def test_upsert_skill_sets_created_once_and_updated_always(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("regex_matcher", description="match", signature="match(p: str) -> bool")
    first = memory.get_skill("regex_matcher")
    assert first is not None and first["status"] == "untested"
    assert first["path"] == "skills/regex_matcher.py"
    memory.upsert_skill("regex_matcher", status="working", iterations=2, dependencies=["text_utils"])
    second = memory.get_skill("regex_matcher")
    assert second is not None and second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"] and second["description"] == "match"
    assert (second["status"], second["iterations"], second["dependencies"]) == \
        ("working", 2, ["text_utils"])
    assert memory.get_skill("nope") is None
    with pytest.raises(ValueError):
        memory.upsert_skill("regex_matcher", colour="blue")
    with pytest.raises(ValueError):
        memory.upsert_skill("Bad Name")


def test_grants_live_on_the_skill(workspace: Path) -> None:
    memory = Memory(workspace)
    assert memory.load_grants("fetcher") == {} and memory.get_skill("fetcher") is None
    memory.save_grant("fetcher", "network:example.com", "always")
    memory.save_grant("fetcher", "shell:rm", "deny")
    assert memory.get_skill("fetcher")["status"] == "untested"  # type: ignore[index]
    again = Memory(workspace)  # persisted, not cached
    assert again.load_grants("fetcher") == {"network:example.com": "always", "shell:rm": "deny"}
    assert again.all_grants() == {"fetcher": {"network:example.com": "always", "shell:rm": "deny"}}
    assert again.revoke_grant("fetcher", "shell:rm") is True
    assert again.revoke_grant("fetcher", "shell:rm") is False
    assert memory.load_grants("fetcher") == {"network:example.com": "always"}
    with pytest.raises(ValueError):
        memory.save_grant("fetcher", "network", "once")
    assert memory.all_grants() == {"fetcher": {"network:example.com": "always"}}


# -- failures -------------------------------------------------------------------------------------

def record(memory: Memory, i: int, *, skill: str = "json_validator", error: str = "AssertionError",
           category: str = "failed_assertion", snippet: str = "x = 1") -> None:
    memory.record_failure(skill=skill, error=f"{error} #{i}", category=category, code_snippet=snippet,
                          iteration=i, directive_id=None)


def test_failures_are_trimmed_in_memory_and_all_kept_in_history(workspace: Path) -> None:
    memory = Memory(workspace, keep_failures=5)
    for i in range(1, 13):
        record(memory, i, skill="alpha" if i % 2 else "beta")
    doc = memory.read()
    assert [f["seq"] for f in doc["failures"]] == [8, 9, 10, 11, 12]
    assert doc["failures_total"] == 12
    assert [f["seq"] for f in memory.failure_log()] == list(range(1, 13))
    assert [f["seq"] for f in Memory(workspace).failure_log()] == list(range(1, 13))  # on disk
    assert [f["seq"] for f in memory.recent_failures(3)] == [12, 11, 10]
    assert [f["seq"] for f in memory.recent_failures(10, skill="alpha")] == [11, 9]
    summary = memory.summary()
    assert summary["failures"] == 12 and [f["seq"] for f in summary["recent_failures"]][0] == 12


def test_long_error_and_snippet_are_truncated(workspace: Path) -> None:
    memory = Memory(workspace)
    record(memory, 1, error="E" * 5000, snippet="y" * 10_000)
    (failure,) = memory.recent_failures()
    assert len(failure["code_snippet"]) == SNIPPET_MAX and failure["code_snippet"].endswith("truncated")
    assert len(failure["error"]) <= 500


def test_invalid_failure_is_not_logged_anywhere(workspace: Path) -> None:
    memory = Memory(workspace)
    record(memory, 1)
    with pytest.raises(ValueError):
        record(memory, 2, category="weird")
    assert len(list(memory.failure_log())) == 1
    assert memory.read()["failures_total"] == 1


def test_a_pre_v4_failure_log_moves_into_history_torn_line_and_all(workspace: Path) -> None:
    memory = Memory(workspace)
    record(memory, 1)
    record(memory, 2)
    old = [{**f, "seq": n} for n, f in enumerate(memory.failure_log(), start=1)]
    memory.legacy_log_path.write_text("".join(json.dumps(f) + "\n" for f in old) + '{"seq": 3, "ski')
    memory.history.conn.execute("DELETE FROM failures")
    notices = memory.recover()
    assert notices == ["moved 2 logged failures from history/failures.jsonl into history/history.sqlite"]
    assert [f["error"] for f in memory.failure_log()] == ["AssertionError #1", "AssertionError #2"]
    assert not memory.legacy_log_path.exists()
    assert memory.legacy_log_path.with_name("failures.jsonl.imported").is_file()
    record(memory, 3)
    assert [f["seq"] for f in memory.failure_log()] == [1, 2, 3]


def test_similar_failures_ranks_by_shared_words(workspace: Path) -> None:
    memory = Memory(workspace)
    record(memory, 1, skill="csv_parser", error="ImportError: No module named pandas",
           category="import_error")
    record(memory, 2, skill="json_validator", error="JSONDecodeError: Expecting value",
           category="crash")
    record(memory, 3, skill="regex_matcher", error="re.error: unbalanced parenthesis",
           category="crash")
    found = memory.similar_failures("write a json validator that rejects bad JSON", n=2)
    assert [f["skill"] for f in found][0] == "json_validator"
    assert memory.similar_failures("pandas module import")[0]["skill"] == "csv_parser"
    assert memory.similar_failures("") == [] and memory.similar_failures("zzz qqq") == []


def test_summary_counts(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("a_skill", status="working")
    memory.upsert_skill("b_skill", status="failed")
    memory.upsert_skill("c_skill")
    directive_id = memory.add_directive("later", max_iterations=4)
    summary = memory.summary()
    assert summary["skills"] == {"working": 1, "untested": 1, "failed": 1, "broken_dependency": 0}
    assert summary["failures"] == 0 and summary["recent_failures"] == []
    assert [d["id"] for d in summary["pending_directives"]] == [directive_id]


# -- the document a process keeps (no re-parse, only changed items validated) -------------------

def test_an_invalid_in_place_change_is_rejected_and_forgotten(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept", status="working")
    with pytest.raises(ValueError, match="status"):
        memory.update(lambda doc: doc["skills"][0].update(status="bogus"))
    assert memory.read()["skills"][0]["status"] == "working"  # the live doc was read again
    with pytest.raises(ValueError, match="approvals"):
        memory.update(lambda doc: doc["skills"][0]["approvals"].update(network="sometimes"))
    with pytest.raises(ValueError):
        memory.update(lambda doc: doc["skills"].append("not an object"))
    assert memory.get_skill("kept")["approvals"] == {}


def test_a_file_changed_by_someone_else_is_read_and_validated_again(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept", status="working")
    doc = json.loads(memory.path.read_text())
    doc["skills"][0]["status"] = "failed"
    memory.path.write_text(json.dumps(doc))
    assert memory.get_skill("kept")["status"] == "failed"
    doc["skills"][0]["status"] = "bogus"
    memory.path.write_text(json.dumps(doc))
    with pytest.raises(MemoryCorrupted):
        memory.read()
    with pytest.raises(MemoryCorrupted):
        Memory(workspace).read()  # a new process does not trust it either


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["skill", "grant", "failure", "directive", "revoke"]),
                          st.integers(0, 3)), max_size=12))
def test_what_a_process_keeps_always_equals_the_file(workspace: Path, ops: list[tuple[str, int]]) -> None:
    memory = Memory(workspace, keep_failures=3)
    for op, n in ops:
        if op == "skill":
            memory.upsert_skill(f"s{n}", status=("working", "failed", "untested", "working")[n])
        elif op == "grant":
            memory.save_grant(f"s{n}", "network", "always")
        elif op == "revoke":
            memory.revoke_grant(f"s{n}", "network")
        elif op == "failure":
            record(memory, n)
        else:
            memory.add_directive(f"goal {n}", 5)
        assert memory.read() == json.loads(memory.path.read_text()) == Memory(workspace).read()


def test_recover_removes_only_memory_temp_files(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept")
    (workspace / ".memory.json.k1ll3d.tmp").write_text("{")
    (workspace / ".memory.json.bak.4242.tmp").write_text("{")
    (workspace / ".notes.txt.abc.tmp").write_text("not ours to judge")
    assert memory.recover() == []
    assert sorted(p.name for p in workspace.glob(".*.tmp")) == [".notes.txt.abc.tmp"]
    assert memory.get_skill("kept") is not None


def test_an_update_never_builds_on_a_stale_copy_even_with_a_coarse_clock(workspace: Path) -> None:
    """Backups make inodes come back; within one clock tick a rewritten file of the same size
    has the identity of an older one. An update compares bytes, so no write is lost."""
    a, b = Memory(workspace), Memory(workspace)
    b.upsert_skill("adder", description="x")
    a.read()
    before = os.stat(memory_file := workspace / "memory.json")
    b.upsert_skill("adder", description="y")
    b.upsert_skill("adder", description="z")
    if os.stat(memory_file).st_ino != before.st_ino or os.stat(memory_file).st_size != before.st_size:
        pytest.skip("this filesystem gave the file a new inode: the identity differs anyway")
    os.utime(memory_file, ns=(before.st_atime_ns, before.st_mtime_ns))  # what a coarse clock gives
    a.upsert_skill("other")
    assert Memory(workspace).get_skill("adder")["description"] == "z"


def test_an_item_moved_to_another_section_is_validated_there(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.upsert_skill("kept")
    record(memory, 1)
    with pytest.raises(ValueError, match="memory update rejected"):
        memory.update(lambda doc: doc["failures"].append(doc["skills"][0]))
    with pytest.raises(ValueError, match="memory update rejected"):
        memory.update(lambda doc: doc["directives"].append(doc["skills"][0]))
    with pytest.raises(ValueError, match="duplicate failure seq"):
        memory.update(lambda doc: doc["failures"].append(dict(doc["failures"][0])))
    check(json.loads(memory.path.read_text()))


def test_values_given_to_memory_are_copied(workspace: Path) -> None:
    memory = Memory(workspace)
    probes = ["kept('a')"]
    memory.upsert_skill("kept", probes=probes)
    probes.append("changed later")
    memory.get_skill("kept")["probes"].append("changed by a reader")
    memory.upsert_skill("kept", description="unrelated")
    assert json.loads(memory.path.read_text())["skills"][0]["probes"] == ["kept('a')"]


def test_a_v1_memory_is_migrated_at_start_so_its_ids_hold(workspace: Path) -> None:
    from tests.test_memory_migration_lock import SEED_V1
    memory = Memory(workspace)
    memory.path.write_text(json.dumps(SEED_V1))
    memory.recover()
    assert json.loads(memory.path.read_text())["version"] == CURRENT_VERSION
    first = [d["id"] for d in memory.resumable_directives()]
    assert first == [d["id"] for d in Memory(workspace).resumable_directives()] and len(first) == 1


def test_a_legacy_log_with_odd_rows_does_not_block_a_start(workspace: Path) -> None:
    memory = Memory(workspace)
    memory.legacy_log_path.parent.mkdir(parents=True)
    rows = [{"seq": 1, "skill": "a", "category": "crash", "error": "e", "code_snippet": "", "timestamp": "t",
             "iteration": None}, {"seq": "2"}, [1, 2], {"seq": 3, "skill": None}]
    memory.legacy_log_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert memory.recover() == ["moved 2 logged failures from history/failures.jsonl into history/history.sqlite"]
    assert [f["seq"] for f in memory.failure_log()] == [1, 3]


# -- fixes: the change that resolved a failure --------------------------------------------------------

def fail(memory: Memory, directive_id: str | None, code: str, *, category: str = "failed_assertion",
         skill: str = "add_numbers", error: str = "AssertionError: assert 0 == 4") -> None:
    memory.record_failure(skill=skill, error=error, category=category, code_snippet=code, iteration=1,
                          directive_id=directive_id)


def test_record_fixes_puts_the_diff_on_the_directive_s_failures_in_both_stores(workspace: Path) -> None:
    memory = Memory(workspace, keep_failures=3)
    good = "def add(a, b):\n    return a + b\n"
    fail(memory, "aaaa00000001", "def add(a, b):\n    return a - b\n")  # seq 1: only in history by the end
    fail(memory, "aaaa00000001", "def add(a, b):\n    return a * b\n")
    fail(memory, "aaaa00000001", "", category="no_code")  # no code of its own: nothing to diff
    fail(memory, "bbbb00000002", "def add(a, b):\n    return b\n")  # another directive
    assert memory.record_fixes("aaaa00000001", good) == 2
    fixes = {f["seq"]: f.get("fix") for f in memory.failure_log()}
    assert fixes[1] == "--- failed\n+++ passed\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b"
    assert "-    return a * b\n+    return a + b" in fixes[2] and fixes[3] is None and fixes[4] is None
    recent = {f["seq"]: f.get("fix") for f in Memory(workspace).read()["failures"]}  # on disk
    assert recent == {2: fixes[2], 3: None, 4: None}
    assert memory.record_fixes("cccc00000003", good) == 0  # a directive that never failed: nothing written
    assert memory.record_fixes("bbbb00000002", "def add(a, b):\n    return b\n") == 0  # same code: no diff


def test_a_long_fix_is_cut_to_fit_the_schema(workspace: Path) -> None:
    memory = Memory(workspace)
    fail(memory, "aaaa00000001", "\n".join(f"x{i} = {i}" for i in range(400)))
    assert memory.record_fixes("aaaa00000001", "\n".join(f"y{i} = {i}" * 30 for i in range(400))) == 1
    (failure,) = memory.read()["failures"]
    assert len(failure["fix"]) <= FIX_MAX and failure["fix"].endswith("(diff cut)")
    assert failure["fix"].startswith("--- failed\n+++ passed\n@@")
    assert list(memory.failure_log())[0]["fix"] == failure["fix"]


def test_similar_fixed_failures_are_those_with_a_fix_one_per_directive(workspace: Path) -> None:
    memory = Memory(workspace)
    for i in range(4):  # unrelated failures, as a workspace has
        fail(memory, None, "x", skill="is_valid_json", error=f"JSONDecodeError: Expecting value: line {i}")
    fail(memory, "aaaa00000001", "return a - b", error="add_numbers(2, 2) returned 0, expected 4")
    fail(memory, "aaaa00000001", "return a * b", error="add_numbers(2, 3) returned 6, expected 5")
    fail(memory, "bbbb00000002", "return a", skill="add_floats", error="add_floats(1.5, 1) returned 1.5, expected 2.5")
    fail(memory, "cccc00000003", "return 0", skill="add_ints", error="add_ints(2, 2) returned 0, expected 4")
    memory.record_fixes("aaaa00000001", "return a + b")
    memory.record_fixes("bbbb00000002", "return a + b")
    query = "add_numbers(1, 3) returned 0, expected 4"
    found = memory.similar_failures(query, n=3, fixed=True)
    assert [f["seq"] for f in found] == [5, 7]  # the best of directive aaaa, then bbbb; cccc has no fix
    assert all(f["fix"] for f in found)
    assert [f["seq"] for f in memory.similar_failures(query, n=1, fixed=True)] == [5]
    assert 8 in [f["seq"] for f in memory.similar_failures(query, n=10)]  # without fixed: cccc's too
    assert memory.similar_failures("zzz", fixed=True) == []
