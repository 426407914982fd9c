"""Benchmark: does the agent stay quick with 10,000 skills and 100,000 failures logged?

Fills a temp workspace (memory.json with N skills, history.sqlite with M failures and a history
of directives, each with an audit trail), then measures, in one run, what a user waits for:

- start to the ``Agent>`` prompt: a fresh ``python autonomous_agent.py`` process (imports, memory,
  sandbox probe, banner) that runs ``:quit`` and exits;
- ``:skills`` (all N rows), retrieval for a new goal (BM25 over the skills and the similar recent
  failures), one memory update (a skill's status, and a failure logged), ``:history``.

    .venv/bin/python bench/bench_scale.py [--skills 10000] [--failures 100000] [--repeat 20]

Medians (and p90) of ``--repeat`` runs; the targets are the issue's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prompt_toolkit.output.plain_text import PlainTextOutput  # noqa: E402

from agent.core import AutonomousAgent  # noqa: E402
from agent.memory import Memory, new_skill, now  # noqa: E402
from agent.repl import Repl, Terminal  # noqa: E402

TARGETS_MS = {"start to the Agent> prompt": 1500, ":skills": 300, "retrieval for a new goal": 100,
              "one memory update: a skill's status": 50, "one memory update: a failure logged": 50,
              ":history": 300}
TOPICS = ["json", "csv", "slug", "reverse", "parse", "date", "email", "url", "matrix", "prime"]
CATEGORIES = ["syntax_error", "import_error", "failed_assertion", "timeout", "crash"]
EVIDENCE = {"user_examples": 2, "plan_tests": 1, "confirmed": 0, "held_back": 1, "property_cases": 20}


def fill(workspace: Path, skills: int, failures: int, directives: int) -> None:
    """Skills and recent failures in memory.json, the full log and directive history in SQLite."""
    memory = Memory(workspace)
    stamp = now()
    log = [{"seq": seq, "skill": f"skill_{seq % skills}", "category": CATEGORIES[seq % 5],
            "error": f"AssertionError: skill_{seq % skills}(case {seq}) returned None, expected True",
            "code_snippet": "def f(text: str) -> bool:\n" + "    x = text.strip()\n" * 40,
            "timestamp": stamp, "iteration": seq % 12, "directive_id": None} for seq in range(1, failures + 1)]

    def apply(doc: dict[str, Any]) -> None:
        for i in range(skills):
            topic = TOPICS[i % len(TOPICS)]
            doc["skills"].append({**new_skill(f"skill_{i}", stamp), "status": "working",
                                  "description": f"Handle {topic} input number {i} and return the result.",
                                  "signature": f"skill_{i}(text: str) -> bool", "evidence": EVIDENCE,
                                  "probes": [], "last_tested": stamp, "sandbox_level": "bwrap"})
        for n in range(directives):
            doc["directives"].append({"id": f"{n:012x}", "goal": f"Create a {TOPICS[n % 10]} skill number {n}",
                                      "status": "done", "created_at": stamp, "updated_at": stamp,
                                      "skill": f"skill_{n}", "iterations": 2, "reason": "passed",
                                      "max_iterations": 12})
        doc["failures"] = log[-memory.keep_failures:]
        doc["failures_total"] = failures
    memory.update(apply)
    memory.history.add_failures(log)
    for n in range(directives):
        directive = f"{n:012x}"
        memory.history.start_run(directive, f"Create a {TOPICS[n % 10]} skill number {n}", stamp, "bench")
        for kind in ("start", "event", "model_call", "test_run", "end"):
            memory.history.add_event(directive, stamp, kind, {"note": "x" * 200})
        memory.history.end_run(directive, ended=stamp, outcome="working", reason="passed",
                               skill=f"skill_{n}", iterations=2, tokens=900, seconds=4.2, level="bwrap")


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def start_to_prompt(workspace: Path) -> float:
    """A fresh agent process: start, banner, prompt, :quit (model unreachable: no model load)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "autonomous_agent.py"), "--workspace", str(workspace),  # noqa: S603
                    "--model", "ollama:bench", "--ollama-host", "http://127.0.0.1:9", "-c", ":quit"],
                   check=True, capture_output=True, cwd=ROOT, timeout=120)
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", type=int, default=10_000)
    parser.add_argument("--failures", type=int, default=100_000)
    parser.add_argument("--directives", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "agent_workspace"
        began = time.perf_counter()
        fill(workspace, args.skills, args.failures, args.directives)
        size = (workspace / "memory.json").stat().st_size / 2**20
        db = (workspace / "history" / "history.sqlite").stat().st_size / 2**20
        print(f"set-up: {args.skills:,} skills, {args.failures:,} failures, {args.directives:,} directives in "
              f"{time.perf_counter() - began:.1f} s; memory.json {size:.1f} MiB, history.sqlite {db:.0f} MiB")

        results = {"start to the Agent> prompt": [start_to_prompt(workspace) for _ in range(max(3, args.repeat // 4))]}
        edited = json.loads((workspace / "memory.json").read_text())  # another program changes it:
        edited["skills"][0]["description"] = "Edited by hand."  # the next start validates it all
        (workspace / "memory.json").write_text(json.dumps(edited, indent=2))
        cold_start = start_to_prompt(workspace)
        buffer = io.StringIO()
        agent = AutonomousAgent(workspace=workspace, model="ollama:bench")
        repl = Repl(agent, Terminal(output=PlainTextOutput(buffer)))
        memory = agent.memory
        goal = "Create a skill that validates a JSON document and returns a bool"

        def retrieval() -> None:
            agent.library.relevant(goal, memory.read()["skills"])
            memory.similar_failures(goal, n=3)

        counter = iter(range(10**9))
        first_update = timed(lambda: memory.upsert_skill("skill_1", status="untested"), 1)[0]
        results[":skills"] = timed(lambda: repl.handle(":skills"), args.repeat)
        results["retrieval for a new goal"] = timed(retrieval, args.repeat)
        results["one memory update: a skill's status"] = timed(
            lambda: memory.upsert_skill("skill_7", status=("working", "failed")[next(counter) % 2]), args.repeat)
        results["one memory update: a failure logged"] = timed(
            lambda: memory.record_failure(skill="skill_7", error=f"TimeoutError {next(counter)}", category="timeout",
                                          code_snippet="while True: pass", iteration=1, directive_id=None),
            args.repeat)
        results[":history"] = timed(lambda: repl.handle(":history"), args.repeat)
        rows = buffer.getvalue().count("\n")

    print(f"\n{'operation':40} {'median':>9} {'p90':>9} {'target':>8}")
    report = {}
    for label, times in results.items():
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 2 else max(times)
        target = TARGETS_MS[label]
        verdict = "ok" if median <= target else "MISSED"
        print(f"{label:40} {median:7.1f}ms {p90:7.1f}ms {target:6d}ms  {verdict}")
        report[label] = {"median_ms": round(median, 1), "p90_ms": round(p90, 1), "target_ms": target,
                         "runs": len(times)}
    print(f"(once: a start after memory.json was changed by another program, which validates all of it: "
          f"{cold_start:.0f} ms; the first update after a start, which parses the document once more to "
          f"index its items: {first_update:.0f} ms; {rows:,} lines printed; {os.cpu_count()} CPUs)")
    report["once"] = {"cold_start_ms": round(cold_start), "first_update_ms": round(first_update)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["median_ms"] <= r["target_ms"] for label, r in report.items() if label != "once") else 1


if __name__ == "__main__":
    raise SystemExit(main())
