"""Calling skills: ``agent.call`` through the real gates, approvals and sandbox, ``:run`` in the
REPL, and the MCP server end to end with the official SDK's own stdio client."""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from agent.core import AutonomousAgent
from agent.errors import AgentError, CallRefused, SkillCallError
from agent.mcp_server import annotation_schema, skill_shape
from agent.repl import parse_run, run_usage
from autonomous_agent import main
from safety.approvals import Decision
from tests.conftest import FakeModel
from tests.llm_servers import ollama_server  # noqa: F401  (fixture)
from tests.test_loop import GOOD, PLAN
from tests.test_repl import MODEL, server, session  # noqa: F401  (server is a fixture)

ROOT = Path(__file__).resolve().parent.parent

SKILLS = {
    "echo": ("echo(x: object) -> object", "Return x.", "def echo(x: object) -> object:\n    return x\n"),
    "boom": ("boom(text: str) -> str", "Always raise.",
             "def boom(text: str) -> str:\n    raise ValueError('bad ' + text + '\\nsecond line')\n"),
    "thing": ("thing() -> object", "An object that is no literal.",
              "class Thing:\n    def __repr__(self) -> str:\n        return '<Thing>'\n\n\n"
              "def thing() -> object:\n    return Thing()\n"),
    "longest": ("longest(n: int) -> str", "A long string.", "def longest(n: int) -> str:\n    return 'x' * n\n"),
    "sleepy": ("sleepy(seconds: float) -> int", "Sleep.",
               "import time\n\n\ndef sleepy(seconds: float) -> int:\n    time.sleep(seconds)\n    return 1\n"),
    "uses_ctypes": ("uses_ctypes() -> int", "Blocked.", "import ctypes\n\n\ndef uses_ctypes() -> int:\n    return 1\n"),
    "net_echo": ("net_echo(text: str) -> str", "Needs the network (never uses it).",
                 "import socket\n\n\ndef net_echo(text: str) -> str:\n    return text.upper()\n"),
    "scale": ("scale(items: list[int], factor: float = 2.0, *, label: str | None = None) -> dict",
              "Scale items.",
              "def scale(items: list[int], factor: float = 2.0, *, label: str | None = None) -> dict:\n"
              "    return {'label': label, 'items': [i * factor for i in items]}\n"),
    "deep": ("deep(n: int) -> list", "A list nested n deep.",
             "def deep(n: int) -> list:\n    value = []\n    for _ in range(n - 1):\n        value = [value]\n"
             "    return value\n"),
    "pair": ("pair(point: tuple[int, int], /) -> int", "Sum a pair.",
             "def pair(point: tuple[int, int], /) -> int:\n    assert isinstance(point, tuple)\n"
             "    return point[0] + point[1]\n"),
}


def nested(depth: int) -> list:
    """A list nested ``depth`` deep: nested(1) == [], nested(2) == [[]]."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def holds_itself() -> list:
    value: list = []
    value.append(value)
    return value


def add_skills(agent: AutonomousAgent, names: list[str] | None = None, status: str = "working") -> None:
    """Save skills as a finished directive would: files in the library, an entry in memory."""
    for name in names or list(SKILLS):
        signature, description, code = SKILLS[name]
        agent.library.save(name, code, f"from {name} import {name}\n")
        agent.memory.upsert_skill(name, status=status, signature=signature, description=description)


def sandboxed(agent: AutonomousAgent) -> AutonomousAgent:
    if agent.sandbox.level == "rlimits":
        pytest.skip("no sandbox works on this machine: generated code is refused")
    return agent


@pytest.fixture
def agent(workspace) -> AutonomousAgent:
    agent = sandboxed(AutonomousAgent(workspace=workspace, model=FakeModel()))
    add_skills(agent)
    return agent


# -- agent.call --------------------------------------------------------------------------------

def test_a_skill_made_by_a_directive_is_called_in_the_sandbox(workspace):
    agent = sandboxed(AutonomousAgent(workspace=workspace, model=FakeModel([PLAN, GOOD])))
    assert agent.run("Create a skill that adds two numbers").status == "working"
    assert agent.call("add_numbers", 2, 3) == 5
    assert agent.call("add_numbers", a=-1, b=10) == 9
    result = agent.call_result("add_numbers", 1, 1)
    assert (result.value, result.text, result.literal) == (2, "2", True)
    assert list(workspace.glob("exec/*")) == []  # the run directory went with the run


def test_arguments_and_results_round_trip_as_python_literals(agent):
    values = ["Hello World", 1.5, -7, None, True, b"\x00bytes", 2j, [1, (2, 3)], {"a": {1, 2}}, set(), (),
              "eval(__import__('os').system('x'))", "__init__", "line\nbreak 😀"]
    for value in values:
        assert agent.call("echo", value) == value and type(agent.call("echo", value)) is type(value)
    assert agent.call("echo", x="as keyword") == "as keyword"
    assert agent.call("scale", [1, 2], label="n") == {"label": "n", "items": [2.0, 4.0]}


def test_a_result_that_is_no_literal_comes_back_as_its_repr(agent):
    result = agent.call_result("thing")
    assert (result.value, result.text, result.literal) == ("<Thing>", "<Thing>", False)
    assert agent.call("thing") == "<Thing>"


def test_an_exception_in_the_skill_is_one_line_naming_it(agent):
    with pytest.raises(SkillCallError) as caught:
        agent.call("boom", "x")
    assert str(caught.value) == "boom('x') raised ValueError: bad x"
    assert (caught.value.exception, caught.value.message) == ("ValueError", "bad x")
    with pytest.raises(SkillCallError, match=r"^echo\(\) raised TypeError: .*missing 1 required"):
        agent.call("echo")


@pytest.mark.parametrize("call, message", [
    (("nothing_here",), "no saved skill named 'nothing_here' (see :skills)"),
    (("../../etc",), "invalid skill name '../../etc'"),
    (("echo", object()), "cannot call echo(<object object at"),
    (("echo", float("nan")), "arguments must be Python literals"),
    (("echo", frozenset({1})), "arguments must be Python literals"),
    # past a limit: refused naming it (a RecursionError, or "must be Python literals", before)
    (("echo", 10 ** 5000), "cannot call echo(...): an argument has an int of more than 4,300 digits (at most 4,300)"),
    (("echo", nested(200)), "an argument is nested more than 100 deep (at most 100)"),
    (("echo", nested(100_001)), "cannot call echo(...): an argument is nested more than 100 deep (at most 100)"),
    (("echo", holds_itself()), "an argument is nested more than 100 deep (at most 100)"),
    (("echo", list(range(100_001))), "the arguments are more than 100,000 characters as Python literals"),
])
def test_bad_calls_are_one_line_agent_errors(agent, call, message):
    with pytest.raises(AgentError) as caught:
        agent.call(*call)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [nested(100), 10 ** 4300 - 1, -(10 ** 4300 - 1), [nested(99), {"k": (1, 2.5)}]],
                         ids=["nested-100", "4300-digits", "minus-4300-digits", "mixed"])
def test_arguments_at_the_limits_reach_the_skill_unchanged(agent, value):
    assert agent.call("echo", value) == value


@pytest.mark.parametrize("depth, expected", [
    (100, nested(100)),
    (150, "deep(150) returned a value that is nested 150 deep (at most 100)"),
    (250, "deep(250) returned a value that is nested 250 deep (at most 100)"),  # a str before
])
def test_a_result_is_its_value_or_one_line_naming_the_limit(agent, depth, expected):
    if isinstance(expected, list):
        assert agent.call("deep", depth) == expected
        return
    with pytest.raises(AgentError) as caught:
        agent.call("deep", depth)
    assert str(caught.value) == expected


def test_a_bad_keyword_is_refused(agent):
    with pytest.raises(AgentError, match="'not valid' is not a parameter name"):
        agent.call("echo", **{"not valid": 1})


@pytest.mark.parametrize("status", ["failed", "broken_dependency"])
def test_only_working_and_untested_skills_can_be_called(agent, status):
    agent.memory.upsert_skill("echo", status="untested")
    assert agent.call("echo", 1) == 1
    agent.memory.upsert_skill("echo", status=status)
    with pytest.raises(AgentError, match=f"^echo is {status} .*cannot be called.*:test echo retests it"):
        agent.call("echo", 1)


def test_a_result_too_long_to_bring_back_is_one_line(agent):
    assert len(agent.call("longest", 7_000)) == 7_000
    with pytest.raises(AgentError, match="too long to bring back: its repr has 20,002 characters"):
        agent.call("longest", 20_000)


def test_the_sandbox_timeout_stops_a_call(workspace):
    agent = sandboxed(AutonomousAgent(workspace=workspace, model=FakeModel(), timeout=2))
    add_skills(agent, ["sleepy"])
    with pytest.raises(AgentError, match=r"sleepy\(30\) did not finish: the sandbox stopped it after 2 s"):
        agent.call("sleepy", 30)


def test_a_blocked_gate_is_one_line(agent):
    with pytest.raises(CallRefused, match="^uses_ctypes did not run: blocked by gate") as caught:
        agent.call("uses_ctypes")
    assert caught.value.denied == ()


def test_a_tier_two_need_is_asked_then_granted_or_denied(workspace):
    asked = []
    answers = iter([Decision.ONCE, Decision.DENY])

    def approve(request):
        asked.append(request.need)
        return next(answers)

    agent = sandboxed(AutonomousAgent(workspace=workspace, model=FakeModel(), approve=approve))
    add_skills(agent, ["net_echo"])
    assert agent.call("net_echo", "hi") == "HI"
    for _ in range(2):  # a "deny" is remembered: the second time nobody is asked
        with pytest.raises(CallRefused, match="not approved: network access for skill net_echo") as caught:
            agent.call("net_echo", "hi")
        assert caught.value.denied == ("network",)
    assert asked == ["network", "network"]


# -- :run ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ('slugify "Hello World"', ("slugify", ("Hello World",), {})),
    ("add 2 3", ("add", (2, 3), {})),
    ("add(2, 3)", ("add", (2, 3), {})),
    ("add 2, 3", ("add", (2, 3), {})),
    ("join 'a' 'b'", ("join", ("a", "b"), {})),  # two strings, not Python's 'ab'
    ("add 1 +2j", ("add", (1, 2j), {})),
    ("f [1, 2] key='x'", ("f", ([1, 2],), {"key": "x"})),
    ("add -1 2", ("add", (-1, 2), {})),
    ("f (1, 2)", ("f", ((1, 2),), {})),
    ("f", ("f", (), {})),
    ("f()", ("f", (), {})),
    ('f {"a": 1} [2, (3, 4)] None', ("f", ({"a": 1}, [2, (3, 4)], None), {})),
    ("slugify Hello World", ("slugify", ("Hello", "World"), {})),
    ("f x=1 y=hi", ("f", (), {"x": 1, "y": "hi"})),
    ("f eval(1)", ("f", ("eval(1)",), {})),
    ("add(a=1, b=2)", ("add", (), {"a": 1, "b": 2})),
    ("f b'x' 1.5 True", ("f", (b"x", 1.5, True), {})),
    ("f " + "[" * 100 + "]" * 100, ("f", (nested(100),), {})),  # the depth limit itself
    ("f " + "9" * 4300, ("f", (10 ** 4300 - 1,), {})),  # the digits limit itself
    ('f "10**400" hello-world', ("f", ("10**400", "hello-world"), {})),  # quoted, or plain words: strings
    ('f "' + "[" * 300 + '"', ("f", ("[" * 300,), {})),
    # kept exactly as written: backslashes in plain words, a '#', brackets with spaces, quoted words
    (r"f \d+ a1b22", ("f", (r"\d+", "a1b22"), {})),
    (r"f C:\Users\me", ("f", (r"C:\Users\me",), {})),
    (r"f \n", ("f", (r"\n",), {})),
    ("f 1 \\", ("f", (1, "\\"), {})),
    ("f 1 # c", ("f", (1, "#", "c"), {})),
    ("f 1#c", ("f", ("1#c",), {})),
    ("f [1, 2] hello-world", ("f", ([1, 2], "hello-world"), {})),
    ('f [1, "a b"] x=(1, 2) y="c d"', ("f", ([1, "a b"],), {"x": (1, 2), "y": "c d"})),
    ('f "3" hello-world', ("f", ("3", "hello-world"), {})),  # quoted is a string on either path
    ('f "x=1" y', ("f", ("x=1", "y"), {})),  # a quoted word is no keyword
    (r'f "a\nb" hello-world', ("f", ("a\nb", "hello-world"), {})),  # Python's escapes, as on the call path
    ("f :) x", ("f", (":)", "x"), {})),
    ("f (hi there", ("f", ("(hi", "there"), {})),
], ids=lambda row: row[:40] if isinstance(row, str) else "")
def test_run_reads_arguments_as_python_call_arguments_or_shell_words(line, expected):
    assert parse_run(line) == expected


@pytest.mark.parametrize("line, message", [
    ("", "usage: :run <skill> <arguments>"),
    ("9lives", "usage: :run"),
    ('f "unclosed', "no closing quotation: usage: :run"),
    ("f(x)", "f(x) is not a call with Python literal arguments"),
    ("f(1)(2)", "is not a call with Python literal arguments"),
    ("f(", "usage: :run"),
    ("f x=1 2", "positional argument '2' after a keyword argument"),
])
def test_a_bad_run_line_is_one_usage_line(line, message):
    with pytest.raises(AgentError) as caught:
        parse_run(line)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("line, message", [
    ("add 10**400 1", "10**400 is an expression, not a literal: write its value (or quote it to pass a string)"),
    ("add 2+3 1", "2+3 is an expression, not a literal"),
    ("f x=10**400", "10**400 is an expression, not a literal"),
    ("f " + "1" * 5000, "an argument has an int of 5,000 digits (at most 4,300)"),
    ("f(" + "1" * 5000 + ")", "an argument has an int of 5,000 digits (at most 4,300)"),
    ("f " + "[" * 3000 + "]" * 3000, "an argument is nested 3,000 deep (at most 100)"),
    ("f " + "[" * 200 + "]" * 200, "an argument is nested 200 deep (at most 100)"),
    ("f(" + "[" * 200 + "]" * 200 + ")", "an argument is nested 200 deep (at most 100)"),
    ("f " + "[" * 3000, "an argument is nested 3,000 deep (at most 100)"),  # unclosed, still no string
    ("f 1 if 1 else 2", "1 if 1 else 2 is an expression, not a literal"),
    ("f 1 + 2", "1 + 2 is an expression, not a literal"),
    ("f not True", "not True is an expression, not a literal"),
    ('f f"x"', 'f"x" is an expression, not a literal'),
    ('f **{"a":1}', '**{"a":1}: unpacking is not taken: write the arguments themselves'),
    ("f *[1]", "*[1]: unpacking is not taken"),
    ('f a"b"c', 'a"b"c has quotes but is not a Python literal'),
    (r'f "C:\Users\me"', r'"C:\Users\me" has quotes but is not a Python literal'),
    ("f(1, # c)", "f(1, # c) is not a call with Python literal arguments"),
], ids=["10**400", "2+3", "keyword-10**400", "int-5000-digits", "call-int-5000-digits", "nested-3000", "nested-200",
        "call-nested-200", "unclosed-3000", "if-else", "1+2", "not", "f-string", "double-star", "star",
        "quotes-inside", "quoted-bad-escape", "call-comment"])
def test_run_refuses_in_one_line_what_it_would_otherwise_change(line, message):
    """Each of these was passed on as a string (or cut short) before: now refused, naming the limit."""
    with pytest.raises(AgentError) as caught:
        parse_run(line)
    assert str(caught.value) == message or str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


WORD_COUNTER = {"name": "word_counter", "signature": "word_counter(text: str) -> dict[str, int]"}
KEYWORDS = {"name": "f", "signature": "f(a, /, b=1, *rest, c, d=2, **more) -> None"}


@pytest.mark.parametrize("skill, args, kwargs, usage", [
    (WORD_COUNTER, (), {}, "word_counter: missing a required argument: 'text'; "
                           "usage: :run word_counter(text: str) -> dict[str, int]"),
    (WORD_COUNTER, ("a", "b"), {}, "word_counter: too many positional arguments; usage: :run word_counter("),
    (WORD_COUNTER, (), {"txt": "a"}, "word_counter: missing a required argument: 'text'"),
    (WORD_COUNTER, ("a",), {}, None),
    (WORD_COUNTER, (), {"text": "a"}, None),
    (KEYWORDS, (1,), {}, "f: missing a required argument: 'c'; usage: :run f(a, /, b=1, *rest, c, d=2, **more)"),
    (KEYWORDS, (1, 2, 3, 4), {"c": 1, "z": 0}, None),
    (KEYWORDS, (), {"a": 1, "c": 1}, "f: 'a' parameter is positional only, but was passed as a keyword"),
    ({"name": "g", "signature": "g(x: "}, (), {}, None),  # unreadable: the call itself says
    (None, (), {}, None),  # no such skill: call_result says
], ids=["none", "two", "wrong-keyword", "one", "keyword", "no-c", "all-and-more", "positional-only", "unreadable",
        "no-skill"])
def test_run_with_missing_or_extra_arguments_prints_the_signature(skill, args, kwargs, usage):
    found = run_usage(skill, args, kwargs)
    assert found == usage if usage is None else found.startswith(usage)


def test_run_in_the_repl_prints_the_result_or_one_error_line(workspace, server):  # noqa: F811
    server.enqueue(PLAN, GOOD)
    code, out = session(workspace, [":directive Create a skill that adds two numbers", ":run add_numbers 2 3",
                                    ":run add_numbers(a=1, b=2)", ":run add_numbers 'x' 1", ":run nothing 1",
                                    ":run", ":run add_numbers", ":run add_numbers 10**400 1", ":help", ":quit"],
                        "--model", MODEL)
    if "sandbox: rlimits" in out:
        pytest.skip("no sandbox works on this machine: generated code is refused")
    assert code == 0 and "Traceback" not in out
    lines = out.splitlines()

    def after(line: str) -> str:
        return lines[next(i for i, text in enumerate(lines) if text.endswith(line)) + 1]

    assert after("Agent> :run add_numbers 2 3") == "5"
    assert after("Agent> :run add_numbers(a=1, b=2)") == "3"
    assert "error: add_numbers('x', 1) raised TypeError: can only concatenate str" in out
    assert "error: no saved skill named 'nothing' (see :skills)" in out
    assert "error: usage: :run <skill> <arguments>" in out
    assert ("error: add_numbers: missing a required argument: 'a'; usage: :run add_numbers(a: int, b: int) -> int"
            in out)
    assert "error: 10**400 is an expression, not a literal" in out
    assert ":run <skill> <args>" in out  # :help lists it


def test_run_fails_a_scripted_session_on_an_error(workspace, server):  # noqa: F811
    code, out = session(workspace, [], "--model", MODEL, "-c", ":run nothing 1")
    assert code == 1 and "error: no saved skill named 'nothing'" in out


# -- the MCP server ------------------------------------------------------------------------------

@pytest.mark.parametrize("annotation, schema", [
    ("int", {"type": "integer"}), ("float", {"type": "number"}), ("str", {"type": "string"}),
    ("bool", {"type": "boolean"}), ("None", {"type": "null"}), ("dict", {"type": "object"}),
    ("list[int]", {"type": "array", "items": {"type": "integer"}}),
    ("List[str]", {"type": "array", "items": {"type": "string"}}),
    ("tuple", {"type": "array"}),
    ("tuple[int, ...]", {"type": "array", "items": {"type": "integer"}}),
    ("tuple[int, str]", {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                         "minItems": 2, "maxItems": 2}),
    ("dict[str, float]", {"type": "object", "additionalProperties": {"type": "number"}}),
    ("str | None", {"anyOf": [{"type": "string"}, {"type": "null"}]}),
    ("Optional[int]", {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
    ("typing.Optional[list[int]]", {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}),
    ("Union[int, str]", {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
    ("'list[int]'", {"type": "array", "items": {"type": "integer"}}),
    ("Literal['a', 'b']", {"enum": ["a", "b"]}),
    ("Literal[b'a', b'b']", {}),  # not JSON values: no enum a client could satisfy
    ("Any", {}), ("object", {}), ("MyClass", {}), ("int | Any", {}), ("list[Any]", {"type": "array"}),
])
def test_annotations_become_json_schema(annotation, schema):
    import ast

    assert annotation_schema(ast.parse(annotation, mode="eval").body) == schema


def test_a_signature_becomes_the_tool_input_schema():
    shape = skill_shape("scale", SKILLS["scale"][0], None)
    assert shape is not None and shape.input_schema() == {
        "type": "object", "additionalProperties": False, "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"type": "integer"}},
                       "factor": {"type": "number", "default": 2.0},
                       "label": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}}}
    # a signature that does not parse: the module's def says it
    shape = skill_shape("echo", "echo(x: ", SKILLS["echo"][2])
    assert shape is not None and shape.input_schema()["required"] == ["x"]


def mcp_session(workspace: Path, errlog: Path, work, home: Path | None = None):
    """Start ``autonomous_agent.py mcp`` with the SDK's stdio client and run ``work(session)``."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async def run():
        params = StdioServerParameters(command=sys.executable,
                                       args=[str(ROOT / "autonomous_agent.py"), "mcp", "--workspace", str(workspace)],
                                       env={"HOME": str(home or os.environ["HOME"])}, cwd=str(workspace.parent))
        with open(errlog, "w") as err:
            async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as client:
                await client.initialize()
                return await work(client)

    return anyio.run(run)


def test_mcp_serves_working_skills_as_tools_end_to_end(agent, workspace, tmp_path):
    agent.memory.upsert_skill("echo", status="untested")  # not served
    agent.memory.upsert_skill("boom", status="failed")  # not served

    async def work(client):
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        calls = {}
        for key, name, arguments in [
            ("scale", "scale", {"items": [1, 2], "label": "n"}),
            ("pair", "pair", {"point": [3, 4]}),
            ("thing", "thing", {}),
            ("missing", "scale", {}),
            ("wrong_type", "scale", {"items": ["a"]}),
            ("unknown", "nothing_here", {}),
            ("untested", "echo", {"x": 1}),
            ("blocked", "uses_ctypes", {}),
            ("no_grant", "net_echo", {"text": "hi"}),
        ]:
            calls[key] = await client.call_tool(name, arguments)
        agent.memory.save_grant("net_echo", "network", Decision.ALWAYS.value)  # as [a]lways in the REPL would
        calls["granted"] = await client.call_tool("net_echo", {"text": "hi"})
        return listed, calls

    listed, calls = mcp_session(workspace, tmp_path / "mcp.err", work)
    assert "echo" not in listed and "boom" not in listed
    assert {"scale", "pair", "thing", "net_echo", "longest", "sleepy"} <= set(listed)
    scale = listed["scale"]
    assert scale.description == f"Scale items.\nSignature: {SKILLS['scale'][0]}"
    assert scale.input_schema["required"] == ["items"]
    assert scale.input_schema["properties"]["items"] == {"type": "array", "items": {"type": "integer"}}
    assert listed["pair"].input_schema["properties"]["point"]["prefixItems"] == [{"type": "integer"}] * 2

    def text(key):
        result = calls[key]
        return result.is_error, result.content[0].text

    assert text("scale") == (False, json.dumps({"label": "n", "items": [2.0, 4.0]}))
    assert text("pair") == (False, "7")  # a JSON array reaches a tuple parameter as a tuple
    assert text("thing") == (False, "<Thing>")
    assert text("missing") == (True, "invalid arguments for scale: 'items' is a required property")
    assert text("wrong_type") == (True, "invalid arguments for scale: items.0: 'a' is not of type 'integer'")
    assert text("unknown") == (True, "no working skill named 'nothing_here': tools/list shows the skills served")
    assert text("untested") == (True, "echo is untested: only working skills are served over MCP "
                                      "(:skills in the REPL shows why)")
    assert text("blocked")[0] and text("blocked")[1].startswith("uses_ctypes did not run: blocked by gate")
    assert text("no_grant")[0] and "not approved: network access for skill net_echo" in text("no_grant")[1]
    assert "approve it in the REPL" in text("no_grant")[1]
    assert text("granted") == (False, '"HI"')
    assert "serving" in (tmp_path / "mcp.err").read_text()


def test_mcp_writes_nothing_but_the_protocol_to_stdout(agent, workspace):
    command = [sys.executable, str(ROOT / "autonomous_agent.py"), "mcp", "--workspace", str(workspace),
               "--model", "embedded"]  # never loaded
    done = subprocess.run(command, input=b"", capture_output=True, timeout=60, check=False,  # noqa: S603
                          env={**os.environ, "PYTHONWARNINGS": "default"})
    assert (done.returncode, done.stdout) == (0, b"")
    assert b"serving 10 working skills" in done.stderr and b"Traceback" not in done.stderr


def test_mcp_settings_errors_are_one_line(workspace, capsys):
    assert main(["mcp", "--workspace", str(workspace), "--max-iter", "zero"]) == 1
    assert capsys.readouterr().err.strip() == "error: invalid max_iter 'zero' from --max-iter"
    with pytest.raises(SystemExit) as caught:
        main(["mcp", "-c", ":skills"])
    assert caught.value.code == 2
    assert "mcp serves tools over stdio: it takes no -c or --resume" in capsys.readouterr().err


# -- the MCP server: every message gets its JSON-RPC answer ----------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, Path, str]:
    """A workspace with the skills, a home for the server, and its sandbox level (one per module:
    the rows below share one server, which must stay up through all of them)."""
    home = tmp_path_factory.mktemp("mcp-home")
    workspace = tmp_path_factory.mktemp("mcp") / "agent_workspace"
    with pytest.MonkeyPatch.context() as env:
        for var in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
            env.setenv(var, str(home))
        agent = AutonomousAgent(workspace=workspace, model=FakeModel())
        add_skills(agent)
        return workspace, home, agent.sandbox.level


class RawServer:
    """``autonomous_agent.py mcp`` over raw pipes: lines written as bytes, replies read by a thread."""

    def __init__(self, workspace: Path, home: Path, errlog: Path) -> None:
        command = [sys.executable, str(ROOT / "autonomous_agent.py"), "mcp", "--workspace", str(workspace)]
        with open(errlog, "wb") as err:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603
                                            stderr=err, env={"HOME": str(home)})
        self.errlog, self.replies, self.pings = errlog, queue.Queue(), itertools.count()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}))
        assert self.reply()["id"] == "init"
        self.send('{"jsonrpc": "2.0", "method": "notifications/initialized"}')

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.replies.put(json.loads(line))
        self.replies.put(None)  # the server's stdout closed

    def send(self, line: bytes | str) -> None:
        self.process.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]

    def reply(self) -> dict:
        reply = self.replies.get(timeout=120)  # a bound against hanging, not a speed check
        assert reply is not None, f"the server closed stdout: {self.errlog.read_text()[-2000:]}"
        return reply

    def answers_to(self, line: bytes) -> list[dict]:
        """What the server answers ``line`` with, up to its answer to a ping sent right after it (a
        line is screened before the next is read, so a line with no answer shows as none; a tool
        call, though, runs beside the ping, and its answer may come after the ping's)."""
        self.send(line)
        ping = f"ping-{next(self.pings)}"
        self.send(json.dumps({"jsonrpc": "2.0", "id": ping, "method": "ping"}))
        answers = []
        while (reply := self.reply()).get("id") != ping:
            answers.append(reply)
        assert reply == {"jsonrpc": "2.0", "id": ping, "result": {}}  # still serving
        return answers

    def close(self) -> int:
        self.process.stdin.close()  # type: ignore[union-attr]
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def raw_server(served, tmp_path_factory):
    workspace, home, _ = served
    raw = RawServer(workspace, home, tmp_path_factory.mktemp("raw") / "mcp.err")
    yield raw
    assert raw.close() == 0
    assert "Traceback" not in raw.errlog.read_text()


def request(params: str, method: str = "tools/call", request_id: int = 7) -> bytes:
    return f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "{method}", "params": {params}}}'.encode()


def call(arguments: str) -> bytes:
    return request(f'{{"name": "echo", "arguments": {{"x": {arguments}}}}}')


def error(code: int | None, request_id: int | str | None, message: str) -> tuple:
    return ("error", code, request_id, message)


# (line, what comes back: an error (code, id, start of its message), a tool result, or nothing)
RAW_ROWS = {
    "not-json": (b"{not json", error(-32700, None, "parse error: Expecting property name enclosed in double quotes")),
    "not-utf8": (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": "\xff"}',
                 error(-32700, None, "parse error: the message is not UTF-8")),
    "nan": (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": NaN}', error(-32700, None, "parse error: NaN is not")),
    "truncated": (b'{"jsonrpc": "2.0", "id": 1, "meth', error(-32700, None, "parse error: Unterminated string")),
    "array": (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', error(-32600, None, "invalid request: a batch")),
    "empty-array": (b"[]", error(-32600, None, "invalid request: an empty batch")),
    "string": (b'"ping"', error(-32600, None, "invalid request: not a JSON-RPC message (a JSON object)")),
    "no-method": (b'{"jsonrpc": "2.0", "id": 2}', error(-32600, 2, "invalid request: no method")),
    "method-not-string": (b'{"jsonrpc": "2.0", "id": 3, "method": 5}',
                          error(-32600, 3, "invalid request: method must be a string")),
    "no-jsonrpc": (b'{"id": "a", "method": "ping"}', error(-32600, "a", 'invalid request: jsonrpc must be "2.0"')),
    "jsonrpc-1": (b'{"jsonrpc": "1.0", "id": 4, "method": "ping"}', error(-32600, 4, "invalid request: jsonrpc")),
    "id-object": (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}',
                  error(-32600, None, "invalid request: id must be a string or an integer")),
    "id-true": (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', error(-32600, None, "invalid request: id must")),
    "id-null": (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', error(-32600, None, "invalid request: id must")),
    "id-float": (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', error(-32600, None, "invalid request: id must")),
    "id-5000-digits": (b'{"jsonrpc": "2.0", "id": ' + b"1" * 5000 + b', "method": "ping"}',
                       error(-32600, None, "invalid request: id must")),
    "unknown-method": (request("{}", method="no/such"), error(-32601, 7, "Method not found")),
    "params-array": (request("[1]"), error(-32602, 7, "invalid params: params must be an object")),
    "tool-call-no-name": (request('{"nme": "echo"}'), error(-32602, 7, "invalid params: name: Field required")),
    "arguments-array": (request('{"name": "echo", "arguments": [1]}'),
                        error(-32602, 7, "invalid params: arguments: Input should be a valid dictionary")),
    "int-5000-digits": (call("1" * 5000),
                        error(-32602, 7, "invalid params: params.arguments.x: an int of 5,000 digits (at most 4,300)")),
    "number-out-of-range": (call("1e999"), error(-32602, 7, "invalid params: a number out of range")),
    "nested-500": (call("[" * 500 + "]" * 500),
                   error(-32602, 7, "invalid params: the message is nested 503 deep (at most 128)")),
    "nested-100001": (call("[" * 100_001 + "]" * 100_001),
                      error(-32602, 7, "invalid params: the message is nested 100,004 deep (at most 128)")),
    "nested-110": (call("[" * 110 + "]" * 110),  # within the wire's bound, past the arguments' one
                   ("result", True, 7, "invalid arguments for echo: an argument is nested more than 100 deep")),
    "line-too-long": (b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "x": "' + b"x" * (1 << 20) + b'"}',
                      error(-32600, None, "message longer than 1,048,576 bytes")),
    "bad-notification": (b'{"jsonrpc": "2.0", "method": "notifications/x", "params": [1]}', None),
    "notification-5000-digits": (b'{"jsonrpc": "2.0", "method": "notifications/x", "params": {"a": '
                                 + b"1" * 5000 + b"}}", None),
    "empty-line": (b"", None),
    "good-request": (request("{}", method="ping"), ("result", None, 7, None)),
    "300000-values": (request('{"a": [' + ",".join(["[]"] * 300_000) + "]}", method="ping"),  # 900 KB, valid
                      error(-32602, 7, "invalid params: the message holds 300,006 JSON values (at most 60,000)")),
}


@pytest.mark.parametrize("row", list(RAW_ROWS))
def test_mcp_answers_every_raw_line_by_json_rpc(raw_server, row):
    line, expected = RAW_ROWS[row]
    answers = raw_server.answers_to(line)
    if expected is not None and expected[0] == "result" and not answers:
        answers = [raw_server.reply()]  # a tool call runs in a thread beside the ping: its answer may come after
    if expected is None:  # a notification (or no message): no answer, per JSON-RPC
        assert answers == []
        return
    assert len(answers) == 1, answers
    answer = answers[0]
    kind, code_or_error, request_id, message = expected
    assert answer["jsonrpc"] == "2.0" and answer["id"] == request_id
    if kind == "error":
        assert answer["error"]["code"] == code_or_error
        assert answer["error"]["message"].startswith(message), answer
        assert len(answer["error"]["message"]) <= 200 and "\n" not in answer["error"]["message"]
    elif message is None:
        assert answer["result"] == {}
    else:
        assert answer["result"]["isError"] is code_or_error
        assert answer["result"]["content"][0]["text"].startswith(message)


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module")
def sdk_answers(served, tmp_path_factory) -> dict[str, object]:
    """Each row's tools/call made with the SDK's own client, in one session: its result, or the
    MCPError it raised."""
    from mcp.shared.exceptions import MCPError

    workspace, home, _ = served

    async def work(client):
        found: dict[str, object] = {}
        for key, (name, arguments, _) in SDK_ROWS.items():
            try:
                with anyio.fail_after(120):  # a bound against hanging, not a speed check
                    found[key] = await client.call_tool(name, arguments)
            except MCPError as err:
                found[key] = err
            except TimeoutError:
                found[key] = "no answer"
        found["listed"] = len((await client.list_tools()).tools)  # still serving
        return found

    return mcp_session(workspace, tmp_path_factory.mktemp("sdk") / "mcp.err", work, home=home)


SDK_ROWS = {
    "int-5000-digits": ("echo", {"x": 10 ** 4999},
                        (-32602, "invalid params: params.arguments.x: an int of 5,000 digits (at most 4,300)")),
    "nested-150": ("echo", {"x": nested(150)}, (-32602, "invalid params: the message is nested 153 deep")),
    "nested-110": ("echo", {"x": nested(110)},
                   (True, "invalid arguments for echo: an argument is nested more than 100 deep (at most 100)")),
    "nested-100": ("echo", {"x": nested(100)}, (False, json.dumps(nested(100)))),
    "int-4300-digits": ("echo", {"x": 10 ** 4300 - 1}, (False, "9" * 4300)),
    "too-big": ("echo", {"x": list(range(30_000))}, (True, "cannot call echo(x=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")),
    "no-name": ("", {}, (True, "no working skill named ''")),
}


@pytest.mark.parametrize("row", list(SDK_ROWS))
def test_mcp_answers_every_call_of_the_sdk_client(sdk_answers, served, row):
    from mcp.shared.exceptions import MCPError

    expected = SDK_ROWS[row][2]
    answer = sdk_answers[row]
    if isinstance(expected[0], int) and not isinstance(expected[0], bool):
        assert isinstance(answer, MCPError), answer
        assert (answer.error.code, answer.error.message[:len(expected[1])]) == expected
        return
    if served[2] == "rlimits" and expected[0] is False:
        pytest.skip("no sandbox works on this machine: generated code is refused")
    assert not isinstance(answer, MCPError), answer
    assert answer.is_error is expected[0]
    assert answer.content[0].text.startswith(expected[1])
    assert sdk_answers["listed"] == 10


@pytest.mark.parametrize("line, passed, error", [
    (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', True, None),  # a response to the server: the SDK's
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}', True, None),
    (b'{"jsonrpc": "2.0", "id": 1, "result": {"a": ' + b"1" * 5000 + b"}}", False, None),  # no answer to answers
    (b'{"jsonrpc": "2.0", "id": 5, "method": "x", "params": {"a": ' + b"[" * 2000 + b'"",' * 600_000 + b'""'
     + b"]" * 2000 + b"}}", False, (-32602, None, "invalid params: the message is nested more than")),  # bounded
    (b'{"jsonrpc": "2.0", "id": 5, "method": "x", "params": {"a": [1, {"b": [' + b"9" * 4301 + b"]}]}}", False,
     (-32602, 5, "invalid params: params.a[1].b[0]: an int of 4,301 digits (at most 4,300)")),
    (None, False, (-32600, None, "message longer than 1,048,576 bytes")),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "x", "params": {"a": [' + b", ".join([b"[]"] * 59_994) + b"]}}",
     True, None),  # 60,000 values: the limit itself
    (b'{"jsonrpc": "2.0", "id": 5, "method": "x", "params": {"a": [' + b", ".join([b"{}"] * 59_995) + b"]}}",
     False, (-32602, 5, "invalid params: the message holds 60,001 JSON values (at most 60,000)")),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "x", "params": {"a": "' + b"[], " * 100_000 + b'"}}', True, None),
    (b'{"jsonrpc": "2.0", "id": 5, "result": {"a": [' + b",".join([b"1"] * 70_000) + b"]}}", False, None),
    (b'{"jsonrpc": "2.0", "method": "x", "params": {"a": [' + b",".join([b"1"] * 70_000) + b"]}}", False, None),
], ids=["response", "request", "response-5000-digits", "deep-and-many-strings", "where", "too-long", "60000-values",
        "60001-values", "commas-in-a-string", "response-70000-values", "notification-70000-values"])
def test_mcp_screens_a_line_within_bounds(line, passed, error):
    from agent.mcp_wire import screen

    verdict = screen(line)
    assert (verdict.message is not None) is passed
    if error is None:
        assert verdict.error is None
    else:
        assert (verdict.error["code"], verdict.error["id"]) == error[:2]
        assert verdict.error["message"].startswith(error[2])


def walked(value) -> int:
    """The values in a parsed JSON value, counted by walking it (keys not counted)."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return 1 + sum(walked(item) for item in items)


@pytest.mark.parametrize("text", [
    '1', '"a,b[{"', '[]', '{}', '[[], {}, [1, [2, 3]]]', '{"a": {"b": [], "c": {}}, "d": "x\\",y"}',
    ' [ [ ] , { } , "}" ] ', '{"": [1,2,3], "[": {"]": null}}', '["\\u005b", "\\\\", "\\\\\\""]',
])
def test_the_wire_counts_a_messages_values_from_its_text(text):
    from agent.mcp_wire import values_in

    assert values_in(text.encode()) == walked(json.loads(text))
