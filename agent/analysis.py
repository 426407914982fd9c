"""Reading a sandboxed test run: what went wrong, in one category and a short excerpt."""

from __future__ import annotations

import re

from agent.state import Category, TestReport
from safety import SafetyOutcome
from safety.policy import UNPARSABLE

MAX_ERROR_CHARS = 1500
# Lines of pytest's output worth showing the model: assertion diffs, exceptions, doctest diffs.
USEFUL_LINE = re.compile(r"^(E\s|>\s|\d+\s+>>> |Expected:|Got:|Failed example:|\s{4}\S|\w+Error\b|"
                         r"\w+Exception\b|FAILED|ERROR|[\w/.]+\.py:\d+:|File \")")


def classify(report: TestReport, *, timed_out: bool = False) -> Category:
    """The failure's category, from the strongest signal in the output."""
    text = report["error"]
    if timed_out:
        return "timeout"
    if re.search(r"\b(SyntaxError|IndentationError|TabError)\b", text):
        return "syntax_error"
    if re.search(r"\b(ImportError|ModuleNotFoundError)\b", text):
        return "import_error"
    if re.search(r"\) raised \w+(Error|Exception|Exit|Interrupt)\b", text):  # the property checks saw it
        return "crash"
    if report["failed"] and re.search(r"AssertionError|^E\s+assert\b|^Expected:", text, re.M):
        return "failed_assertion"
    return "crash"


# Frames and paths that say nothing about the skill: pytest/importlib internals, our exec dir.
NOISE_LINE = re.compile(r"site-packages|/lib/python3\.\d+/|importlib|_bootstrap|^\s*\?\?\?\s*$|"
                        r"source_stat, co = |tree = ast\.parse|return compile\(|mod = import_path|exec\(co, ")
EXEC_PATH = re.compile(r"(?:/[^\s\"']*)?/exec/[^/\s\"']+/")
DURATION = re.compile(r" in \d+(?:\.\d+)?s\b")


def excerpt(output: str) -> str:
    """The useful part of pytest's output, capped, so feedback stays small and comparable."""
    output = DURATION.sub("", EXEC_PATH.sub("", output))
    lines = [line.rstrip() for line in output.splitlines() if not NOISE_LINE.search(line)]
    useful = [line for line in lines if USEFUL_LINE.match(line)] or lines[-20:]
    summary = next((line for line in reversed(lines) if re.search(r"\b(passed|failed|error)", line)), "")
    text = "\n".join(dict.fromkeys(useful + ([summary] if summary else [])))
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "\n[...]"


# Markers before a line of a failure: pytest's "E", an exception group's "|" and "+-+----".
MARKERS = re.compile(r"^(?:E\s|[|+][-+]*\s?)+\s*")
NAMES_AN_ERROR = re.compile(r"(assert\b|(?:\w+\.)*\w+(Error|Exception)\b|timed out)")
# Where a line of code is: a traceback's frame, or pytest's "path.py:7: in f" / "path.py:7: KeyError".
FRAME = re.compile(r'File "(?P<file>[^"]+\.py)", line (?P<line>\d+)|(?P<path>[^\s:"]+\.py):(?P<at>\d+): ')


def headline(error: str) -> str:
    """One line saying what went wrong: a doctest's Expected/Got, else the first line that names an
    exception or an assertion (with where it was raised in the skill's code, when the output says),
    never a traceback's header. The failures memory keeps and ``:memory`` shows are this line."""
    doctest = re.search(r"Expected:\s*\n\s*(.+?)\s*\nGot:\s*\n\s*(.+)", error)
    if doctest:
        # the failing example is the last one shown before "Expected:"
        calls = re.findall(r"(?:Failed example:\s*\n\s*|^\d+\s+>>> )(.+)$", error[:doctest.start()], re.M)
        said = f"{calls[-1].strip()} returned" if calls else "got"
        return f"{said} {doctest.group(2).strip()}, expected {doctest.group(1).strip()}"[:160]
    lines = [MARKERS.sub("", line.strip()) for line in error.splitlines()]
    lines = [line for line in lines if line]
    for i, text in enumerate(lines):
        if NAMES_AN_ERROR.match(text):
            text = re.sub(r"^AssertionError: (?=.+ (returned|raised) )", "", text)
            where = _raised_at(lines, i)
            return (f"{text} at {where}" if where and where not in text else text)[:160]
    return next((line for line in lines if not line.startswith("Traceback (")), "")[:160]


def _raised_at(lines: list[str], i: int) -> str | None:
    """``file.py:7`` for the exception on ``lines[i]``: pytest's location line just after it, or
    the nearest frame before it; not a test file's (the skill's code is what failed)."""
    candidates = [lines[i + 1]] if i + 1 < len(lines) else []
    candidates += reversed(lines[max(0, i - 12):i])
    for line in candidates:
        frame = FRAME.match(line)
        if frame:
            path, number = frame.group("file") or frame.group("path"), frame.group("line") or frame.group("at")
            name = path.rsplit("/", 1)[-1]
            if not name.startswith("test_") and not name.startswith("<"):
                return f"{name}:{number}"
    return None


def syntax_error(outcome: SafetyOutcome) -> str | None:
    """The syntax error, when not parsing is the only reason the gates kept the code from running:
    a mistake to feed back to the model, not a blocked directive."""
    blocking = outcome.verdict.blocking()
    if outcome.run is not None or not blocking or any(f.rule != UNPARSABLE for f in blocking):
        return None
    return "\n".join(f"SyntaxError in {f.filename or 'the module'}: {f.message}" for f in blocking)


def report_from_outcome(outcome: SafetyOutcome) -> TestReport:
    """Flatten the safety layer's outcome into the loop's report. Code that does not parse never
    runs, but comes back as an ordinary ``syntax_error`` failure (the model can fix it)."""
    error = syntax_error(outcome)
    if error is not None:
        return {"ok": False, "passed": 0, "failed": 0, "errors": 1, "category": "syntax_error",
                "error": error, "level": "", "seconds": 0.0}
    if outcome.blocked or outcome.run is None:
        return {"ok": False, "passed": 0, "failed": 0, "errors": 0, "category": "blocked",
                "error": outcome.reason or "blocked by the safety gates", "level": "", "seconds": 0.0}
    run = outcome.run
    ok = run.passed > 0 and run.failed == 0 and run.errors == 0 and not run.timed_out and run.returncode == 0
    report: TestReport = {"ok": ok, "passed": run.passed, "failed": run.failed, "errors": run.errors,
                          "category": None, "error": "" if ok else excerpt(run.output),
                          "level": run.level, "seconds": run.seconds}
    if not ok:
        if run.timed_out:
            report["error"] = f"timed out after {run.seconds:.1f} s\n" + report["error"]
        report["category"] = classify(report, timed_out=run.timed_out)
    return report
