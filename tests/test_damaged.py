"""Verify what you load: every kept version's files carry their SHA-256 in its record; a file
that does not match (emptied, garbled, deleted, edited by hand) is never run, never rolled back
to, and :skills / :show say it is damaged and how to repair it. Driven at the REPL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent import changes
from agent.core import AutonomousAgent
from agent.errors import SkillDamaged
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
