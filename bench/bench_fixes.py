"""Do past fixes in the fix prompt lower iterations? The public directive list (bench/cases.py), in
order, in one workspace per arm, with the past-fixes section of fix prompts on and off.

    .venv/bin/python bench/bench_fixes.py [--model embedded] [--max-iter 12] [--kind signature]

Past fixes can only help a directive once earlier ones failed and then passed (their failures
then carry the diff that fixed them), so each arm runs the whole list in sequence in one
workspace, and the comparison is made twice:

- **first pass**: each arm starts from an empty workspace; only fixes made earlier in the same
  pass (other directives) can be shown;
- **second pass**: both arms start from a copy of the same workspace, the off arm's first pass,
  and run the list again: fixes from the first pass (the same goals' and others') can be shown.

The two arms of a pass run at the same time, each pinned to its own CPU (so each llama.cpp model
gets one thread and they do not slow each other unevenly). Sampling is seeded (llama.cpp's
default), so an arm differs from the other only through its prompts. Per arm it prints the
directives that passed the loop (working or untested), working, failed, no_plan, mean and median
iterations, how many pass the hidden reference checks, and how many write prompts showed a past
fix (and of those, how many were the same skill's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import load_settings  # noqa: E402
from agent.core import AutonomousAgent  # noqa: E402
from bench.bench_embedded import run_case  # noqa: E402
from bench.cases import CASES  # noqa: E402

SHOWN = "was fixed by writing:"  # a completion model's fix comment with a past fix
SHOWN_CHAT = "Similar failures were fixed before"  # a chat model's


def worker(args: argparse.Namespace) -> int:
    """Run the list in sequence in one workspace; write one JSON row per directive to ``--out``."""
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})  # before the model loads: it takes one thread per CPU allowed
    settings = replace(load_settings(env={}), past_fixes=args.past_fixes == "on")
    agent = AutonomousAgent(workspace=args.workspace, model=args.model, max_iter=args.max_iter, settings=settings)
    rows = []
    for case in (c for c in CASES if args.kind in (None, c.kind)):
        result, seconds, passes, status = run_case(agent, case)
        shown = same = 0
        for event in agent.memory.history.events(result.directive_id):
            if event["kind"] != "model_call" or event.get("phase") != "write":
                continue
            prompt = event["prompt"] if isinstance(event["prompt"], str) else json.dumps(event["prompt"])
            if SHOWN in prompt or SHOWN_CHAT in prompt:
                shown += 1
                same += f"A similar error in {result.skill} was fixed" in prompt or f"- {result.skill} (" in prompt
        rows.append({"kind": case.kind, "goal": case.goal, "skill": result.skill or "-", "status": status,
                     "iterations": result.iterations, "seconds": round(seconds, 1), "reference": passes,
                     "fix_prompts": shown, "same_skill": same})
        print(f"[{args.label}] {case.kind:<9} {rows[-1]['skill']:<24} {status:<9} {result.iterations:>3} it "
              f"{seconds:6.1f} s  fix prompts {shown} ({same} same skill)", flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


def run_arms(arms: list[tuple[str, Path, str]], common: list[str], out_dir: Path) -> dict[str, list[dict]]:
    """Run the arms (label, workspace, on|off) at once, each on its own CPU; their rows by label."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    procs = []
    for i, (label, workspace, past_fixes) in enumerate(arms):
        cpu = cpus[i % len(cpus)]
        cmd = [sys.executable, __file__, "--worker", "--label", label, "--workspace", str(workspace),
               "--past-fixes", past_fixes, "--out", str(out_dir / f"{label}.json"), *common]
        if cpu is not None and len(cpus) >= len(arms):
            cmd += ["--cpu", str(cpu)]
        procs.append(subprocess.Popen(cmd))  # noqa: S603 (this script, our own arguments)
    failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"an arm failed: {failed}")
    return {label: json.loads((out_dir / f"{label}.json").read_text()) for label, _, _ in arms}


def summary(label: str, rows: list[dict]) -> str:
    iterations = [r["iterations"] for r in rows]
    count = {s: sum(r["status"] == s for r in rows) for s in ("working", "untested", "failed", "no_plan")}
    return (f"| {label} | {len(rows)} | {count['working'] + count['untested']} | {count['working']} "
            f"| {count['failed']} | {count['no_plan']} | {statistics.mean(iterations):.2f} "
            f"| {statistics.median(iterations):g} | {sum(iterations)} | {sum(bool(r['reference']) for r in rows)} "
            f"| {sum(r['fix_prompts'] for r in rows)} ({sum(r['same_skill'] for r in rows)}) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-iter", type=int, default=12)
    parser.add_argument("--kind", choices=["plain", "signature", "examples"], help="only this kind")
    parser.add_argument("--keep", type=Path, help="keep the workspaces and rows here (default: a temp dir)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--past-fixes", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    common = ["--model", args.model, "--max-iter", str(args.max_iter)] + (["--kind", args.kind] if args.kind else [])
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-fixes-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        first = run_arms([("first-off", root / "first-off", "off"), ("first-on", root / "first-on", "on")],
                         common, root)
        for arm in ("on", "off"):
            shutil.copytree(root / "first-off", root / f"second-{arm}", symlinks=True)
        second = run_arms([("second-off", root / "second-off", "off"), ("second-on", root / "second-on", "on")],
                          common, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = {**first, **second}
    print(f"\n{len(rows['first-off'])} directives, {time.monotonic() - started:.0f} s in all\n")
    print("| pass, past fixes | directives | passed (working + untested) | working | failed | no_plan "
          "| mean iterations | median iterations | total iterations | pass reference "
          "| write prompts with a past fix (same skill) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label in ("first-off", "first-on", "second-off", "second-on"):
        print(summary(label.replace("-", ", "), rows[label]))
    print("\nDirectives whose iterations differ between the arms of a pass:")
    for name in ("first", "second"):
        for off, on in zip(rows[f"{name}-off"], rows[f"{name}-on"], strict=True):
            if (off["iterations"], off["status"]) != (on["iterations"], on["status"]):
                print(f"  {name}: {off['goal'][:70]!r}: off {off['iterations']} it {off['status']}, "
                      f"on {on['iterations']} it {on['status']} ({on['fix_prompts']} fix prompts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
