"""What one test run of a skill costs: gates + sandbox + pytest + doctests, with and without the
automatic property checks (hypothesis, 50 cases), through ``safety.run_generated``.

Usage: .venv/bin/python bench/bench_test_run.py [--runs 15]
Prints the median and p95 of each, one table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import checks  # noqa: E402
from agent.core import AutonomousAgent  # noqa: E402
from agent.spec import new_evidence, tests_from_examples  # noqa: E402

CODE = 'def add(a: int, b: int) -> int:\n    """Add.\n\n    >>> add(1, 2)\n    3\n    """\n    return a + b\n'
SPEC = {"name": "add", "signature": "add(a: int, b: int) -> int", "description": "Add.",
        "examples": [{"call": "add(1, 2)", "result": "3"}], "holdout": [], "probes": [],
        "tests": tests_from_examples("add", [{"call": "add(2, 2)", "result": "4"}]), "evidence": new_evidence()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-test-run-") as tmp:
        agent = AutonomousAgent(workspace=Path(tmp), model="embedded")
        print(f"{'one test run of a skill':<36}{'median ms':>10}{'p95 ms':>10}   (sandbox: {agent.sandbox.level})")
        for label, tests in (("example tests + doctest", SPEC["tests"]),
                             ("... + property checks (50 cases)", checks.test_module(SPEC))):
            samples = []
            for _ in range(args.runs):
                started = time.perf_counter()
                outcome = agent.execute("add", CODE, tests)
                samples.append(time.perf_counter() - started)
                assert outcome.run is not None and outcome.run.ok, outcome.run and outcome.run.output
            samples.sort()
            p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
            print(f"{label:<36}{statistics.median(samples) * 1000:>10.0f}{p95 * 1000:>10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
