"""Where one sandboxed test run of a skill spends its time: the gates (our own, then bandit), the
sandbox's start (``python -c pass`` through ``Sandbox.run_python``), pytest's start, the doctests,
the example tests and the automatic property checks (hypothesis, 50 cases); then the whole run
through ``AutonomousAgent.execute`` (``safety.run_generated``), as the loop makes it. Each test
step runs cold (a sandbox, an interpreter and pytest started for the run) and warm (inside
``Sandbox.session()``, as a directive's runs are: a fresh child of a worker started once; see
safety/warm.py). The worker's start, paid once per directive, is measured on its own.

Usage: .venv/bin/python bench/bench_test_run.py [--runs 10]
Prints the median and p95 of each step, one table, with what each adds to the one before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import safety  # noqa: E402
from agent import checks  # noqa: E402
from agent.core import AutonomousAgent  # noqa: E402
from agent.spec import new_evidence, tests_from_examples  # noqa: E402
from safety import policy  # noqa: E402

CODE = 'def add(a: int, b: int) -> int:\n    """Add.\n\n    >>> add(1, 2)\n    3\n    """\n    return a + b\n'
BARE = "def add(a: int, b: int) -> int:\n    return a + b\n"  # no docstring: no doctest
TRIVIAL = "def test_nothing():\n    pass\n"
SPEC = {"name": "add", "signature": "add(a: int, b: int) -> int", "description": "Add.",
        "examples": [{"call": "add(1, 2)", "result": "3"}], "holdout": [], "probes": [],
        "tests": tests_from_examples("add", [{"call": "add(2, 2)", "result": "4"}]), "evidence": new_evidence()}


def measure(runs: int, step: Callable[[], object]) -> tuple[float, float]:
    """Median and p95 of ``runs`` timings of ``step``, in ms (after one unmeasured warm-up)."""
    step()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples) * 1000, samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    full_tests = checks.test_module(SPEC)
    with tempfile.TemporaryDirectory(prefix="bench-test-run-") as tmp:
        agent = AutonomousAgent(workspace=Path(tmp), model="embedded")
        sandbox = agent.sandbox
        run_dir = Path(tmp) / "exec" / "probe"
        run_dir.mkdir(parents=True)

        def pytest_run(module: str, tests: str) -> Callable[[], object]:
            def step() -> object:
                run = safety._run_in_exec_dir("add", module, {"test_add.py": tests}, agent.workspace, sandbox,
                                              agent.settings.timeout, agent.library.skills_dir, frozenset())
                assert run.ok, run.output
                return run
            return step

        def whole() -> object:
            outcome = agent.execute("add", CODE, full_tests)
            assert outcome.run is not None and outcome.run.ok, outcome.run and outcome.run.output
            return outcome

        steps: list[tuple[str, Callable[[], object]]] = [
            ("gates, ours (AST + regex)",
             lambda: [policy.check_code(s, with_bandit=False) for s in (CODE, full_tests)]),
            ("gates with bandit (safety.gate)", lambda: safety.gate("add", CODE, full_tests)),
            ("sandbox start: python -c pass", lambda: sandbox.run_python(["-c", "pass"], cwd=run_dir)),
        ]
        tests: list[tuple[str, Callable[[], object]]] = [
            ("+ pytest start, one trivial test", pytest_run(BARE, TRIVIAL)),
            ("+ a doctest (--doctest-modules)", pytest_run(CODE, TRIVIAL)),
            ("+ an example test", pytest_run(CODE, SPEC["tests"])),
            ("+ property checks (50 hypothesis cases)", pytest_run(CODE, full_tests)),
            ("whole run: agent.execute (gates + all above)", whole),
        ]

        def start_worker() -> object:
            with sandbox.session():
                return pytest_run(BARE, TRIVIAL)()

        print(f"one sandboxed test run, {args.runs} runs each (sandbox: {sandbox.level})")
        print(f"{'step':<46}{'median ms':>10}{'p95 ms':>9}{'adds ms':>9}{'warm ms':>9}{'p95 ms':>9}{'adds ms':>9}")
        previous = previous_warm = None
        for label, step in steps + tests:
            median, p95 = measure(args.runs, step)
            adds = "" if previous is None or not label.startswith("+") else f"{median - previous:>9.0f}"
            line = f"{label:<46}{median:>10.0f}{p95:>9.0f}{adds:>9}"
            if (label, step) in tests:
                with sandbox.session():
                    warm, warm_p95 = measure(args.runs, step)
                more = "" if previous_warm is None or not label.startswith("+") else f"{warm - previous_warm:>9.0f}"
                line += f"{warm:>9.0f}{warm_p95:>9.0f}{more:>9}"
                previous_warm = warm
            print(line, flush=True)
            previous = median
        median, p95 = measure(max(3, args.runs // 3), start_worker)
        label = "warm worker start + first run (once a directive)"
        print(f"{label:<46}{'':>28}{median:>9.0f}{p95:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
