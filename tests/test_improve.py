""":improve: ruff and a model review, then a change through the real loop and sandbox; a round is
kept as a version only if the old tests and the new ones pass. Scripted models."""

from __future__ import annotations

import pytest

from agent.errors import AgentError
from agent.improve import improvement_spec, lint
from tests.conftest import FakeModel
from tests.llm_servers import ollama_server  # noqa: F401  (fixture)
from tests.test_library import SHOUT
from tests.test_loop import make_agent
from tests.test_repl import MODEL, server, session  # noqa: F401  (server is a fixture)

UNUSED = "import os\n\n\ndef shout(text: str) -> str:\n    return text.upper()\n"


@pytest.fixture
def shout(workspace):
    model = FakeModel(["    return text.upper()\n"], chat=False)
    agent = make_agent(workspace, model, max_iter=2)
    assert agent.run(SHOUT).status == "working"
    return agent, model


def test_lint_reads_code_without_running_it():
    assert lint(UNUSED) == ["F401 1:8 `os` imported but unused"]
    assert lint("def f(:\n")[0].startswith("invalid-syntax 1:7")
    assert lint("def f(x: int) -> int:\n    return x\n") == []


def test_a_round_that_passes_old_and_new_tests_is_the_next_version(shout, workspace):
    agent, model = shout
    model.enqueue("Calls upper once; fine for empty text too.", "    return str.upper(text)\n")
    seen = []
    rounds = agent.improve("shout", "shout('b') == 'B'", on_round=lambda *a: seen.append(a))
    assert [(r.version, r.status) for r in rounds] == [(2, "working")]
    assert seen[0][0] == 1 and seen[0][2].startswith("1. Calls upper once")
    review, write = model.history[-2:]
    assert "# Code review of shout above." in review.prompt and "return text.upper()" in review.prompt
    assert "# To improve: 1. Calls upper once" in write.prompt
    skill = agent.memory.get_skill("shout")
    assert skill["version"] == 2 and skill["versions"][-1]["origin"] == "improve"
    assert skill["evidence"]["user_examples"] == 2  # the directive's example and the one asked for
    tests = (workspace / "skills" / "tests" / "test_shout.py").read_text()
    assert "shout('b')" in tests and "shout('a')" in tests
    assert "str.upper(text)" in (workspace / "skills" / "shout.py").read_text()


def test_a_round_that_breaks_the_old_tests_keeps_the_old_version_and_stops(shout, workspace):
    agent, model = shout
    v1 = (workspace / "skills" / "shout.py").read_text()
    model.enqueue("Lower-case is friendlier.", "    return text.lower()\n", "    return text.lower() + ''\n")
    rounds = agent.improve("shout", rounds=3)
    assert len(rounds) == 1 and rounds[0].version is None and rounds[0].status == "failed"
    assert rounds[0].message.startswith("kept v1: shout failed: no working version after 2 iterations")
    assert (workspace / "skills" / "shout.py").read_text() == v1
    assert agent.memory.get_skill("shout")["status"] == "working"
    assert agent.memory.get_skill("shout").get("version") in (None, 1)


def test_rounds_repeat_and_each_is_a_version(shout):
    agent, model = shout
    model.enqueue("none", "    return text.upper() if text else ''\n",
                  "none", "    return ''.join(ch.upper() for ch in text)\n")
    rounds = agent.improve("shout", rounds=2)
    assert [r.version for r in rounds] == [2, 3]
    assert [v["inherited"] for v in agent.memory.get_skill("shout")["versions"][1:]] == [[1], [2, 1]]


def test_improve_needs_a_saved_skill_and_sane_rounds(shout):
    agent, _ = shout
    with pytest.raises(AgentError, match="no saved skill named 'nosuch'"):
        agent.improve("nosuch")
    with pytest.raises(AgentError, match="--rounds is 1 to 20"):
        agent.improve("shout", rounds=0)


def test_a_chat_model_sees_the_code_the_lint_and_the_review(workspace, server):  # noqa: F811
    (workspace / "skills").mkdir(parents=True)
    model = FakeModel(["```python\n" + UNUSED + "```"], chat=True)
    plan = ('{"name": "shout", "signature": "shout(text: str) -> str", "description": "Upper-case text.", '
            '"examples": [{"call": "shout(\'a\')", "result": "\'A\'"}], '
            '"tests": "from shout import shout\\n\\ndef test_a():\\n    assert shout(\'a\') == \'A\'\\n"}')
    model.queue.appendleft(plan)
    assert make_agent(workspace, model).run("Create a skill that shouts").status == "working"
    server.enqueue("1. Remove the unused import os.",
                   "```python\ndef shout(text: str) -> str:\n    return text.upper()\n```")
    code, out = session(workspace, [":improve shout", ":improve", ":improve shout --rounds x", ":quit"],
                        "--model", MODEL)
    assert "ROUND   1/1 · ruff: 1 finding" in out and "F401 1:8 `os` imported but unused" in out
    assert "REVIEW  1. Remove the unused import os." in out and "round 1: kept v2 (working)" in out
    assert out.count("error: usage: :improve <skill> [what] [--rounds N]") == 2
    write = server.bodies("/api/chat")[-1]["messages"][-1]["content"]
    assert "This is the current version of the module" in write and "import os" in write
    assert "ruff: F401 1:8 `os` imported but unused" in write and "Remove the unused import os." in write
    assert "import os" not in (workspace / "skills" / "shout.py").read_text()


def test_held_back_examples_stay_out_of_the_prompt_and_examples_count_once(workspace):
    model = FakeModel(["    return text.upper()\n"], chat=False)
    agent = make_agent(workspace, model, max_iter=2)
    goal = "Create a skill `shout(text: str) -> str`, e.g. shout('a') == 'A', shout('b') == 'B', shout('zz') == 'ZZ'"
    assert agent.run(goal).status == "working"
    evidence = agent.memory.get_skill("shout")["evidence"]
    held = evidence["held_back"]
    assert held == 1
    model.enqueue("none", "    return text.upper() + ''\n", "none", "    return str(text).upper()\n")
    rounds = agent.improve("shout", "shout('q') == 'Q'", rounds=2)
    assert [r.version for r in rounds] == [2, 3]
    writes = [r.prompt for r in model.history if "Code review" not in r.prompt][-2:]
    kept_back = next(c for c in ("shout('a')", "shout('b')", "shout('zz')") if c not in model.history[0].prompt)
    assert all(kept_back not in prompt for prompt in writes)
    after = agent.memory.get_skill("shout")["evidence"]
    assert after["held_back"] == held and after["user_examples"] == evidence["user_examples"] + 1
    tests = (workspace / "skills" / "tests" / "test_shout.py").read_text()
    assert tests.count("got = shout('q')") == 1 and tests.count(f"got = {kept_back}") == 1
    spec = improvement_spec(agent.memory.get_skill("shout"), tests, "")  # what a chat model is shown
    assert kept_back not in spec["tests"] and [h["call"] for h in spec["holdout"]] == [kept_back]
