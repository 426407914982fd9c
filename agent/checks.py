"""Checks whose expected values no model wrote: properties from the signature, the over-fitting
guard, held-back examples, and the test module a run executes.

The property checks are rendered as a pytest module (``PROPERTY_TESTS``) that runs in the sandbox
with the other tests: inputs are drawn by ``hypothesis`` from the annotated parameter types, and
each case must (1) not raise, beyond ``ValueError`` for invalid input, exceptions the skill
raises on purpose or names in its docstring, and domain errors (``ArithmeticError``,
``LookupError``) on an empty or zero input (``mean([])``, ``modp(3, 0)``: inputs the function is
not for), (2) return within 2 s (the failure names the input, sooner than the run's timeout),
(3) return what the annotation says (``typeguard``), (4) return the same result when called
again with the same arguments.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from string import Template

from agent.spec import tests_from_examples
from agent.state import Evidence, Example, SkillSpec

PROPERTY_CASES = 50  # hypothesis examples per run (each must be fast: the sandbox times out at 15 s)
PROPERTY_TEST_NAME = "test_properties_from_signature"
AUTOMATIC_MARK = "# ---- automatic checks from the signature"

PROPERTY_TESTS = Template('''

$mark (written by the agent, not by a model) ----
import ast as _ast
import copy as _copy
import inspect as _inspect
import re as _re
import signal as _signal
import types as _types
import typing as _typing

import pytest as _pytest
from hypothesis import HealthCheck as _HealthCheck
from hypothesis import given as _given
from hypothesis import settings as _settings
from hypothesis import strategies as _st
from typeguard import TypeCheckError as _TypeCheckError
from typeguard import check_type as _check_type

from $name import $name as _skill

_PLANNED = $params
# An explicit alphabet: hypothesis' default one builds a Unicode table (~2 s) that it cannot
# cache inside the sandbox.
_ALPHABET = _st.sampled_from(" !#%&()*+,-./0123456789:;<=>?@ABCXYZ[]_abcxyz{|}~\\t\\n\\"\\'éü€中😀")
_BASIC = {int: _st.integers(0, 25), float: _st.floats(-1e3, 1e3, allow_nan=False),
          str: _st.text(alphabet=_ALPHABET, max_size=30), bool: _st.booleans(), bytes: _st.binary(max_size=30),
          type(None): _st.none()}


def _strategy(tp):
    """Small, fast inputs of an annotated type; None where no strategy can be made."""
    if tp in _BASIC:
        return _BASIC[tp]
    origin, args = _typing.get_origin(tp), _typing.get_args(tp)
    if tp in (_typing.Any, object):
        return _st.one_of(_BASIC[int], _BASIC[str], _st.none())
    if origin in (_typing.Union, _types.UnionType):
        parts = [_strategy(a) for a in args]
        return None if None in parts else _st.one_of(*parts)
    inner = [_strategy(a) for a in args if a is not Ellipsis] or [_BASIC[int]]
    if None in inner:
        return None
    if tp in (list, set, frozenset, tuple, dict) or origin in (list, set, frozenset, tuple, dict):
        kind = origin or tp
        if kind is dict:
            return _st.dictionaries(_BASIC[str] if not args else inner[0],
                                    inner[-1] if args else _BASIC[int], max_size=6)
        if kind is tuple and args and Ellipsis not in args:
            return _st.tuples(*inner)
        items = _st.lists(inner[0], max_size=8)
        return items.map(kind) if kind is not list else items
    try:
        return _st.from_type(tp)
    except Exception:
        return None


def _documented_names():
    """Exceptions the skill raises on purpose or names in its docstring, plus ValueError."""
    names = {"ValueError"}
    try:
        tree = _ast.parse(_inspect.getsource(_inspect.getmodule(_skill)))
    except (OSError, TypeError, SyntaxError):
        tree = _ast.Module(body=[], type_ignores=[])
    for node in _ast.walk(tree):
        if isinstance(node, _ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, _ast.Call) else node.exc
            if isinstance(exc, _ast.Name):
                names.add(exc.id)
            elif isinstance(exc, _ast.Attribute):
                names.add(exc.attr)
    names.update(_re.findall(r"\\b([A-Z]\\w*(?:Error|Exception))\\b", _skill.__doc__ or ""))
    return names


def _empty(value):
    """0, an empty string or container: the input a function with a precondition is not for."""
    try:
        return value == 0 or (hasattr(value, "__len__") and len(value) == 0)
    except Exception:
        return False


def _documented(err, args):
    """Raised on purpose or named in the docstring; or a domain error (a division by zero, a
    missing key or index) on an empty or zero input (``mean([])``, ``modp(3, 0)``): an input the
    function is not for. The same error on any other input is a bug (a KeyError on a space)."""
    if isinstance(err, (ArithmeticError, LookupError)) and any(_empty(v) for v in args.values()):
        return True
    return any(cls.__name__ in _DOCUMENTED for cls in _inspect.getmro(type(err)))


class _Slow(BaseException):
    """One input took longer than the checks give one case (raised inside the skill)."""


class _TooSlow(AssertionError):
    """The case's failure: the input and how long it was given."""


_CASE_SECONDS = 2.0  # one input over this fails, naming the input (faster than the run's timeout)


def _timed(call, shown):
    """``call()``; past ``_CASE_SECONDS`` an AssertionError that names the call."""
    def _stop(signum, frame):
        raise _Slow

    previous = _signal.signal(_signal.SIGALRM, _stop)
    _signal.setitimer(_signal.ITIMER_REAL, _CASE_SECONDS)
    try:
        return call()
    except _Slow:
        raise _TooSlow(f"{shown} did not return within {_CASE_SECONDS:g} s") from None
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, previous)


def test_signature_matches_the_plan():
    assert callable(_skill), "$name is not a function"
    found = list(_inspect.signature(_skill).parameters)
    assert found == _PLANNED, f"$name takes {found}, the plan says {_PLANNED}"


def _hints():
    try:
        return _typing.get_type_hints(_skill)
    except Exception:
        return {}


_HINTS = _hints()
_STRATEGIES = {p: _strategy(_HINTS[p]) for p in _PLANNED if p in _HINTS}
_RETURNS = _HINTS.get("return", _typing.Any)
_DOCUMENTED = _documented_names()


@_pytest.mark.skipif(not _PLANNED or len(_STRATEGIES) < len(_PLANNED) or None in _STRATEGIES.values(),
                     reason="no input strategy for every parameter's annotation")
@_settings(max_examples=$cases, deadline=None, database=None, derandomize=True,
           suppress_health_check=list(_HealthCheck))
@_given(_st.fixed_dictionaries(_STRATEGIES if None not in _STRATEGIES.values() else {}))
def $test_name(args):
    call = "$name(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"
    try:
        first = _timed(lambda: _skill(**_copy.deepcopy(args)), call)
    except _TooSlow:
        raise
    except Exception as err:
        if _documented(err, args):
            return
        raise AssertionError(f"{call} raised {type(err).__name__}: {err}") from None
    try:
        _check_type(first, _RETURNS)
    except _TypeCheckError as err:
        raise AssertionError(f"{call} returned {first!r}, not the annotated type: {err}") from None
    again = _timed(lambda: _skill(**_copy.deepcopy(args)), call)
    assert again == first or (again != again and first != first), \\
        f"{call} returned {first!r}, then {again!r} when called again"
''')


def parameters(signature: str) -> list[str]:
    """The parameter names of ``name(args) -> type``."""
    node = ast.parse(f"def {signature}: pass").body[0]
    assert isinstance(node, ast.FunctionDef)
    a = node.args
    return [p.arg for p in [*a.posonlyargs, *a.args, *([a.vararg] if a.vararg else []), *a.kwonlyargs,
                            *([a.kwarg] if a.kwarg else [])]]


# Annotations the property strategies cover without guessing (anything else may still get a
# strategy from hypothesis in the sandbox, but is not counted as evidence).
KNOWN_TYPES = {"int", "float", "str", "bool", "bytes", "None", "list", "dict", "tuple", "set", "frozenset",
               "Any", "object", "Optional", "Union", "List", "Dict", "Tuple", "Set", "typing"}


def property_ready(signature: str) -> bool:
    """True when every parameter has an annotation the property strategies cover."""
    node = ast.parse(f"def {signature}: pass").body[0]
    assert isinstance(node, ast.FunctionDef)
    a = node.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    if not params or a.vararg or a.kwarg or any(p.annotation is None for p in params):
        return False
    names = {n.id if isinstance(n, ast.Name) else n.attr for p in params for n in ast.walk(p.annotation)
             if isinstance(n, (ast.Name, ast.Attribute))}
    constants = [n for p in params for n in ast.walk(p.annotation) if isinstance(n, ast.Constant)]
    return names <= KNOWN_TYPES and all(c.value is None or c.value is Ellipsis for c in constants)


def status_of(evidence: Evidence) -> str:
    """``working`` needs at least one expected value from the user or written before any code;
    passing only the automatic checks is ``untested``."""
    trusted = evidence["user_examples"] + evidence["plan_tests"] + evidence["confirmed"] + evidence["held_back"]
    return "working" if trusted > 0 else "untested"


def describe_evidence(evidence: Evidence, *, planned: bool = False) -> str:
    """E.g. "2 user examples · 1 held back · 50 property cases" (or what a plan will check)."""
    parts = [f"{n} {label}{'' if n == 1 or label.endswith('back') else 's'}" for n, label in (
        (evidence["user_examples"], "user example"), (evidence["plan_tests"], "plan test"),
        (evidence["confirmed"], "confirmed example"), (evidence["held_back"], "held back"),
        (evidence["property_cases"], "property case")) if n]
    if not parts:
        return "no expected values: automatic checks only" if planned else "automatic checks only"
    return " · ".join(parts)


def property_tests(spec: SkillSpec) -> str:
    """The automatic checks for ``spec``'s signature, as pytest source to append to its tests."""
    return PROPERTY_TESTS.substitute(mark=AUTOMATIC_MARK, name=spec["name"], params=repr(parameters(spec["signature"])),
                                     cases=PROPERTY_CASES, test_name=PROPERTY_TEST_NAME)


def test_module(spec: SkillSpec, *, with_holdout: bool = False) -> str:
    """The test file a run executes: the trusted tests, the property checks, and (once the loop
    is over) the held-back examples."""
    parts = [spec["tests"].rstrip()] if spec["tests"].strip() else [f"from {spec['name']} import {spec['name']}"]
    if with_holdout and spec["holdout"]:
        parts.append(tests_from_examples(spec["name"], spec["holdout"], prefix="held_back"))
    parts.append(property_tests(spec))
    return "\n\n".join(parts).rstrip() + "\n"


def holdout_tests(spec: SkillSpec) -> str:
    """Only the held-back examples, for the check at the end."""
    return tests_from_examples(spec["name"], spec["holdout"], prefix="held_back")


# ---- probes: calls whose results the user is asked to confirm ----------------------------------

PROBE_MARK = "AGENT-PROBE"


@dataclass(frozen=True)
class Observed:
    """What a call returned when the skill ran it in the sandbox."""

    call: str  # e.g. "is_valid_json('[1]')"
    result: str  # the repr of the value, or "raised ValueError: ..." when it raised
    raised: bool
    size: int = -1  # characters of the whole repr (``result`` is cut to the probe's limit); -1: not run

    @property
    def whole(self) -> bool:
        """Whether ``result`` is all of it (not cut to the probe's limit)."""
        return 0 <= self.size <= len(self.result)


def probe_tests(name: str, calls: list[str], *, limit: int = 300, setup: str = "") -> str:
    """A test module that reports each call's repr (or what it raised), cut to ``limit``
    characters, with its whole length, through a failed assertion, the one channel pytest always
    prints; ``read_probes`` reads them back. ``setup`` is module code the calls may use."""
    lines = ["import json", f"from {name} import {name}", *([setup] if setup else []), ""]
    for i, call in enumerate(calls):
        lines += [f"def test_probe_{i}():", "    try:", f"        seen, how = repr({call}), 'returned'",
                  "    except Exception as err:",
                  "        seen, how = 'raised %s: %s' % (type(err).__name__, err), 'raised'",
                  f"    shown = json.dumps(seen[:{int(limit)}])",
                  f"    raise AssertionError('{PROBE_MARK} {i} %s %d ' % (how, len(seen)) + shown)",
                  ""]
    return "\n".join(lines)


def read_probes(output: str, calls: list[str]) -> list[Observed]:
    """The observed results, in call order (a call whose line is missing reads as not run)."""
    seen: dict[int, Observed] = {}
    for match in re.finditer(rf"{PROBE_MARK} (\d+) (returned|raised) (\d+) (\"(?:[^\"\\\n]|\\.)*\")", output):
        i = int(match.group(1))
        try:
            if 0 <= i < len(calls) and i not in seen:
                seen[i] = Observed(calls[i], json.loads(match.group(4)), match.group(2) == "raised",
                                   int(match.group(3)))
        except ValueError:  # a line pytest cut short
            continue
    return [seen.get(i, Observed(call, "raised nothing: the call did not run", True)) for i, call in enumerate(calls)]


# ---- the over-fitting guard --------------------------------------------------------------------

def _distinctive(value: object) -> bool:
    """A literal specific enough that comparing a parameter with it means special-casing a test."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return abs(value) > 2
    if isinstance(value, (str, bytes)):
        return len(value.strip()) >= 2
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return len(value) > 0
    return False


def _literal(node: ast.AST) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


_NOT_LITERAL = object()


def _example_inputs(examples: list[Example]) -> list[tuple[object, object]]:
    """(argument, result) pairs of the examples' distinctive literal arguments."""
    pairs = []
    for example in examples:
        try:
            call = ast.parse(example["call"], mode="eval").body
            result = ast.literal_eval(example["result"])
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(call, ast.Call):
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                value = _literal(arg)
                if value is not _NOT_LITERAL and _distinctive(value):
                    pairs.append((value, result))
    return pairs


def _ignores_its_parameters(tree: ast.Module, name: str) -> str | None:
    """Why the skill's function can only return one thing whatever it is given (it reads none of
    its own parameters, nor ``locals()``/``vars()``), or None."""
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]
    if not functions:
        return None
    function = functions[-1]
    a = function.args
    params = {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                              *([a.kwarg] if a.kwarg else [])]}
    if not params:
        return None
    read = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    read |= {n.target.id for n in ast.walk(function) if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)}
    if read & (params | {"locals", "vars"}):
        return None
    return (f"{name} never reads its parameters ({', '.join(sorted(params))}), so it returns the same for "
            "every input: write the general rule, not the examples")


def overfit(code: str, spec: SkillSpec) -> str | None:
    """Why ``code`` special-cases the shown examples (a parameter compared with an example's input,
    a table whose entries are mostly the examples, or a function that never reads its parameters,
    so returns the same for every input), or None."""
    pairs = _example_inputs(spec["examples"])
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    ignored = _ignores_its_parameters(tree, spec["name"]) if spec["examples"] else None
    if ignored or not pairs:
        return ignored
    inputs = [p[0] for p in pairs]
    params = set(parameters(spec["signature"]))

    def is_input(node: ast.AST) -> bool:
        value = _literal(node)
        if value is _NOT_LITERAL:
            return False
        values = value if isinstance(value, (tuple, list, set, frozenset)) and value not in inputs else [value]
        return any(v == i and type(v) is type(i) for v in values for i in inputs)

    def mentions_param(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id in params for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.comparators) == 1 \
                and isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)):
            left, right = node.left, node.comparators[0]
            if (mentions_param(left) and is_input(right)) or (mentions_param(right) and is_input(left)):
                return (f"line {node.lineno} compares a parameter with an example's input "
                        f"({ast.unparse(node)[:80]}): write the general rule, not the examples")
        if isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue) \
                and is_input(node.pattern.value):
            return (f"line {node.pattern.lineno} matches an example's input: write the general rule, "
                    "not the examples")
        if isinstance(node, ast.Dict) and node.keys:
            hits = sum(1 for k in node.keys if k is not None and is_input(k))
            if hits and hits * 2 >= len(node.keys):
                return (f"line {node.lineno} looks results up in a table of the examples' inputs: "
                        "write the general rule, not the examples")
    return None
