"""Parsing directives and model replies: pure functions, botched input gives None, never raises."""

from __future__ import annotations

import json

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
    assert "got = reverse_words('a b')\n    assert got == 'b a', f\"reverse_words('a b') returned {got!r}" in tests
    compile(tests, "t", "exec")


def test_stub_doctests_read_as_written_none_prints_nothing_and_a_preamble_comes_first():
    import doctest

    spec = {**SPEC, "name": "f", "signature": "f(text: str) -> str | None",
            "examples": [{"call": "f('a\\nb')", "result": "'a\\\\b'"}, {"call": "f('')", "result": "None"}],
            "preamble": "import re\n\nSEP = re.compile(' ')"}
    module = S.stub(spec) + "    return None if not text else text.replace('\\n', '\\\\')\n"
    assert module.startswith("import re\n\nSEP = re.compile(' ')\n\n\ndef f(") and '    r"""' in module
    namespace: dict = {}
    exec(compile(module, "f", "exec"), namespace)  # noqa: S102 - our own stub
    test = doctest.DocTestParser().get_doctest(namespace["f"].__doc__, namespace, "f", "f.py", 0)
    assert [e.source.strip() for e in test.examples] == ["f('a\\nb')", "f('')"]
    assert doctest.DocTestRunner().run(test, out=lambda text: None).failed == 0
    assert '    """' in S.stub(SPEC)  # no backslash: a plain docstring, as before


def test_with_preamble_adds_what_a_chat_model_left_out():
    spec = {**SPEC, "preamble": "from typing import List\n\n\ndef helper(x):\n    return x"}
    whole = "from typing import List\n\ndef helper(x):\n    return x\n\ndef reverse_words(text): ...\n"
    assert S.with_preamble(spec, whole) == whole
    code = "from __future__ import annotations\n\ndef reverse_words(text: List[str]): ...\n"
    assert S.with_preamble(spec, code) == (
        "from __future__ import annotations\nfrom typing import List\n\n\n"
        "def helper(x):\n    return x\n\n\n\ndef reverse_words(text: List[str]): ...\n")
    assert S.with_preamble(SPEC, code) == code and S.with_preamble(spec, "def (") == "def ("


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
])
def test_parse_plan_rejects_unusable_replies(reply):
    assert S.parse_plan(reply, name_hint=None) is None


def test_parse_plan_accepts_fenced_json_and_falls_back_to_example_tests():
    reply = '```json\n{"name": "f", "signature": "def f(a: int) -> int:", "description": "Doubles.",' \
            ' "examples": [{"call": "f(2)", "result": "4"}], "tests": ""}\n```'
    spec = S.parse_plan(reply, name_hint=None)
    assert spec is not None and spec["signature"] == "f(a: int) -> int"
    assert "got = f(2)\n    assert got == 4" in spec["tests"]


# ---- salvage: what a chat model's reply holds is used, whatever its shape ----------------------

PLAN_JSON = '{"name": "is_even", "signature": "is_even(n: int) -> bool", "description": "True for even n."'


def test_plan_tests_from_a_fenced_block_outside_the_json():
    reply = (f"Here is the plan:\n```json\n{PLAN_JSON}, \"examples\": []}}\n```\nAnd the tests:\n"
             "```python\nfrom is_even import is_even\n\ndef test_two():\n    assert is_even(2) is True\n```\n")
    spec = S.parse_plan(reply, name_hint=None)
    assert spec is not None and spec["signature"] == "is_even(n: int) -> bool"
    assert "def test_two" in spec["tests"] and spec["evidence"]["plan_tests"] == 1


def test_plan_tests_as_a_list_of_asserts_and_examples_as_strings():
    reply = PLAN_JSON + ', "examples": ["is_even(4) == True", "is_even(3) -> False"], ' \
                        '"tests": ["assert is_even(0)", "assert not is_even(7)"]}'
    spec = S.parse_plan(reply, name_hint=None)
    assert spec is not None
    assert spec["examples"] == [{"call": "is_even(4)", "result": "True"}, {"call": "is_even(3)", "result": "False"}]
    assert "assert is_even(0)" in spec["tests"] and "from is_even import is_even" in spec["tests"]
    compile(spec["tests"], "t", "exec")


def test_plan_without_tests_or_examples_is_still_a_plan():
    spec = S.parse_plan('{"signature": "def slugify(text: str) -> str:", "tests": "oops("}', name_hint=None)
    assert spec is not None and spec["name"] == "slugify" and spec["tests"] == ""
    assert spec["description"] == "Slugify."


def test_plan_json_inside_prose_with_other_braces():
    reply = "I'd use a dict like {a: 1} here.\n" + PLAN_JSON + ', "examples": [{"call": "is_even(2)", ' \
            '"result": true}], "tests": ""}\nDone {really}.'
    spec = S.parse_plan(reply, name_hint="even_check")
    assert spec is not None and spec["name"] == "even_check"
    assert spec["examples"] == [{"call": "even_check(2)", "result": "True"}]


def test_code_after_a_json_fence_is_found():
    reply = ("```json\n{\"name\": \"f\"}\n```\n\nNow the module:\n\n```python\ndef f(a: int) -> int:\n"
             "    return a\n```\n")
    assert S.extract_code(reply) == "def f(a: int) -> int:\n    return a\n"
    tilde = "~~~python\ndef g():\n    return {'x': '```'}\n~~~\n"
    assert S.extract_code(tilde) == "def g():\n    return {'x': '```'}\n"


def test_a_skill_never_takes_a_module_name_python_needs():
    reply = json.dumps({"name": "base64", "signature": "base64(text: str) -> str", "description": "Encode.",
                        "examples": [{"call": "base64('hi')", "result": "'aGk='"}],
                        "tests": "from base64 import base64\n\ndef test_hi():\n    assert base64('hi') == 'aGk='\n"})
    spec = S.parse_plan(reply, name_hint=None)
    assert spec is not None and spec["name"] == "base64_skill"
    assert spec["signature"] == "base64_skill(text: str) -> str"
    assert spec["examples"] == [{"call": "base64_skill('hi')", "result": "'aGk='"}]
    assert "from base64_skill import base64_skill as base64\n" in spec["tests"]
    assert [S.module_name(n) for n in ("json", "print", "class", "slugify")] == [
        "json_skill", "print_skill", "class_skill", "slugify"]


# ---- long directives: parsing is linear (it was quadratic, and thousands of words ran out of memory) ----

@pytest.mark.parametrize("text, expected", [
    ("1.", "1"), ("3, f(2) == 4", "3"), ("'a' 'b' then", "'ab'"), ("[1,\n 2] and", "[1, 2]"),
    ("-3 and", "-3"), ("1+2j.", "(1+2j)"), ("set() or", "set()"), ("True!", "True"), ("None.", "None"),
    ('{"a": [1, (2, 3)]}, ok', "{'a': [1, (2, 3)]}"), ("  7", "7"), ("1 1 1", "1"), ("b'x'y", "b'x'"),
    ("'unclosed", None), ("((1)", None), ("four", None), ("", None),
])
def test_leading_literal(text, expected):
    assert S.leading_literal(text) == expected


@pytest.mark.parametrize("goal, examples", [
    pytest.param("f(1) == 1, " * 1800, 1800, id="many-examples"),
    pytest.param("f(" * 10_000, 0, id="calls-never-closed"),
    pytest.param("f(1) == " + "1 + " * 4000, 0, id="an-operator-chain"),
    pytest.param("f(1) == '" * 2000, 1999, id="strings-opened-everywhere"),
    pytest.param("f(1) == " + "[" * 19_000, 0, id="brackets-never-closed"),
    pytest.param("`f(x: int) -> " + "a " * 9000, 0, id="a-return-annotation-of-9000-words"),
])
def test_a_long_goal_costs_a_bounded_number_of_parses(goal, examples, monkeypatch):
    assert len(goal) <= S.MAX_LINE_CHARS
    parses, real_parse = [], S.ast.parse

    def counting_parse(source, *args, **kwargs):
        parses.append(len(source))
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(S.ast, "parse", counting_parse)  # literal_eval parses through it too
    assert len(S.parse_examples(goal, "f")) == examples
    S.parse_signature(goal)
    S.describe(goal, "f")
    assert len(parses) <= S.MAX_LITERAL_TRIES * goal.count("f(") + S.MAX_ANNOTATION_WORDS + 1
    assert sum(parses) <= (S.MAX_LITERAL_TRIES + 1) * len(goal)  # the old code parsed every prefix
