"""Directives in three kinds, phrased as users phrase them, scored against reference checks the
loop never sees.

    .venv/bin/python bench/bench_embedded.py [--model embedded] [--max-iter 12] [--kind plain]

Kinds: ``plain`` (a goal in plain language), ``signature`` (a signature, no examples),
``examples`` (a signature and examples). Each directive runs through the real loop and sandbox
in a fresh workspace, with no one to confirm examples (so a skill without evidence stays
``untested``). Reference checks then run in the same sandbox. Per kind it prints working /
untested / failed / no_plan, median iterations and seconds, how many skills pass the reference
checks, and **false working**: labelled working but failing them. For signature-only directives
it also scores greedy generation alone (one temperature-0 body, no loop) as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import planner, prompts  # noqa: E402
from agent.core import AutonomousAgent, DirectiveResult  # noqa: E402
from agent.llm.base import Request  # noqa: E402
from agent.nodes import BODY_STOPS  # noqa: E402
from agent.spec import complete_module, stub  # noqa: E402
from bench.cases import CASES, Case  # noqa: E402


def reference_passes(agent: AutonomousAgent, name: str, code: str, case: Case) -> bool:
    """Run the case's hidden checks against ``code`` (its function bound to ``f``) in the sandbox."""
    body = "\n".join(f"    {line}" for line in case.checks)
    tests = f"import json\nfrom {name} import {name} as f\n\n\ndef test_reference():\n{body}\n"
    outcome = agent.execute(name, code, tests)
    return outcome.run is not None and outcome.run.ok


def run_case(agent: AutonomousAgent, case: Case) -> tuple[DirectiveResult, float, bool | None, str]:
    """One directive of the list: its result, seconds, whether its skill passes the reference
    checks (None: no skill), and the status a table shows (``no_plan`` as itself)."""
    started = time.monotonic()
    result = agent.run(case.goal)
    seconds = time.monotonic() - started
    passes = None
    if result.ok and result.skill:
        passes = reference_passes(agent, result.skill, agent.library.source(result.skill) or "", case)
    return result, seconds, passes, result.reason if result.reason == "no_plan" else result.status


def greedy_baseline(agent: AutonomousAgent, case: Case) -> bool | None:
    """One temperature-0 body for the directive's signature, no loop: does it pass the checks?"""
    spec = planner.plan_completion(case.goal, None, lambda request, phase: agent.model.generate(request))
    if spec is None or agent.model.chat:
        return None
    prompt = prompts.render("write_completion", imports="", stub=stub(spec))
    reply = agent.model.generate(Request(prompt=prompt, stop=BODY_STOPS, temperature=0.0, max_tokens=256))
    code = complete_module(spec, reply.text)
    return code is not None and reference_passes(agent, spec["name"], code, case)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-iter", type=int, default=12)
    parser.add_argument("--kind", choices=["plain", "signature", "examples"], help="only this kind")
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        for i, case in enumerate(c for c in CASES if args.kind in (None, c.kind)):
            agent = AutonomousAgent(workspace=Path(tmp) / f"ws{i}", model=args.model, max_iter=args.max_iter)
            result, seconds, passes, status = run_case(agent, case)
            greedy = greedy_baseline(agent, case) if case.kind == "signature" else None
            rows.append({"kind": case.kind, "skill": result.skill or "-", "status": status,
                         "iterations": result.iterations, "seconds": seconds, "reference": passes,
                         "greedy": greedy})
            print(f"{case.kind:<9} {rows[-1]['skill']:<24} {status:<9} {result.iterations:>3} it "
                  f"{seconds:6.1f} s  reference: {'-' if passes is None else 'pass' if passes else 'FAIL'}"
                  + ("" if greedy is None else f"  greedy alone: {'pass' if greedy else 'fail'}"), flush=True)
    print()
    print("| kind | directives | working | untested | failed | no_plan | median iterations | median s "
          "| pass reference | false working | greedy alone passes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("plain", "signature", "examples"):
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        count = {s: sum(r["status"] == s for r in mine) for s in ("working", "untested", "failed", "no_plan")}
        false_working = sum(r["status"] == "working" and r["reference"] is False for r in mine)
        greedy = [r["greedy"] for r in mine if r["greedy"] is not None]
        print(f"| {kind} | {len(mine)} | {count['working']} | {count['untested']} | {count['failed']} "
              f"| {count['no_plan']} | {statistics.median(r['iterations'] for r in mine):g} "
              f"| {statistics.median(r['seconds'] for r in mine):.1f} | {sum(bool(r['reference']) for r in mine)} "
              f"| {false_working} of {count['working']} | {sum(greedy) if greedy else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
