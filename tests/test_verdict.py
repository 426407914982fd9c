"""Plans from plain language and honest statuses, through the real loop, memory and sandbox, with
a scripted model: completion (base) models and chat models, the user as the oracle, held-back
examples, over-fitting, and a directive that always ends recorded."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FakeModel
from tests.test_loop import make_agent

GRAMMAR_PLAN = json.dumps({"name": "is_valid_json", "signature": "is_valid_json(text: str) -> bool",
                           "description": "Return True if text is valid JSON.",
                           "examples": [{"call": "is_valid_json('[1]')", "result": "False"}]})
JSON_BODY = "    import json\n    try:\n        json.loads(text)\n    except ValueError:\n        return False\n" \
            "    return True\n"


def test_plain_language_on_a_completion_model_gives_an_untested_skill(workspace):
    model = FakeModel([GRAMMAR_PLAN, JSON_BODY], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run("Create a JSON validator skill")
    assert (result.status, result.skill, result.reason) == ("untested", "is_valid_json", "passed")
    assert ":examples is_valid_json" in result.message
    plan_request = model.history[0]
    assert plan_request.schema is not None and "tests" not in plan_request.schema["properties"]
    assert "Goal: Create a JSON validator skill" in plan_request.prompt
    # the model's invented result (False for '[1]') is not a test: its call is a probe
    skill = agent.memory.get_skill("is_valid_json")
    assert skill["status"] == "untested" and skill["probes"] == ["is_valid_json('[1]')"]
    assert skill["evidence"] == {"user_examples": 0, "plan_tests": 0, "confirmed": 0, "held_back": 0,
                                 "property_cases": 50}
    tests = (workspace / "skills" / "tests" / "test_is_valid_json.py").read_text()
    assert "'[1]'" not in tests and "test_properties_from_signature" in tests
    assert agent.memory.read()["directives"][-1]["status"] == "done"


def test_the_user_confirms_a_result_and_the_skill_becomes_working(workspace):
    model = FakeModel([GRAMMAR_PLAN, JSON_BODY], chat=False)
    agent = make_agent(workspace, model)
    asked = []

    def confirm(skill, observed):
        asked.append((skill, [(o.call, o.result) for o in observed]))
        return [True]

    result = agent.run("I need something that checks JSON text", confirm=confirm)
    assert asked == [("is_valid_json", [("is_valid_json('[1]')", "True")])]  # actual, not the model's claim
    assert result.status == "working" and "1 confirmed example" in result.message
    tests = (workspace / "skills" / "tests" / "test_is_valid_json.py").read_text()
    assert "got = is_valid_json('[1]')\n    assert got == True" in tests
    assert agent.memory.get_skill("is_valid_json")["evidence"]["confirmed"] == 1


def test_a_corrected_value_becomes_a_test_and_the_loop_goes_on(workspace):
    wrong = "    return len(text) > 3\n"
    model = FakeModel([GRAMMAR_PLAN, wrong, JSON_BODY], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run("Create a JSON validator skill", confirm=lambda skill, observed: ["True"])
    assert result.status == "working" and result.iterations == 2
    retry_prompt = model.history[-1].prompt
    assert "# The last version was wrong: is_valid_json('[1]') returned False, expected True" in retry_prompt


def test_a_rejected_value_without_a_correction_is_not_evidence(workspace):
    model = FakeModel([GRAMMAR_PLAN, "    return False\n", JSON_BODY], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run("Create a JSON validator skill", confirm=lambda skill, observed: [False])
    assert result.status == "untested" and result.iterations == 2


@pytest.mark.parametrize("max_iter, iterations", [
    (1, 1),  # answered at the cap: the loop stops there
    (2, 2),  # the answer's retry is the cap's last iteration
])
def test_an_answer_that_sends_the_loop_on_stays_within_the_cap(workspace, max_iter, iterations):
    wrong = ["    return len(text) > 3\n", "    return len(text) > 4\n", "    return len(text) > 5\n"]
    model = FakeModel([GRAMMAR_PLAN, *wrong], chat=False)
    agent = make_agent(workspace, model, max_iter=max_iter)
    result = agent.run("Create a JSON validator skill", confirm=lambda skill, observed: ["True"])
    assert (result.status, result.reason, result.iterations, result.max_iterations) == (
        "failed", "iteration_cap", iterations, max_iter)
    assert f"no working version after {iterations} iterations" in result.message
    counted = [(event.iteration, event.max_iterations) for event in agent.events if event.iteration]
    assert counted and all(cap == max_iter and n <= cap for n, cap in counted)
    answered = next(event for event in agent.events if event.message.startswith("user: "))
    assert answered.iteration == 1 and answered.message.endswith("retry" if max_iter > 1 else "stop (iteration_cap)")


def test_held_back_example_catches_fitted_code_without_showing_it(workspace):
    goal = ("Create a skill `double(n: int) -> int` that doubles n, e.g. double(3) == 6, double(4) == 8, "
            "double(10) == 20")
    fitted = "    return n + 3 if n < 4 else n + 4\n"  # right on the shown examples only
    model = FakeModel([fitted, "    return n * 2\n"], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run(goal)
    assert (result.status, result.iterations) == ("working", 2)
    assert all("double(10)" not in prompt and "20" not in prompt for prompt in model.prompts())
    failures = agent.memory.read()["failures"]
    assert [f["category"] for f in failures] == ["held_back"]
    assert "kept back" in failures[0]["error"] and "double(10)" not in failures[0]["error"]
    assert agent.memory.get_skill("double")["evidence"]["held_back"] == 1


def test_code_that_special_cases_the_examples_fails_that_iteration(workspace):
    goal = "Create a skill `cube(n: int) -> int`, e.g. cube(3) == 27"
    model = FakeModel(["    if n == 3:\n        return 27\n    return 0\n", "    return n ** 3\n"], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run(goal)
    assert (result.status, result.iterations) == ("working", 2)
    failure = agent.memory.read()["failures"][0]
    assert failure["category"] == "overfit" and "compares a parameter" in failure["error"]
    assert "special-cases the examples" in model.prompts()[1]  # the next attempt was told why


def test_chat_plan_without_tests_asks_for_them_once(workspace):
    plan = json.dumps({"name": "slugify", "signature": "slugify(text: str) -> str",
                       "description": "Lower-case words joined by dashes.", "examples": []})
    tests = "```python\nfrom slugify import slugify\n\ndef test_words():\n    assert slugify('A b') == 'a-b'\n```"
    good = "```python\ndef slugify(text: str) -> str:\n    return '-'.join(text.lower().split())\n```"
    model = FakeModel([plan, tests, good])
    agent = make_agent(workspace, model)
    result = agent.run("Create a slug maker")
    assert result.status == "working" and "1 plan test" in result.message
    assert "Write pytest tests" in model.prompts()[1]
    assert model.history[0].schema is not None and "tests" in model.history[0].schema["required"]


def test_no_signature_at_all_is_no_plan_with_the_hint(workspace):
    model = FakeModel(['{"name": "Not A Name"}'], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run("do the thing")
    assert (result.status, result.reason) == ("failed", "no_plan")
    assert "name one" in result.message


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("missing")])
def test_an_unexpected_error_ends_the_directive_crashed_never_running(workspace, error):
    model = FakeModel([GRAMMAR_PLAN, error], chat=False)
    agent = make_agent(workspace, model)
    result = agent.run("Create a JSON validator skill")
    assert (result.status, result.reason) == ("crashed", "crashed")
    directive = agent.memory.read()["directives"][-1]
    assert directive["status"] == "crashed" and type(error).__name__ in directive["error"]
    assert type(error).__name__ in (workspace / "history" / "crashes.log").read_text()


def test_tokens_are_counted_in_the_graph_state(workspace):
    model = FakeModel([GRAMMAR_PLAN, JSON_BODY], chat=False)
    result = make_agent(workspace, model).run("Create a JSON validator skill")
    assert result.tokens > 0


def test_reusable_skills_reach_a_completion_model_as_imports(workspace):
    model = FakeModel(["    return text.upper()\n"], chat=False)
    agent = make_agent(workspace, model)
    assert agent.run("Create a skill `shout(text: str) -> str`, e.g. shout('a') == 'A'").status == "working"
    model.enqueue("    return shout(text) + '!'\n")
    result = agent.run("Create a skill `shout_bang(text: str) -> str` that shouts text, e.g. shout_bang('a') == 'A!'")
    assert result.status == "working", result.message
    assert "from skills.shout import shout  # shout(text: str) -> str" in model.history[-1].prompt
    assert (workspace / "skills" / "shout_bang.py").read_text().startswith("from skills.shout import shout\n")
    assert agent.memory.get_skill("shout_bang")["dependencies"] == ["shout"]


def test_a_planned_module_name_that_shadows_the_standard_library_is_renamed(workspace):
    plan = json.dumps({"name": "base64", "signature": "base64(text: str) -> str",
                       "description": "Encode text as base64.", "examples": []})
    body = "    import base64\n    return base64.b64encode(text.encode()).decode()\n"
    model = FakeModel([plan, "'hi')\n    'aGk='\n", body], chat=False)  # plan, example calls, body
    agent = make_agent(workspace, model)
    result = agent.run("Build a base64 encoder")
    assert (result.status, result.skill) == ("untested", "base64_skill"), result.message
    assert agent.memory.get_skill("base64_skill")["probes"] == ["base64_skill('hi')"]
    assert (workspace / "skills" / "base64_skill.py").is_file()
