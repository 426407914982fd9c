"""Parsing directives and model replies: pure functions, botched input gives None, never raises."""

from __future__ import annotations

import pytest

from agent import spec as S

SPEC = {"name": "reverse_words", "signature": "reverse_words(text: str) -> str",
        "description": "Reverse the order of words.",
        "examples": [{"call": "reverse_words('a b')", "result": "'b a'"}], "tests": ""}


@pytest.mark.parametrize("goal, expected", [
    ("Create a skill `reverse_words(text: str) -> str` that reverses words",
     ("reverse_words", "reverse_words(text: str) -> str")),
    ("Make is_even(n: int) -> bool that checks", ("is_even", "is_even(n: int) -> bool")),
    ("def pairs(xs: list[tuple[int, int]]) -> dict[int, int]: map pairs",
     ("pairs", "pairs(xs: list[tuple[int, int]]) -> dict[int, int]")),
    ("Create a JSON validator skill", None),
    ("Create `broken(a: int,, b) -> int`", None),
])
def test_parse_signature(goal, expected):
    assert S.parse_signature(goal) == expected


def test_parse_examples_normalises_literals_and_ignores_junk():
    goal = "f(x) e.g. add(1, 2) == 3, add(-1, 1) -> 0, add(2, 2) returns four, add(0, (1)) == 1."
    assert S.parse_examples(goal, "add") == [
        {"call": "add(1, 2)", "result": "3"}, {"call": "add(-1, 1)", "result": "0"},
        {"call": "add(0, (1))", "result": "1"}]
    assert S.parse_examples("s(\"a\") == 'x'", "s") == [{"call": 's("a")', "result": "'x'"}]


def test_describe_takes_the_clause_after_that():
    goal = "Create a skill `reverse_words(text: str) -> str` that reverses the order of words, e.g. x"
    assert S.describe(goal, "reverse_words") == "Reverses the order of words."


def test_stub_and_tests_from_examples_are_valid_python():
    compile(S.stub(SPEC) + "    return text\n", "m", "exec")
    tests = S.tests_from_examples("reverse_words", SPEC["examples"])
    assert "assert reverse_words('a b') == 'b a'" in tests
    compile(tests, "t", "exec")


@pytest.mark.parametrize("reply, expected", [
    ("Sure!\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
    ("```py\nimport os\n```\n```python\ndef f():\n    return 2\n```", "def f():\n    return 2\n"),
    ("def f():\n    return 3", "def f():\n    return 3\n"),
    ("```python\ndef f(:\n```", "def f(:\n"),  # kept: the sandbox reports the syntax error
    ("```python\nprint('no function')\n```", None),
    ("I can't do that.", None),
    ("", None),
])
def test_extract_code(reply, expected):
    assert S.extract_code(reply) == expected


def test_complete_module_keeps_only_the_body():
    module = S.complete_module(SPEC, "    return ' '.join(reversed(text.split()))\n\nprint(reverse_words('x'))")
    assert module is not None and module.endswith("return ' '.join(reversed(text.split()))\n")
    assert "print(" not in module
    assert S.complete_module(SPEC, "\n\n") is None
    assert S.complete_module(SPEC, "    return (\n") is None


@pytest.mark.parametrize("reply", [
    "not json", "[1, 2]", '{"name": "Bad Name", "signature": "x() -> int", "tests": "def test(): pass"}',
    '{"name": "f", "signature": "g(a) -> int", "tests": "def test_a(): pass"}',
    '{"name": "f", "signature": "f(a -> int", "tests": "def test_a(): pass"}',
    '{"name": "f", "signature": "f(a) -> int", "examples": [], "tests": "oops("}',
])
def test_parse_plan_rejects_unusable_replies(reply):
    assert S.parse_plan(reply, name_hint=None) is None


def test_parse_plan_accepts_fenced_json_and_falls_back_to_example_tests():
    reply = '```json\n{"name": "f", "signature": "def f(a: int) -> int:", "description": "Doubles.",' \
            ' "examples": [{"call": "f(2)", "result": "4"}], "tests": ""}\n```'
    spec = S.parse_plan(reply, name_hint=None)
    assert spec is not None and spec["signature"] == "f(a: int) -> int"
    assert "assert f(2) == 4" in spec["tests"]
