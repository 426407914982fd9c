"""Classifying sandboxed test output into the categories the loop feeds back."""

from __future__ import annotations

import pytest

from agent.analysis import classify, excerpt, headline, report_from_outcome
from safety import SafetyOutcome, TestRun
from safety.policy import Verdict


def outcome(output: str, *, passed=0, failed=0, errors=0, returncode=1, timed_out=False) -> SafetyOutcome:
    run = TestRun(level="bwrap", passed=passed, failed=failed, errors=errors, returncode=returncode,
                  timed_out=timed_out, output=output, seconds=0.2)
    return SafetyOutcome(verdict=Verdict(findings=()), blocked=False, reason=None, granted=frozenset(), run=run)


@pytest.mark.parametrize("output, counts, category", [
    ("E     File \"/ws/exec/f-1a/f.py\", line 2\nE   SyntaxError: invalid syntax\n2 errors in 0.1s",
     {"errors": 2}, "syntax_error"),
    ("E   ModuleNotFoundError: No module named 'numpy'\n1 error in 0.1s", {"errors": 1}, "import_error"),
    ("E       assert 3 == 4\nE        +  where 3 = f(2)\n1 failed in 0.1s", {"failed": 1}, "failed_assertion"),
    ("Expected:\n    4\nGot:\n    3\n1 failed in 0.1s", {"failed": 1}, "failed_assertion"),
    ("E   TypeError: unsupported operand\n1 failed in 0.1s", {"failed": 1}, "crash"),
    ("", {"returncode": -9}, "crash"),
])
def test_categories(output, counts, category):
    report = report_from_outcome(outcome(output, **counts))
    assert not report["ok"] and report["category"] == category


def test_timeout_wins_over_everything():
    report = report_from_outcome(outcome("SyntaxError", timed_out=True, returncode=None))
    assert report["category"] == "timeout" and report["error"].startswith("timed out after")


def test_all_passed_is_ok_but_zero_tests_is_not():
    assert report_from_outcome(outcome("3 passed", passed=3, returncode=0))["ok"] is True
    empty = report_from_outcome(outcome("no tests ran", returncode=5))
    assert empty["ok"] is False and empty["category"] == "crash"


def test_blocked_outcome():
    blocked = SafetyOutcome(verdict=Verdict(findings=()), blocked=True, reason="eval( is blocked",
                            granted=frozenset(), run=None)
    report = report_from_outcome(blocked)
    assert (report["category"], report["error"]) == ("blocked", "eval( is blocked")


def test_excerpt_drops_noise_paths_and_durations():
    text = excerpt("/x/site-packages/_pytest/python.py:10: in importtestmodule\n"
                   "E   File \"/tmp/w/exec/add-1f2e/add.py\", line 2\n1 error in 0.38s")
    assert "site-packages" not in text and "exec/" not in text and "0.38s" not in text
    assert 'E   File "add.py", line 2' in text
    assert classify({"error": "x", "failed": 0}, timed_out=True) == "timeout"  # type: ignore[typeddict-item]


@pytest.mark.parametrize("error, line", [
    ("003 >>> f(2)\nExpected:\n    4\nGot:\n    3\n", "f(2) returned 3, expected 4"),
    ("Expected:\n    4\nGot:\n    3\n", "got 3, expected 4"),
    ("003     >>> f(1)\n004     1\n005     >>> f(2)\nExpected:\n    4\nGot:\n    3\n", "f(2) returned 3, expected 4"),
    ("Failed example:\n    f(2)\nExpected:\n    4\nGot:\n    3\n", "f(2) returned 3, expected 4"),
    ("def test_a():\nE       assert 3 == 4\nE        +  where 3 = f(2)", "assert 3 == 4"),
    ("f.py:2: in f\nE   TypeError: bad operand", "TypeError: bad operand at f.py:2"),
    (">       return d[a] + b\nE       KeyError: 2\nadd.py:3: KeyError\n", "KeyError: 2 at add.py:3"),
    ('Traceback (most recent call last):\n  File "foo.py", line 7, in f\n    raise ValueError("bad x")\n'
     "ValueError: bad x\n", "ValueError: bad x at foo.py:7"),
    # the property checks' failures in an exception group: not its "| Traceback" header
    ('    | Traceback (most recent call last):\n    |   File "run-1/test_add.py", line 162, in test_properties\n'
     '    |     raise AssertionError(f"{call} raised {err}") from None\n'
     "    | AssertionError: add(a=3, b=2) raised KeyError: 3\n    | Failing test case: test_properties(\n",
     "add(a=3, b=2) raised KeyError: 3"),
    # an error at import: a dotted exception name, where the module raised it (not the test file)
    ("add.py:2: in <module>\n    x = json.loads('{')\nE   json.decoder.JSONDecodeError: Expecting value\n"
     "test_add.py:1: in <module>\n", "json.decoder.JSONDecodeError: Expecting value at add.py:2"),
    ("Traceback (most recent call last):\n", ""),
    ("", ""),
])
def test_headline(error, line):
    assert headline(error) == line
