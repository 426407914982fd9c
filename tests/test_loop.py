"""The loop, end to end through the real graph, memory and sandbox, with a scripted model."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3

import pytest

from agent import planner
from agent.analysis import headline
from agent.config import Settings
from agent.core import AutonomousAgent
from agent.errors import AgentError, ModelUnavailable, SkillDamaged
from tests.conftest import FakeModel

PLAN = json.dumps({
    "name": "add_numbers", "signature": "add_numbers(a: int, b: int) -> int",
    "description": "Add two integers.",
    "examples": [{"call": "add_numbers(1, 2)", "result": "3"}],
    "tests": "from add_numbers import add_numbers\n\ndef test_add():\n    assert add_numbers(2, 2) == 4\n\n"
             "def test_negative():\n    assert add_numbers(-1, 1) == 0\n",
})
GOOD = "```python\ndef add_numbers(a: int, b: int) -> int:\n    \"\"\"Add two integers.\n\n" \
       "    >>> add_numbers(1, 2)\n    3\n    \"\"\"\n    return a + b\n```"
WRONG = "```python\ndef add_numbers(a: int, b: int) -> int:\n    return a - b\n```"
SYNTAX = "```python\ndef add_numbers(a: int, b: int) -> int:\n    return a +\n```"


def make_agent(workspace, model, **kwargs) -> AutonomousAgent:
    events: list = []
    agent = AutonomousAgent(workspace=workspace, model=model, on_event=events.append, **kwargs)
    agent.events = events  # type: ignore[attr-defined]
    return agent


def test_good_code_first_time(workspace):
    model = FakeModel([PLAN, GOOD])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.reason, result.iterations) == ("working", "passed", 1)
    assert result.path == workspace.resolve() / "skills" / "add_numbers.py"
    assert "return a + b" in result.path.read_text()
    assert "def test_add" in (workspace / "skills" / "tests" / "test_add_numbers.py").read_text()
    skill = agent.memory.get_skill("add_numbers")
    assert skill["status"] == "working" and skill["last_tested"] and skill["sandbox_level"]
    directive = agent.memory.read()["directives"][-1]
    assert (directive["status"], directive["reason"], directive["iterations"]) == ("done", "passed", 1)
    assert [e.phase for e in agent.events] == ["PLAN", "WRITE", "TEST", "ANALYZE", "SAVE"]
    calls = [json.loads(line) for line in (workspace / "history" / "model_calls.jsonl").read_text().splitlines()]
    assert [c["phase"] for c in calls] == ["plan", "write"]
    assert all(c["directive_id"] == directive["id"] and c["tokens_out"] > 0 for c in calls)
    # the model was asked to plan the goal, then to implement the planned stub and tests
    assert "Create a skill that adds two numbers" in model.prompts()[0]
    assert "def add_numbers(a: int, b: int) -> int:" in model.prompts()[1]
    assert "assert add_numbers(2, 2) == 4" in model.prompts()[1]


def test_broken_then_fixed_feeds_the_failure_back(workspace):
    model = FakeModel([PLAN, WRONG, GOOD])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.iterations) == ("working", 2)
    retry_prompt = model.prompts()[2]
    assert "failed with failed_assertion" in retry_prompt
    assert "return a - b" in retry_prompt  # the previous code is shown
    failures = agent.memory.read()["failures"]
    assert [f["category"] for f in failures] == ["failed_assertion"]


def test_never_fixed_stops_at_the_cap(workspace):
    wrong_variants = [WRONG.replace("a - b", f"a - b - {i}") for i in range(3)]
    model = FakeModel([PLAN, *wrong_variants])
    agent = make_agent(workspace, model, max_iter=3)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.reason, result.iterations) == ("failed", "iteration_cap", 3)
    assert agent.memory.get_skill("add_numbers")["status"] == "failed"
    assert not (workspace / "skills" / "add_numbers.py").exists()
    assert agent.memory.read()["directives"][-1]["reason"] == "iteration_cap"
    assert len(model.history) == 4  # one plan + exactly three writes


def test_garbage_replies_count_as_failed_iterations(workspace):
    model = FakeModel([PLAN, "I cannot help with that.", "```\nnot python at all(\n```", GOOD])
    agent = make_agent(workspace, model, max_iter=5)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.iterations) == ("working", 3)
    categories = [f["category"] for f in agent.memory.read()["failures"]]
    assert categories == ["no_code", "no_code"]
    assert "no usable ```python block" in model.prompts()[2]


def test_garbage_after_a_partial_success_keeps_the_better_version(workspace):
    half = "```python\ndef add_numbers(a: int, b: int) -> int:\n    return 4 if a == 2 else 99\n```"
    model = FakeModel([PLAN, half, "no code here", "still nothing"])
    agent = make_agent(workspace, model, max_iter=3)
    result = agent.run("Create a skill that adds two numbers")
    assert result.reason == "iteration_cap"
    # the garbage replies did not replace the version that passed one test
    assert "return 4 if a == 2 else 99" in agent.memory.read()["failures"][-1]["code_snippet"]


def test_same_failure_with_same_code_stops_early(workspace):
    model = FakeModel([PLAN, SYNTAX, SYNTAX, SYNTAX, SYNTAX])
    agent = make_agent(workspace, model, max_iter=10)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.reason, result.iterations) == ("failed", "no_progress", 2)
    assert agent.memory.read()["failures"][0]["category"] == "syntax_error"
    # iteration 2 resampled twice (hotter each time) before testing the repeat once more
    assert len(model.history) == 5
    assert [r.temperature for r in model.history[2:]] == [0.25, 0.55, 0.85]


def test_a_syntax_error_never_runs_but_is_fed_back_for_a_retry(workspace):
    model = FakeModel([PLAN, SYNTAX, GOOD])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.iterations) == ("working", 2)
    test_event = next(e for e in agent.events if e.phase == "TEST")
    assert test_event.message == "not run: SyntaxError in add_numbers.py: does not parse: invalid syntax (line 2)"
    retry_prompt = model.prompts()[2]
    assert "failed with syntax_error" in retry_prompt and "invalid syntax (line 2)" in retry_prompt
    assert [f["category"] for f in agent.memory.read()["failures"]] == ["syntax_error"]


def test_a_repeated_failed_version_is_resampled_not_retested(workspace):
    model = FakeModel([PLAN, WRONG, WRONG, GOOD])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.iterations) == ("working", 2)
    assert "1 resample: repeated a failed version" in agent.events[4].message
    assert [e.phase for e in agent.events].count("TEST") == 2


def test_unusable_plan_ends_with_no_plan(workspace):
    model = FakeModel(["no json here", "{still not json"])
    agent = make_agent(workspace, model)
    result = agent.run("Create something vague")
    assert (result.status, result.reason) == ("failed", "no_plan")


def test_skill_name_is_imposed_on_the_plan(workspace):
    model = FakeModel([PLAN.replace("add_numbers", "adder"), GOOD.replace("add_numbers", "adder")])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers", skill_name="adder")
    assert result.skill == "adder" and result.ok
    assert "must be named adder" in model.prompts()[0]


def test_model_unavailable_leaves_the_directive_pending(workspace):
    model = FakeModel([ModelUnavailable("Ollama does not answer at http://x:1; start it with `ollama serve`")])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.reason) == ("pending", "model_unavailable")
    assert "ollama serve" in result.message
    assert [d["status"] for d in agent.memory.pending_directives()] == ["pending"]


def test_interrupt_records_the_directive_as_interrupted(workspace):
    model = FakeModel([PLAN, KeyboardInterrupt()])
    agent = make_agent(workspace, model)
    with pytest.raises(KeyboardInterrupt):
        agent.run("Create a skill that adds two numbers")
    directive = agent.memory.read()["directives"][-1]
    assert (directive["status"], directive["reason"]) == ("interrupted", "interrupted")


@pytest.mark.parametrize("goal", ["", "   "])
def test_empty_goal_is_refused_before_any_work(workspace, goal):
    agent = make_agent(workspace, FakeModel())
    with pytest.raises(AgentError, match="needs a goal"):
        agent.run(goal)
    assert agent.memory.read()["directives"] == []


def test_run_many_lets_later_skills_reuse_earlier_ones(workspace):
    plan2 = json.dumps({
        "name": "add_three", "signature": "add_three(a: int, b: int, c: int) -> int",
        "description": "Add three integers using add_numbers.", "examples": [],
        "tests": "from add_three import add_three\n\ndef test_it():\n    assert add_three(1, 2, 3) == 6\n"})
    code2 = ("```python\nfrom add_numbers import add_numbers\n\n"
             "def add_three(a: int, b: int, c: int) -> int:\n    return add_numbers(add_numbers(a, b), c)\n```")
    model = FakeModel([PLAN, GOOD, plan2, code2])
    agent = make_agent(workspace, model)
    results = agent.run_many(["Create a skill that adds two numbers", "Add three numbers with add numbers"])
    assert [r.status for r in results] == ["working", "working"]
    assert "add_numbers(a: int, b: int) -> int: Add two integers." in model.prompts()[2]


def test_retest_reruns_a_saved_skill(workspace):
    agent = make_agent(workspace, FakeModel([PLAN, GOOD]))
    agent.run("Create a skill that adds two numbers")
    assert agent.retest("add_numbers")["ok"]
    (workspace / "skills" / "add_numbers.py").write_text("def add_numbers(a, b):\n    return 0\n")
    with pytest.raises(SkillDamaged, match=r"skills/add_numbers.py is not v1's kept file .*:rollback add_numbers 1"):
        agent.retest("add_numbers")  # a file that is not what was kept is never run
    assert agent.memory.get_skill("add_numbers")["status"] == "working"  # no run happened
    report = agent.rollback("add_numbers", 1)  # the repair: v1's kept files back in skills/
    assert report["ok"] and "return a + b" in agent.library.source("add_numbers")


def test_a_malicious_reply_is_blocked_and_the_user_told_why(workspace):
    evil = "```python\nimport os\n\ndef add_numbers(a: int, b: int) -> int:\n" \
           "    os.system('rm -rf ~')\n    return a + b\n```"
    model = FakeModel([PLAN, evil])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.reason, result.iterations) == ("blocked", "blocked", 1)
    assert "os.system" in result.message
    assert agent.memory.read()["failures"][-1]["category"] == "blocked"
    assert not (workspace / "skills" / "add_numbers.py").exists()


def test_an_obfuscated_escape_that_passes_the_gates_is_contained(workspace, tmp_path):
    canary = tmp_path / "outside" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text("untouched")
    parts = [part for part in canary.parts if part != "/"]
    sneaky = ("```python\ndef add_numbers(a: int, b: int) -> int:\n"
              f"    path = '/'.join(['', *{parts!r}])\n"
              "    fn = open\n    fn(path, 'w').write('pwned')\n    return a + b\n```")
    model = FakeModel([PLAN, sneaky, GOOD])
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill that adds two numbers")
    assert result.ok and result.iterations == 2  # the escape failed at run time; the retry worked
    assert canary.read_text() == "untouched"
    failure = agent.memory.read()["failures"][-1]
    assert failure["category"] == "crash"
    assert re.search("FileNotFoundError|PermissionError|Read-only file system", failure["error"]), failure


# -- past fixes: a failure's fix is recorded when its directive passes, and shown to later fix prompts

FLOAT_PLAN = json.dumps({
    "name": "add_floats", "signature": "add_floats(a: float, b: float) -> float",
    "description": "Add two floats.", "examples": [],
    "tests": "from add_floats import add_floats\n\ndef test_add():\n    assert add_floats(2.0, 2.0) == 4.0\n"})
FLOAT_WRONG = "```python\ndef add_floats(a: float, b: float) -> float:\n    return a - b\n```"
FLOAT_GOOD = "```python\ndef add_floats(a: float, b: float) -> float:\n    return a + b\n```"
FIXED_BEFORE = "Similar failures were fixed before"


@pytest.mark.parametrize("past_fixes", [True, False])
def test_a_failure_s_fix_is_recorded_and_shown_when_a_later_directive_fails_alike(workspace, past_fixes):
    model = FakeModel([PLAN, WRONG, GOOD, FLOAT_PLAN, FLOAT_WRONG, FLOAT_GOOD])
    agent = make_agent(workspace, model, settings=Settings(past_fixes=past_fixes))
    assert agent.run("Create a skill that adds two numbers").iterations == 2
    (failure,) = agent.memory.read()["failures"]
    assert failure["fix"].startswith("--- failed\n+++ passed\n@@")
    assert "-    return a - b\n+    \"\"\"Add two integers." in failure["fix"] and "+    return a + b" in failure["fix"]
    with contextlib.closing(sqlite3.connect(workspace / "history" / "history.sqlite")) as conn:
        assert conn.execute("SELECT seq, fix FROM failures").fetchall() == [(1, failure["fix"])]

    assert agent.run("Create a skill that adds two floats").iterations == 2
    prompts = model.prompts()
    assert FIXED_BEFORE not in prompts[4]  # its first version: nothing has failed yet
    retry = prompts[5]
    assert "failed with failed_assertion" in retry and "return a - b" in retry
    if past_fixes:
        assert f"- add_numbers (failed_assertion): {headline(failure['error'])}" in retry
        assert f"```diff\n{failure['fix']}\n```" in retry
    else:
        assert FIXED_BEFORE not in retry and failure["fix"] not in retry
    fixes = [f["fix"] for f in agent.memory.read()["failures"]]
    assert fixes[1] == "--- failed\n+++ passed\n@@ -1,2 +1,2 @@\n def add_floats(a: float, b: float) -> float:\n" \
                       "-    return a - b\n+    return a + b"


@pytest.mark.parametrize("past_fixes", [True, None])
def test_a_completion_model_s_fix_comment_shows_the_lines_a_similar_fix_added(workspace, past_fixes):
    """Only when asked: by default (None, auto) a completion model is not shown past fixes,
    which raised iterations on the embedded model (bench/bench_fixes.py)."""
    model = FakeModel(["    return len(text)\n", "    return text.count('a')\n",
                       "    return len(text)\n", "    return text.count('b')\n"], chat=False)
    agent = make_agent(workspace, model, settings=Settings(past_fixes=past_fixes))
    first = agent.run("Create a skill `count_as(text: str) -> int` that counts the letter a, "
                      "e.g. count_as('banana') == 3")
    second = agent.run("Create a skill `count_bs(text: str) -> int` that counts the letter b, "
                       "e.g. count_bs('bob') == 2")
    assert (first.iterations, second.iterations) == (2, 2)
    retry = model.history[-1].prompt
    assert "    # The last version was wrong: count_bs('bob') returned 3, expected 2\n" in retry
    assert ("    # A similar error in count_as was fixed by writing:\n"
            "    #     return text.count('a')\n" in retry) is bool(past_fixes)


def test_a_completion_model_s_first_version_continues_the_stub_and_a_fix_gets_the_few_shot_file(workspace):
    """A base model writes a first version as it continues a file: the stub alone (what HumanEval's
    first try does too). A fix gets the few-shot solutions and a comment on what went wrong."""
    model = FakeModel(["    return len(text)\n", "    return text.count('a')\n"], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run("Create a skill `count_as(text: str) -> int` that counts the letter a, "
                       "e.g. count_as('banana') == 3")
    assert (result.status, result.iterations) == ("working", 2)
    first, fix = model.history[-2].prompt, model.history[-1].prompt
    assert first.startswith("def count_as(text: str) -> int:") and "standard library solutions" not in first
    assert "standard library solutions" in fix and "count_as('banana') returned 6, expected 3" in fix


def test_a_skill_made_again_is_not_offered_to_itself_as_an_import(workspace):
    model = FakeModel([PLAN, GOOD, PLAN, GOOD])
    agent = make_agent(workspace, model)
    assert [agent.run("Create a skill that adds two numbers").status for _ in range(2)] == ["working", "working"]
    assert "Existing skills you may import" not in model.prompts()[3]  # itself: a circular import


def test_a_plan_prompt_shows_a_similar_past_failure_with_its_fix():
    model = FakeModel([PLAN])
    failure = {"skill": "add_numbers", "category": "failed_assertion", "error": "assert 0 == 4",
               "fix": "--- failed\n+++ passed\n@@ -1,2 +1,2 @@\n-    return a - b\n+    return a + b"}
    spec = planner.plan_chat("Create a skill that adds two numbers", None,
                             lambda request, phase: model.generate(request), skills=[], failures=[failure])
    assert spec is not None
    assert ("- add_numbers: failed_assertion: assert 0 == 4\n  fixed by:\n```diff\n--- failed\n+++ passed\n"
            "@@ -1,2 +1,2 @@\n-    return a - b\n+    return a + b\n```") in model.prompts()[0]


def test_a_fix_is_recorded_only_for_a_kept_version_and_never_offered_to_its_own_directive(workspace):
    """The user rejects a passing version: the retry must not be shown that version as the
    "fix" of the directive's own failure. A version not kept (incompatible) fixes nothing."""
    from tests.test_verdict import GRAMMAR_PLAN, JSON_BODY

    model = FakeModel([GRAMMAR_PLAN, "    return text.nosuch()\n", "    return len(text) > 3\n", JSON_BODY],
                      chat=False)
    agent = make_agent(workspace, model, settings=Settings(past_fixes=True))
    result = agent.run("Create a JSON validator skill", confirm=lambda skill, observed: ["True"])
    assert result.status == "working"
    assert "was fixed by writing" not in model.history[-1].prompt
    fixes = [f.get("fix", "") for f in agent.memory.read()["failures"]]
    assert fixes and all("json.loads" in fix for fix in fixes)  # fixed by the version kept, not the rejected one

    model.enqueue("    return text.upper()\n", "    return text.nosuch()\n", "    return text.lower()\n")
    assert agent.run("Create a skill `shout(text: str) -> str`, e.g. shout('a') == 'A'").status == "working"
    result = agent.run("Create a skill `shout(text: str) -> str`, e.g. shout('A') == 'a'")
    assert (result.status, result.reason) == ("failed", "incompatible")
    assert not agent.memory.read()["failures"][-1].get("fix")
