"""Verify what you load: every kept version's files carry their SHA-256 in its record; a file
that does not match (emptied, garbled, deleted, edited by hand) is never run, never rolled back
to, and :skills / :show say it is damaged and how to repair it. Driven at the REPL."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from agent import changes, versions
from agent.core import AutonomousAgent
from agent.errors import MemoryCorrupted, SkillDamaged
from agent.library import SkillLibrary
from agent.memory import Memory
from tests.conftest import FakeModel
from tests.test_faults import GOAL, SKILL, V2, session
from tests.test_loop import GOOD, PLAN


@pytest.fixture
def agent(workspace) -> AutonomousAgent:
    """add_numbers with v1 and v2 kept, v2 current and working."""
    agent = AutonomousAgent(workspace=workspace, model=FakeModel([PLAN, GOOD, PLAN, V2]))
    assert agent.run(GOAL).status == agent.run(GOAL).status == "working"
    return agent


def damage(path: Path, how: str) -> None:
    if how == "emptied":
        path.write_text("")
    elif how == "garbled":
        path.write_bytes(b"\xff\xfe\x00garbage" + path.read_bytes()[::-1])
    elif how == "deleted":
        path.unlink()
    elif how == "edited":
        path.write_text(path.read_text().replace("return", "return 0 *"))


ARCHIVE_ROWS = [("v1.py", "emptied", "damaged"), ("v1.py", "garbled", "damaged"), ("v1.py", "deleted", "missing"),
                ("v1_test.py", "emptied", "damaged"), ("v1_test.py", "deleted", "missing"),
                ("v1.py", "edited", "damaged")]


@pytest.mark.parametrize(("file", "how", "word"), ARCHIVE_ROWS)
def test_a_damaged_archive_is_never_rolled_back_to(agent, workspace, file, how, word):
    damage(workspace / "versions" / SKILL / file, how)
    before = agent.memory.get_skill(SKILL)
    out = session(agent, [f":rollback {SKILL} 1"])
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot roll {SKILL} back to v1: v1's kept file versions/{SKILL}/{file} is {word}"
                      + (" (it does not match its recorded hash)" if word == "damaged" else "")
                      + "; nothing was changed"], out
    after = agent.memory.get_skill(SKILL)
    assert (after["version"], after["status"]) == (before["version"], before["status"]) == (2, "working")
    assert "return b + a" in agent.library.source(SKILL)


@pytest.mark.parametrize("how", ["emptied", "garbled", "edited"])
def test_a_damaged_current_file_is_shown_damaged_never_run_and_repaired_by_rollback(agent, workspace, how):
    damage(workspace / "skills" / f"{SKILL}.py", how)
    out = session(agent, [":skills", f":show {SKILL}", f":run {SKILL} 1 2", f":test {SKILL}"])
    row = next(line for line in out.splitlines() if line.startswith(SKILL))
    assert row.split()[1] == "damaged", out
    why = (f"{SKILL} is damaged: skills/{SKILL}.py is not v2's kept file (damaged or changed by hand); "
           f"repair with :rollback {SKILL} 2 (or :forget {SKILL})")
    assert out.count(f"error: {why}") == 4, out  # :skills, :show, :run and :test say so; none runs it
    assert agent.memory.get_skill(SKILL)["status"] == "working"  # no run happened, no status changed
    out = session(agent, [f":rollback {SKILL} 2", f":run {SKILL} 1 2"])
    assert "add_numbers is v2 again: working" in out and out.rstrip().endswith("3"), out
    assert changes.damage(agent.library, SKILL, agent.memory.get_skill(SKILL)) is None


def test_a_damaged_current_archive_names_the_other_version(agent, workspace):
    damage(workspace / "versions" / SKILL / "v2.py", "emptied")
    with pytest.raises(SkillDamaged, match=rf"v2's kept file versions/{SKILL}/v2.py is damaged .*"
                                           rf"repair with :rollback {SKILL} 1 or :forget {SKILL}"):
        agent.call(SKILL, 1, 2)
    assert agent.rollback(SKILL, 1)["ok"] and agent.call(SKILL, 1, 2) == 3


def test_a_skill_importing_a_damaged_one_is_not_run(agent, workspace):
    agent.library.save("twice", f"from skills.{SKILL} import {SKILL}\n\n\ndef twice(a: int) -> int:\n"
                       f"    return {SKILL}(a, a)\n", "def test_it():\n    pass\n")
    agent.memory.upsert_skill("twice", status="working", dependencies=[SKILL], signature="twice(a: int) -> int")
    assert agent.call("twice", 2) == 4
    damage(workspace / "skills" / f"{SKILL}.py", "edited")
    with pytest.raises(SkillDamaged, match=f"twice imports {SKILL}, which is damaged"):
        agent.call("twice", 2)


def test_versions_kept_before_hashes_get_them_at_the_next_start(agent, workspace, tmp_path):
    old = tmp_path / "older"  # a copy: no agent lives on it
    shutil.copytree(workspace, old)
    doc = json.loads((old / "memory.json").read_text())
    for record in doc["skills"][0]["versions"]:
        del record["sha256"]
    doc["version"] = 5  # as an older agent wrote it
    (old / "memory.json").write_text(json.dumps(doc))
    again = AutonomousAgent(workspace=old, model=FakeModel())
    assert "recorded the content hashes of 2 kept versions" in again.notices
    assert all("sha256" in v for v in again.memory.get_skill(SKILL)["versions"])


def test_a_folder_in_a_skill_file_s_place_is_repaired_by_rollback_and_removed_by_forget(agent, workspace):
    module = workspace / "skills" / f"{SKILL}.py"
    module.unlink()
    module.mkdir()
    (module / "junk").write_text("x")
    out = session(agent, [f":rollback {SKILL} 2", f":run {SKILL} 1 2"])
    assert "add_numbers is v2 again: working" in out and out.rstrip().endswith("3"), out
    module.unlink()
    module.mkdir()
    out = session(agent, [f":forget {SKILL}", "y"])
    assert "Forgot add_numbers." in out and not module.exists(), out


def test_a_dependency_whose_file_is_gone_is_damaged_for_what_imports_it(agent, workspace):
    agent.library.save("twice", f"from skills.{SKILL} import {SKILL}\n\n\ndef twice(a: int) -> int:\n"
                       f"    return {SKILL}(a, a)\n", "def test_it():\n    pass\n")
    agent.memory.upsert_skill("twice", status="working", dependencies=[SKILL], signature="twice(a: int) -> int")
    (workspace / "skills" / f"{SKILL}.py").unlink()
    out = session(agent, [":run twice 2", f":show {SKILL}"])
    assert f"error: twice imports {SKILL}, which is damaged: skills/{SKILL}.py is not v2's kept file" in out, out
    assert f"error: {SKILL} is damaged: skills/{SKILL}.py is not v2's kept file" in out, out
    assert "no saved skill" not in out, out


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_memory_file_that_is_not_a_file_stops_the_start_in_one_line(tmp_path, kind):
    ws = tmp_path / "ws"
    ws.mkdir()
    if kind == "folder":
        (ws / "memory.json").mkdir()
    else:
        os.mkfifo(ws / "memory.json")  # opened without O_NONBLOCK, the start would wait forever
    with pytest.raises(MemoryCorrupted, match=r"memory.json is not a regular file; nothing was changed"):
        AutonomousAgent(workspace=ws, model=FakeModel())


def test_two_agents_saving_versions_at_once_never_share_a_number(agent, workspace):
    """Each save chooses its number under the skill's change lock (another agent waits)."""
    code = agent.library.source(SKILL)
    tests = agent.library.tests(SKILL)
    children = []
    for who in "ab":
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            status = 0
            try:
                memory, library = Memory(workspace), SkillLibrary(workspace)
                for i in range(4):
                    versions.keep(memory, library, SKILL, f"{code}\n# {who}{i}\n", tests, origin="directive",
                                  status="working", model="fake")
            except BaseException:  # noqa: BLE001 - reported through the exit status
                status = 1
            finally:
                os._exit(status)
        children.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in children)
    skill = agent.memory.get_skill(SKILL)
    numbers = [v["version"] for v in skill["versions"]]
    assert numbers == list(range(1, 11)) and skill["version"] in numbers
    assert changes.damage(agent.library, SKILL, skill) is None
    assert all(isinstance(changes.kept_files(agent.library, SKILL, v), tuple) for v in skill["versions"])
