"""Benchmark: is the failure log still fast with 100,000 failures logged?

Fills a temp workspace with N failures (default 100,000) through ``Memory.update`` (one batch,
so the set-up takes seconds, not the minutes 100,000 fsync'ed writes would), then prints the
median time of the operations the agent does on every iteration: record a failure, load the
memory, pick recent and similar failures. For contrast it also times the naive design that keeps
every failure inside memory.json (parse + schema-validate all N).

    .venv/bin/python bench/bench_memory.py [--failures 100000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.memory import Memory, empty, now, validator  # noqa: E402

CATEGORIES = ["syntax_error", "import_error", "failed_assertion", "timeout", "crash"]


def failure(seq: int) -> dict[str, Any]:
    """A realistic failure record: a short error and a ~1 KB code snippet."""
    skill = f"skill_{seq % 50}"
    return {"seq": seq, "skill": skill, "error": f"AssertionError: {skill}(case {seq}) returned None",
            "category": CATEGORIES[seq % len(CATEGORIES)],
            "code_snippet": f"def {skill}(text: str) -> bool:\n" + "    x = text.strip()\n" * 50,
            "timestamp": now(), "iteration": seq % 12, "directive_id": None}


def fill(memory: Memory, count: int) -> None:
    """Log ``count`` failures in one locked update (the same code path record_failure takes)."""
    def apply(doc: dict[str, Any]) -> None:
        records = [failure(seq) for seq in range(1, count + 1)]
        doc["failures"].extend(records)
        doc["failures_total"] = count
        memory._log_pending.extend(records)  # appended to history/failures.jsonl once valid
    memory.update(apply)
    for i in range(20):
        memory.upsert_skill(f"skill_{i}", status="working", description=f"skill number {i}")
        memory.add_directive(f"create skill number {i}", max_iterations=12)


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--naive-repeat", type=int, default=3, help="0 skips the naive contrast")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "agent_workspace"
        memory = Memory(workspace)
        start = time.perf_counter()
        fill(memory, args.failures)
        print(f"set-up: {args.failures:,} failures logged in {time.perf_counter() - start:.1f} s; "
              f"memory.json {memory.path.stat().st_size / 1024:.0f} KiB "
              f"({len(memory.read()['failures'])} recent failures), "
              f"failures.jsonl {memory.failure_log_path.stat().st_size / 2**20:.0f} MiB")

        counter = iter(range(10**9))
        rows = [
            ("record_failure (lock, load, validate, jsonl append, 2 atomic writes)",
             lambda: memory.record_failure(skill="skill_1", error=f"TimeoutError {next(counter)}",
                                           category="timeout", code_snippet="while True: pass",
                                           iteration=1, directive_id=None)),
            ("read() again, same instance (parse; these bytes already validated)", memory.read),
            ("Memory(workspace).read(), fresh instance (parse + validate)", lambda: Memory(workspace).read()),
            ("recent_failures(10, skill=...)", lambda: memory.recent_failures(10, skill="skill_7")),
            ("similar_failures(goal, 3)",
             lambda: memory.similar_failures("skill_7 returned None instead of a bool", 3)),
            ("summary()", memory.summary),
        ]
        print(f"\nmedian of {args.repeat} runs, {memory.read()['failures_total']:,} failures logged:")
        for label, fn in rows:
            print(f"  {median_ms(fn, args.repeat):8.2f} ms  {label}")
        total = memory.read()["failures_total"]
        print(f"  {median_ms(lambda: sum(1 for _ in memory.failure_log()), 3):8.0f} ms  "
              f"failure_log() full scan of {total:,} lines (median of 3; not on the hot path)")

        if args.naive_repeat:
            naive = empty()
            naive["failures"] = [failure(seq) for seq in range(1, args.failures + 1)]
            naive["failures_total"] = args.failures
            blob = json.dumps(naive, indent=2)
            print(f"\nnaive contrast: all {args.failures:,} failures inside memory.json "
                  f"({len(blob) / 2**20:.0f} MiB), median of {args.naive_repeat}:")
            print(f"  {median_ms(lambda: json.loads(blob), args.naive_repeat):8.0f} ms  json.loads")
            print(f"  {median_ms(lambda: validator().validate(naive), args.naive_repeat):8.0f} ms  "
                  "schema validation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
