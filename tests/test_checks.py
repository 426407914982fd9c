"""Checks no model wrote: property checks from the signature (run in the real sandbox), the
over-fitting guard, and what earns ``working``."""

from __future__ import annotations

import pytest

from agent import checks
from agent.core import AutonomousAgent
from agent.spec import new_evidence
from tests.conftest import FakeModel


def spec_for(signature: str, examples: list[dict] | None = None) -> dict:
    name = signature.split("(")[0]
    return {"name": name, "signature": signature, "description": "x.", "examples": examples or [],
            "tests": "", "holdout": [], "probes": [], "evidence": new_evidence()}


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> AutonomousAgent:
    return AutonomousAgent(workspace=tmp_path_factory.mktemp("ws"), model=FakeModel())


@pytest.mark.parametrize("signature, body, ok, says", [
    ("double(n: int) -> int", "return n * 2", True, ""),
    ("is_json(text: str) -> bool", "import json\n    try:\n        json.loads(text)\n    except ValueError:\n"
     "        return False\n    return True", True, ""),
    # raising ValueError on invalid input is the documented Python convention
    ("parse_int(text: str) -> int", "return int(text)", True, ""),
    # a domain error (an index, a key, a division by zero) on an empty or zero input says the input
    # is not one the function is for: HumanEval's canonical solutions have such (mean([]), modp(3, 0))
    ("first(items: list[int]) -> int", "return items[0]", True, ""),
    ("ratio(a: int, b: int) -> float", "return a / b", True, ""),
    # the same errors on any other input are bugs: a KeyError on a space
    ("letter_counts(s: str) -> dict[str, int]", "counts = {}\n    for c in s:\n        if c.isalpha():\n"
     "            counts[c] = counts.get(c, 0) + 1\n        else:\n            counts['other'] += 1\n"
     "    return counts", False, "raised KeyError"),
    # a bug whatever the input is still one
    ("first_word(text: str) -> str", "return text.split()[0].upper(1)", False, "raised TypeError"),
    ("missing(n: int) -> int", "return undefined_name + n", False, "raised NameError"),
    # an input it does not return on fails, named, in 2 s rather than at the run's timeout
    ("strip_zeros(n: int) -> int", "while n % 10 == 0:\n        n //= 10\n    return n", False,
     "strip_zeros(n=0) did not return within 2 s"),
    ("words(text: str) -> bool", "return text.split(' ')", False, "not the annotated type"),
    ("noisy(n: int) -> int", "import random\n    return n + random.randint(0, 10**9)", False,
     "when called again"),
    ("pick(d: dict[str, int], key: str) -> int | None", "return d.get(key)", True, ""),
    ("wrong_arity(a: int) -> int", None, False, "the plan says ['a']"),
])
def test_property_checks_in_the_sandbox(agent, signature, body, ok, says):
    spec = spec_for(signature)
    code = (f"def {signature}:\n    {body}\n" if body is not None
            else f"def {spec['name']}(a: int, b: int) -> int:\n    return a\n")
    outcome = agent.execute(spec["name"], code, checks.test_module(spec))
    assert outcome.run is not None
    assert outcome.run.ok is ok, outcome.run.output[-1500:]
    assert says in outcome.run.output


def test_an_exception_the_skill_raises_on_purpose_is_allowed(agent):
    spec = spec_for("checked(n: int) -> int")
    code = "def checked(n: int) -> int:\n    if n > 10:\n        raise OverflowError('too big')\n    return n\n"
    outcome = agent.execute("checked", code, checks.test_module(spec))
    assert outcome.run is not None and outcome.run.ok, outcome.run.output[-1500:]


@pytest.mark.parametrize("signature, ready", [
    ("f(a: int, b: list[str]) -> bool", True), ("f(a: dict[str, int] | None) -> int", True),
    ("f(a) -> int", False), ("f(a: MyType) -> int", False), ("f(*args: int) -> int", False),
    ("f(a: typing.Callable) -> int", False), ("f(a: Literal['x']) -> int", False),
])
def test_property_ready(signature, ready):
    assert checks.property_ready(signature) is ready


EXAMPLES = [{"call": "to_roman(4)", "result": "'IV'"}, {"call": "to_roman(9)", "result": "'IX'"}]


@pytest.mark.parametrize("code, caught", [
    ("def to_roman(n: int) -> str:\n    if n == 4:\n        return 'IV'\n    return 'IX'\n", "compares a parameter"),
    ("def to_roman(n: int) -> str:\n    return {4: 'IV', 9: 'IX'}[n]\n", "table of the examples"),
    ("def to_roman(n: int) -> str:\n    if n in (4, 9):\n        return 'IV' if n < 5 else 'IX'\n",
     "compares a parameter"),
    ("def to_roman(n: int) -> str:\n    match n:\n        case 9:\n            return 'IX'\n", "matches"),
    # a legitimate numeral table mentions the examples but is mostly the rule, not the examples
    ("def to_roman(n: int) -> str:\n    table = {1000: 'M', 900: 'CM', 500: 'D', 400: 'CD', 100: 'C', 90: 'XC',"
     " 50: 'L', 40: 'XL', 10: 'X', 9: 'IX', 5: 'V', 4: 'IV', 1: 'I'}\n    out = ''\n    for v, s in table.items():\n"
     "        while n >= v:\n            out, n = out + s, n - v\n    return out\n", None),
    # base cases with small literals are not special-casing
    ("def to_roman(n: int) -> str:\n    if n == 0:\n        return ''\n    return 'I' * n\n", None),
    # never reading the parameter: the same result for every input (HumanEval/2's false working)
    ("def to_roman(n: int) -> str:\n    return 'IV' if 3 > 0 else 'IX'\n", "never reads its parameters"),
    ("def to_roman(n: int) -> str:\n    x = 4\n    return 'IV' if x < 5 else 'IX'\n", "never reads its parameters"),
    ("def to_roman(n: int) -> str:\n    n = 4\n    return 'IV'\n", "never reads its parameters"),
    ("def to_roman(n: int) -> str:\n    def inner():\n        return n\n    return str(inner())\n", None),
    ("def to_roman(n: int) -> str:\n    return helper(**locals())\n", None),
    # its own names count: a renamed parameter (the signature test says so), an augmented assignment
    ("def to_roman(num: int) -> str:\n    return 'I' * num\n", None),
    ("def to_roman(n: int) -> str:\n    n += 1\n    return 'I'\n", None),
    ("def to_roman(*numbers: int) -> str:\n    return 'I' * len(numbers)\n", None),
])
def test_overfit_guard(code, caught):
    found = checks.overfit(code, spec_for("to_roman(n: int) -> str", EXAMPLES))
    assert (found is None) if caught is None else (found is not None and caught in found)


def test_a_constant_function_is_caught_even_when_no_example_input_is_distinctive():
    spec = spec_for("is_even(n: int) -> bool", [{"call": "is_even(2)", "result": "True"}])
    assert "never reads its parameters" in checks.overfit("def is_even(n: int) -> bool:\n    return True\n", spec)
    assert checks.overfit("def is_even(n: int) -> bool:\n    return n % 2 == 0\n", spec) is None


def test_factorial_base_case_is_not_overfitting():
    spec = spec_for("factorial(n: int) -> int", [{"call": "factorial(0)", "result": "1"},
                                                  {"call": "factorial(5)", "result": "120"}])
    code = "def factorial(n: int) -> int:\n    if n == 0:\n        return 1\n    return n * factorial(n - 1)\n"
    assert checks.overfit(code, spec) is None
    cheat = "def factorial(n: int) -> int:\n    if n == 5:\n        return 120\n    return 1\n"
    assert "compares a parameter" in checks.overfit(cheat, spec)


@pytest.mark.parametrize("counts, status", [
    ({}, "untested"), ({"property_cases": 50}, "untested"), ({"user_examples": 1}, "working"),
    ({"plan_tests": 2}, "working"), ({"confirmed": 1}, "working"), ({"held_back": 1}, "working"),
])
def test_status_needs_evidence_no_code_writing_call_produced(counts, status):
    assert checks.status_of(new_evidence(**counts)) == status


def test_probes_report_values_and_exceptions_through_the_sandbox(agent):
    code = "def half(n: int) -> float:\n    if n < 0:\n        raise ValueError('negative')\n    return n / 2\n"
    seen = agent.observe("half", code, ["half(3)", "half(-1)", "half('x')"])
    assert [(s.call, s.result, s.raised) for s in seen] == [
        ("half(3)", "1.5", False), ("half(-1)", "raised ValueError: negative", True),
        ("half('x')", "raised TypeError: '<' not supported between instances of 'str' and 'int'", True)]


def test_an_exception_named_in_the_docstring_is_documented(agent):
    spec = spec_for("lookup(key: str) -> int")
    code = ('def lookup(key: str) -> int:\n    """The value of key.\n\n'
            '    Raises TypeError for unknown keys.\n    """\n'
            "    unknown = None\n    return 1 if key == 'a' else unknown + 1\n")
    outcome = agent.execute("lookup", code, checks.test_module(spec))
    assert outcome.run is not None and outcome.run.ok, outcome.run.output[-1500:]
    undocumented = code.replace("Raises TypeError for unknown keys.", "Looks it up.")
    outcome = agent.execute("lookup", undocumented, checks.test_module(spec))
    assert not outcome.run.ok and "raised TypeError" in outcome.run.output


@pytest.mark.parametrize("doc, ok", [
    # written as an assertion, with nothing after it: True passes, False does not
    (">>> shout('a') == 'A'", True),
    (">>> shout('a') == 'B'", False),
    # compared as values: the quotes a docstring uses are not the repr's
    ('>>> shout(\'ab\')\n    "AB"', True),
    ('>>> [shout(\'ab\')]\n    ["AB"]', True),
    (">>> shout('ab')\n    'ab'", False),
    (">>> len(shout('ab'))\n    2.0", False),   # 2 == 2.0, but an int is not the float shown
    # a docstring doctest cannot parse (a literal newline inside an example) has no examples
    (">>> shout('a\nb')\n    'A\nB'", True),
])
def test_doctests_compare_values(agent, doc, ok):
    code = f'def shout(text: str) -> str:\n    """Shout.\n\n    {doc}\n    """\n    return text.upper()\n'
    outcome = agent.execute("shout", code, "from shout import shout\n\ndef test_a():\n    assert shout('x') == 'X'\n")
    assert outcome.run is not None and outcome.run.ok is ok, outcome.run.output[-1500:]
