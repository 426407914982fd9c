"""The skill library grows: skills import each other, a change retests what imports it, a
directive for an existing name makes a version, rollback and forget. Real loop, memory and
sandbox; a scripted completion model (its replies are function bodies)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.errors import AgentError
from safety import Decision
from tests.conftest import FakeModel
from tests.llm_servers import ollama_server  # noqa: F401  (fixture)
from tests.test_loop import make_agent
from tests.test_repl import MODEL, server, session  # noqa: F401  (server is a fixture)

SHOUT = "Create a skill `shout(text: str) -> str`, e.g. shout('a') == 'A'"
BANG = "Create a skill `shout_bang(text: str) -> str` that shouts text, e.g. shout_bang('a') == 'A!'"


@pytest.fixture
def library(workspace):
    """shout (v1) and shout_bang, which imports it: both working."""
    model = FakeModel(["    return text.upper()\n", "    return shout(text) + '!'\n"], chat=False)
    agent = make_agent(workspace, model)
    assert agent.run(SHOUT).status == "working"
    assert agent.run(BANG).status == "working"
    return agent, model


def test_a_skill_imports_another_in_the_sandbox_and_its_dependency_is_recorded(library, workspace):
    agent, model = library
    assert "from skills.shout import shout  # shout(text: str) -> str" in model.history[-1].prompt
    assert (workspace / "skills" / "shout_bang.py").read_text().startswith("from skills.shout import shout\n")
    assert agent.memory.get_skill("shout_bang")["dependencies"] == ["shout"]
    assert agent.memory.get_skill("shout")["dependencies"] == []
    assert agent.retest("shout_bang")["ok"]  # its doctests and tests import skills.shout in the sandbox


def test_a_users_own_script_in_the_workspace_imports_skills(library, workspace):
    (workspace / "use_skills.py").write_text("from skills.shout_bang import shout_bang\nprint(shout_bang('hi'))\n")
    done = subprocess.run([sys.executable, "use_skills.py"],  # noqa: S603
                          cwd=workspace, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "HI!\n"), done.stderr


def test_a_compatible_new_version_is_kept_and_its_dependents_retested(library, workspace):
    agent, model = library
    model.enqueue("    return ''.join(c.upper() for c in text)\n")
    result = agent.run(SHOUT)
    assert (result.status, result.reason) == ("working", "passed")
    skill = agent.memory.get_skill("shout")
    assert skill["version"] == 2 and [v["version"] for v in skill["versions"]] == [1, 2]
    assert skill["versions"][1]["inherited"] == [1] and skill["versions"][1]["model"] == "fake:scripted"
    assert "join" in (workspace / "skills" / "shout.py").read_text()
    assert "upper()" in (workspace / "versions" / "shout" / "v1.py").read_text()
    retests = [e for e in agent.events if e.phase == "RETEST"]
    assert [e.message for e in retests] == ["shout_bang (imports shout): working"]


def test_an_incompatible_version_is_not_kept_unless_the_user_says_replace(library, workspace):
    agent, model = library
    v1 = (workspace / "skills" / "shout.py").read_text()
    lower = "Create a skill `shout(text: str) -> str`, e.g. shout('A') == 'a'"
    model.enqueue("    return text.lower()\n")
    result = agent.run(lower)
    assert (result.status, result.reason) == ("failed", "incompatible")
    assert "kept v1" in result.message and "fails v1's tests" in result.message
    assert (workspace / "skills" / "shout.py").read_text() == v1
    assert agent.memory.get_skill("shout")["status"] == "working"
    assert [v["version"] for v in agent.memory.get_skill("shout")["versions"]] == [1]

    asked = []
    model.enqueue("    return text.lower()\n")
    result = agent.run(lower, replace=lambda name, why: asked.append((name, why)) or True)
    assert (result.status, result.reason) == ("working", "passed") and asked[0][0] == "shout"
    skill = agent.memory.get_skill("shout")
    assert skill["version"] == 2 and skill["versions"][1]["origin"] == "replace"
    assert skill["versions"][1]["inherited"] == []
    # shout_bang('a') is now 'a!': what imports shout is retested and marked
    assert agent.memory.get_skill("shout_bang")["status"] == "broken_dependency"
    assert any(e.phase == "RETEST" and "broken_dependency" in e.message for e in agent.events)

    report = agent.rollback("shout")
    assert report["ok"] and (workspace / "skills" / "shout.py").read_text() == v1
    assert agent.memory.get_skill("shout")["version"] == 1
    assert agent.memory.get_skill("shout_bang")["status"] == "working"
    with pytest.raises(AgentError, match="no version before v1"):
        agent.rollback("shout")
    with pytest.raises(AgentError, match="no version 7"):
        agent.rollback("shout", 7)


def test_forget_refuses_while_others_import_it_unless_forced(library, workspace):
    agent, _ = library
    with pytest.raises(AgentError, match="imported by shout_bang"):
        agent.forget("shout")
    assert agent.forget("shout", force=True) == ["shout_bang"]
    assert agent.memory.get_skill("shout") is None
    assert not (workspace / "skills" / "shout.py").exists() and not (workspace / "versions" / "shout").exists()
    assert agent.memory.get_skill("shout_bang")["status"] == "broken_dependency"
    with pytest.raises(AgentError, match="no skill named"):
        agent.forget("shout")


def test_the_gates_read_the_skills_a_run_imports(library, workspace):
    """A dependency's needs are the run's needs: importing a skill that opens sockets asks for
    the network, and a denial blocks the run before any code runs."""
    agent, _ = library
    (workspace / "skills" / "fetcher.py").write_text(
        "import socket\n\n\ndef fetcher(host: str) -> str:\n    return socket.gethostbyname(host)\n")
    asked = []
    agent.approvals.ask = lambda request: asked.append(request) or Decision.DENY
    code = "from skills.fetcher import fetcher\n\n\ndef lookup(host: str) -> str:\n    return fetcher(host)\n"
    outcome = agent.execute("lookup", code, "from lookup import lookup\n\ndef test_x():\n    assert lookup\n")
    assert outcome.blocked and "network" in (outcome.reason or "")
    assert [r.need for r in asked] == ["network"]
    assert any(f.filename == "skills/fetcher.py" for f in outcome.verdict.findings)


def test_skills_saved_before_versions_become_version_1(library, workspace):
    agent, _ = library
    agent.memory.update(lambda doc: [s.pop("versions") and s.pop("version") for s in doc["skills"]])
    kept = agent.versions("shout")
    assert [(v["version"], v["origin"]) for v in kept] == [(1, "existing")]
    assert (workspace / "versions" / "shout" / "v1_test.py").is_file()


def test_versions_rollback_and_forget_at_the_prompt(library, workspace, server):  # noqa: F811
    agent, model = library
    model.enqueue("    return ''.join(c.upper() for c in text)\n")
    assert agent.run(SHOUT).status == "working"
    code, out = session(workspace, [":versions shout", ":rollback shout", ":versions shout",
                                    ":forget shout", ":forget shout_bang", "n", ":forget shout_bang", "y",
                                    ":rollback shout x", ":versions nosuch", ":quit"], "--model", MODEL)
    lines = out.splitlines()
    v2_rows = [line for line in lines if " v2 " in line]
    assert v2_rows[0].startswith("*") and "directive" in v2_rows[0] and "fake:scripted" in v2_rows[0]
    assert "shout is v1 again: working" in out
    assert any(line.startswith("*") and " v1 " in line for line in lines)
    assert "error: shout is imported by shout_bang" in out
    assert "Forget shout_bang (1 version, its tests and grants)? [y/N]: n" in out and "Kept." in out
    assert "Forgot shout_bang." in out and agent.memory.get_skill("shout_bang") is None
    assert "error: usage: :rollback <skill> [version]" in out and "error: no skill named 'nosuch'" in out
    assert code == 0  # an interactive session exits 0 whatever its lines did


def test_the_prompt_asks_before_replacing_an_incompatible_version(library, workspace, server):  # noqa: F811
    plan = json.dumps({"name": "shout", "signature": "shout(text: str) -> str", "description": "Lower-case text.",
                       "examples": [{"call": "shout('A')", "result": "'a'"}], "tests": ""})
    server.enqueue(plan, "```python\ndef shout(text: str) -> str:\n    return text.lower()\n```")
    code, out = session(workspace, [":directive Create a skill `shout(text: str) -> str`, e.g. shout('A') == 'a'",
                                    "y", ":quit"], "--model", MODEL)
    assert "passed its own tests, but it fails v1's tests" in out
    assert "Replace the current shout with it" in out and "replaces v1, as you asked" in out
    assert library[0].memory.get_skill("shout")["version"] == 2
    assert library[0].memory.get_skill("shout_bang")["status"] == "broken_dependency"


def test_one_ranker_orders_by_bm25_and_breaks_ties_newest_first():
    from agent.rank import rank, tokens

    assert tokens("json_validator AssertionError") == ["json", "validator", "assertion", "error"]
    docs = ["parse csv rows", "validate json text", "json json json validate", "unrelated words"]
    assert rank("validate json", docs) == [2, 1]
    assert rank("csv", docs, n=1) == [0] and rank("zzz", docs) == [] and rank("", docs) == []
    assert rank("same", ["same words", "same words"]) == [1, 0]  # equal scores: the later one first


@pytest.mark.parametrize("how", [
    "from runner import runner",  # the form skills used before the package
    "import skills.runner as r",
    "from skills import runner",
])
def test_every_way_to_import_a_saved_skill_is_gated(library, workspace, how):
    """What a run imports is gated with it, however it is imported; a string naming a skill
    (pytest.importorskip, mock.patch) counts as an import too, and importorskip itself is blocked."""
    agent, _ = library
    (workspace / "skills" / "runner.py").write_text(
        "import subprocess\n\n\ndef runner() -> str:\n    return subprocess.run(['id'], capture_output=True).stdout\n")
    asked = []
    agent.approvals.ask = lambda request: asked.append(request.need) or Decision.DENY
    code = f"{how}\n\n\ndef user() -> int:\n    return 1\n"
    outcome = agent.execute("user", code, "from user import user\n\ndef test_x():\n    assert user() == 1\n")
    assert outcome.blocked and asked == ["shell"], outcome.reason


def test_a_skill_named_in_a_string_is_a_dependency_and_importorskip_is_blocked(library, workspace):
    from agent.library import dependencies

    assert dependencies("import x\nt = 'skills.shout.upper'\n", {"shout"}, strings=True) == ["shout"]
    assert dependencies('"""Unlike skills.shout, reads skills.txt."""\n', {"shout"}) == []  # recorded: imports only
    assert dependencies('"""Reads skills.txt."""\n', {"shout"}, strings=True) == []
    assert dependencies("from shout import shout\n", {"shout"}) == ["shout"]
    assert dependencies("from shout import shout\n") == []
    agent, _ = library
    tests = "import pytest\n\ndef test_x():\n    pytest.importorskip('skills.shout')\n"
    outcome = agent.execute("user", "def user() -> int:\n    return 1\n", tests)
    assert outcome.blocked and "pytest.importorskip" in (outcome.reason or "")


def test_a_long_model_name_is_clipped_and_a_rejected_record_leaves_the_files(library, workspace):
    long_name = "gguf:/" + "deep/" * 60 + "model.gguf"
    agent = make_agent(workspace, FakeModel(["    return ''.join(c.upper() for c in text)\n"], chat=False,
                                            name=long_name))
    assert agent.run(SHOUT).status == "working"
    record = agent.memory.get_skill("shout")["versions"][-1]
    assert record["version"] == 2 and len(record["model"]) == 200
    before = (workspace / "skills" / "shout.py").read_text()
    from agent import versions

    with pytest.raises(ValueError):  # memory refuses the record (status not in the schema)
        versions.keep(agent.memory, agent.library, "shout", "def shout(text: str) -> str:\n    return text\n",
                      "", origin="directive", status="great", model=None)
    assert (workspace / "skills" / "shout.py").read_text() == before


def test_rollback_restores_the_signature_and_description(library, workspace):
    agent, model = library
    goal = "Create a skill `shout(text: str, times: int) -> str` that repeats it loud, e.g. shout('a', 2) == 'AA'"
    model.enqueue("    return text.upper() * times\n")
    assert agent.run(goal, replace=True).status == "working"
    assert agent.memory.get_skill("shout")["signature"] == "shout(text: str, times: int) -> str"
    agent.rollback("shout", 1)
    skill = agent.memory.get_skill("shout")
    assert skill["signature"] == "shout(text: str) -> str" and skill["version"] == 1


@pytest.mark.parametrize("name, made", [("__init__", "init"), ("__main__", "main"), ("skills", "skills_skill"),
                                        ("conftest", "conftest_skill"), ("___", "skill"), ("__json__", "json_skill")])
def test_a_new_skill_never_takes_a_name_the_package_or_pytest_needs(name, made):
    """A planned name is renamed (a skill named __init__ would be the skills package itself); a
    skill saved under such a name before stays usable: validation is the pattern only."""
    from agent.spec import module_name
    from safety.paths import validate_skill_name

    assert module_name(name) == made and validate_skill_name(name) == name


def test_a_dunder_name_in_a_directive_makes_a_plain_skill(workspace):
    agent = make_agent(workspace, FakeModel(["    return x + 1\n"], chat=False))
    result = agent.run("Create a skill `__init__(x: int) -> int`, e.g. __init__(1) == 2")
    assert (result.status, result.skill) == ("working", "init")
    assert (workspace / "skills" / "__init__.py").read_text().startswith('"""The agent')


def test_an_argument_without_a_repr_is_one_line(library):
    with pytest.raises(AgentError) as caught:
        library[0].call("shout", 10 ** 5000)
    assert str(caught.value) == ("cannot call shout(...): an argument has an int of more than 4,300 digits "
                                 "(at most 4,300)")
