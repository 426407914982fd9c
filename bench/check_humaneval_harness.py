"""Check the HumanEval scorer itself: the dataset's canonical solutions must pass their hidden
tests, and a body that returns None must not, through the same safety path and sandbox the
benchmark uses (``agent.humaneval.run_hidden``). Then the loop's own checks (the over-fitting
guard, the docstring's examples, the automatic property checks, the held-back example): a
canonical solution they reject is one the loop could never call working. No model is involved.

Usage: .venv/bin/python bench/check_humaneval_harness.py [--limit N]
Prints each problem where the scorer disagrees, then one summary line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.analysis import report_from_outcome  # noqa: E402
from agent.checks import holdout_tests, overfit, test_module  # noqa: E402
from agent.core import AutonomousAgent  # noqa: E402
from agent.humaneval import PROBLEMS, load_problems, problem_spec, run_hidden  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=PROBLEMS)
    args = parser.parse_args(argv)
    problems = load_problems()[:args.limit]
    started, canonical, wrong, own = time.monotonic(), 0, 0, 0
    with tempfile.TemporaryDirectory(prefix="humaneval-harness-") as tmp:
        agent = AutonomousAgent(workspace=Path(tmp), model="embedded")  # the model is never loaded
        for problem in problems:
            with agent.sandbox.session():
                rejected = own_checks_reject(agent, problem)
            own += not rejected
            if rejected:
                print(f"{problem.task_id}: the loop's own checks reject the canonical solution: {rejected}")
            right = run_hidden(agent, problem, problem.prompt + problem.canonical_solution)
            canonical += right.passed
            if not right.passed:
                print(f"{problem.task_id}: the canonical solution fails: {right.detail}")
            bad = run_hidden(agent, problem, problem.prompt + "    return None\n")
            wrong += bad.passed
            if bad.passed:
                print(f"{problem.task_id}: a body returning None passes")
        level = agent.sandbox.level
    print(f"{canonical} of {len(problems)} canonical solutions pass; {wrong} bodies returning None pass "
          f"; the loop's own checks accept {own} canonical solutions (sandbox: {level}, "
          f"{time.monotonic() - started:.0f} s)")
    return 0


def own_checks_reject(agent: AutonomousAgent, problem) -> str:
    """Why the loop's own checks reject the canonical solution ("" when they accept it)."""
    spec = problem_spec(problem)
    code = problem.prompt + problem.canonical_solution
    if spec["name"] != problem.entry_point:
        code += f"\n\n{spec['name']} = {problem.entry_point}\n"
    special = overfit(code, spec)
    if special:
        return f"over-fitting guard: {special}"
    for tests in (test_module(spec), holdout_tests(spec) if spec["holdout"] else None):
        if tests is None:
            continue
        report = report_from_outcome(agent.execute(spec["name"], code, tests))
        if not report["ok"]:
            return f"{report['category']}: {report['error'][:300]!r}"
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
