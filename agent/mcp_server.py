"""The working skills as MCP tools, over stdio: ``python autonomous_agent.py mcp``.

Built on the official ``mcp`` SDK's low-level ``Server``, so the tools are listed from memory at
each ``tools/list`` (a skill that became working since is there, one that failed is gone):
name, description (the skill's description and signature) and a JSON Schema made from the
signature's annotations. ``tools/call`` runs ``AutonomousAgent.call`` in a worker thread (the
event loop keeps serving), which is the one safety path: gates, approvals, the sandbox. There is
no one to ask over MCP, so a tier-2 need runs only when the skill has an ``always`` grant
remembered (given in the REPL); ``--yes`` does not count here. The model is never loaded.
Only the protocol goes to stdout; notices and errors go to stderr.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from agent.config import Settings
from agent.core import AutonomousAgent, CallResult
from agent.errors import AgentError, CallRefused, start_error
from agent.literals import arguments_problem
from agent.mcp_wire import ScreenedLines
from agent.signals import Terminated

SERVER_NAME = "autonomous-agent"
MAX_MESSAGE_CHARS = 300
MAX_ANNOTATION_DEPTH = 20

# Annotation name -> JSON Schema (``typing.List`` and the like by their last name).
SIMPLE: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"}, "float": {"type": "number"}, "str": {"type": "string"},
    "bool": {"type": "boolean"}, "None": {"type": "null"}, "NoneType": {"type": "null"},
    "list": {"type": "array"}, "List": {"type": "array"}, "Sequence": {"type": "array"},
    "Iterable": {"type": "array"}, "tuple": {"type": "array"}, "Tuple": {"type": "array"},
    "set": {"type": "array", "uniqueItems": True}, "Set": {"type": "array", "uniqueItems": True},
    "frozenset": {"type": "array", "uniqueItems": True}, "FrozenSet": {"type": "array", "uniqueItems": True},
    "dict": {"type": "object"}, "Dict": {"type": "object"}, "Mapping": {"type": "object"},
}
ARRAYS = {"list", "List", "Sequence", "Iterable", "set", "Set", "frozenset", "FrozenSet"}
TUPLES = {"tuple", "Tuple"}
MAPPINGS = {"dict", "Dict", "Mapping"}
# What a JSON array becomes when the parameter's annotation names one of these (top level only).
CONVERT = {"tuple": tuple, "Tuple": tuple, "set": set, "Set": set}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _any_of(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One schema matching any of ``parts`` ({} when one of them matches anything)."""
    flat: list[dict[str, Any]] = []
    for part in parts:
        for piece in part["anyOf"] if list(part) == ["anyOf"] else [part]:
            if not piece:
                return {}
            if piece not in flat:
                flat.append(piece)
    return flat[0] if len(flat) == 1 else {"anyOf": flat}


def annotation_schema(node: ast.expr | None, depth: int = 0) -> dict[str, Any]:
    """The JSON Schema of a parameter annotation: int -> integer, float -> number, str -> string,
    bool -> boolean, list[X] -> array of X, tuple -> array, dict -> object, X | None and
    Optional[X] -> anyOf with null; anything else (or no annotation) -> {} (any value)."""
    if node is None or depth > MAX_ANNOTATION_DEPTH:
        return {}
    if isinstance(node, ast.Constant):
        if node.value is None:
            return {"type": "null"}
        if isinstance(node.value, str):  # a forward reference: "list[int]"
            try:
                return annotation_schema(ast.parse(node.value, mode="eval").body, depth + 1)
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                return {}
        return {}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _any_of([annotation_schema(node.left, depth + 1), annotation_schema(node.right, depth + 1)])
    name = _name(node)
    if name is not None:
        return dict(SIMPLE.get(name, {}))
    if not isinstance(node, ast.Subscript) or (base := _name(node.value)) is None:
        return {}
    items = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    inner = [annotation_schema(item, depth + 1) for item in items]
    if base == "Optional":
        return _any_of([inner[0], {"type": "null"}])
    if base == "Union":
        return _any_of(inner)
    if base == "Annotated":
        return inner[0]
    if base == "Literal":
        values = [item.value for item in items if isinstance(item, ast.Constant)
                  and (item.value is None or isinstance(item.value, (str, int, float, bool)))]
        return {"enum": values} if len(values) == len(items) else {}  # JSON values only
    schema = dict(SIMPLE.get(base, {}))
    if base in ARRAYS:
        if inner[0]:
            schema["items"] = inner[0]
    elif base in TUPLES:
        if len(items) == 2 and isinstance(items[1], ast.Constant) and items[1].value is Ellipsis:
            if inner[0]:
                schema["items"] = inner[0]
        elif not (len(items) == 1 and isinstance(items[0], ast.Tuple)):  # tuple[()] stays an array
            schema.update(prefixItems=inner, minItems=len(items), maxItems=len(items))
    elif base in MAPPINGS:
        if len(inner) == 2 and inner[1]:
            schema["additionalProperties"] = inner[1]
    return schema


@dataclass(frozen=True)
class Parameter:
    name: str
    schema: dict[str, Any]
    required: bool
    positional_only: bool
    convert: type | None  # tuple or set: what a JSON array becomes for this parameter


@dataclass(frozen=True)
class Shape:
    """What a skill's signature says about calling it by name."""

    parameters: tuple[Parameter, ...]
    extra: bool  # **kwargs: names beyond the parameters are allowed

    def input_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {p.name: p.schema for p in self.parameters},
                "required": [p.name for p in self.parameters if p.required], "additionalProperties": self.extra}


def _default(node: ast.expr) -> tuple[bool, Any]:
    try:
        value = ast.literal_eval(node)
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None
    return True, value


def function_shape(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Shape:
    a = function.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = [*zip(positional, defaults, strict=True), *zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    parameters = []
    for i, (arg, default) in enumerate(pairs):
        schema = annotation_schema(arg.annotation)
        if default is not None:
            known, value = _default(default)
            if known:
                schema["default"] = value
        base = arg.annotation.value if isinstance(arg.annotation, ast.Subscript) else arg.annotation
        convert = CONVERT.get(_name(base) or "") if base is not None else None
        parameters.append(Parameter(arg.arg, schema, default is None, i < len(a.posonlyargs), convert))
    return Shape(tuple(parameters), a.kwarg is not None)


def skill_shape(name: str, signature: str, source: str | None) -> Shape | None:
    """The shape of a skill from its recorded signature, else from its module's ``def``."""
    try:
        node = ast.parse(f"def {signature}: pass").body[0] if signature else None
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        node = None
    if isinstance(node, ast.FunctionDef) and node.name == name:
        return function_shape(node)
    try:
        tree = ast.parse(source or "")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    for item in tree.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == name:
            return function_shape(item)
    return None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_MESSAGE_CHARS else line[:MAX_MESSAGE_CHARS - 3] + "..."


def _json_keys(value: object) -> bool:
    """Whether every dict in ``value`` has string keys (JSON would turn 1 into "1")."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_keys(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_json_keys(item) for item in value)
    return True


def as_text(result: CallResult) -> str:
    """A result as text content: JSON when the value is JSON-serialisable (a tuple as an array),
    else its repr."""
    if not result.literal or not _json_keys(result.value):
        return result.text
    try:
        return json.dumps(result.value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return result.text


class SkillTools:
    """The tools: a skill's listing and its calls, one call at a time (memory and the sandbox
    are used from worker threads, never at once)."""

    def __init__(self, agent: AutonomousAgent) -> None:
        self.agent = agent
        self.lock = threading.Lock()

    def shape(self, skill: dict[str, Any]) -> Shape | None:
        """A skill's shape from its signature; its module is read only when that does not parse."""
        name, signature = skill["name"], skill.get("signature", "")
        return skill_shape(name, signature, None) or skill_shape(name, "", self.agent.library.source(name))

    def working(self) -> list[tuple[dict[str, Any], Shape]]:
        with self.lock:
            found = []
            for skill in sorted(self.agent.memory.read()["skills"], key=lambda s: s["name"]):
                if skill["status"] == "working" and (shape := self.shape(skill)) is not None:
                    found.append((skill, shape))
            return found

    def tools(self) -> list[dict[str, Any]]:
        """Every working skill as a tool: name, description, inputSchema."""
        tools = []
        for skill, shape in self.working():
            description = (skill.get("description") or "").strip()
            signature = skill.get("signature") or skill["name"]
            tools.append({"name": skill["name"],
                          "description": f"{description}\nSignature: {signature}" if description else
                          f"Signature: {signature}",
                          "input_schema": shape.input_schema()})
        return tools

    def call(self, name: str, arguments: dict[str, Any] | None) -> tuple[str, bool]:
        """(text, is_error): the result as text, or a one-line error."""
        try:
            return as_text(self._call(name, dict(arguments or {}))), False
        except CallRefused as err:
            if err.denied:
                return _one_line(f"{err}. Over MCP only a remembered grant counts: approve it in the REPL "
                                 f"(:run {name} ..., then answer [a]lways for this skill)"), True
            return _one_line(str(err)), True
        except AgentError as err:
            return _one_line(str(err)), True
        except (ValueError, TypeError, RecursionError) as err:  # odd input the checks above did not foresee
            return _one_line(f"invalid arguments for {name}: {type(err).__name__}: {err}"), True

    def _call(self, name: str, arguments: dict[str, Any]) -> CallResult:
        import jsonschema

        with self.lock:
            skill = self.agent.memory.get_skill(name) if isinstance(name, str) else None
            shape = self.shape(skill) if skill is not None and skill["status"] == "working" else None
        if shape is None:
            if skill is not None and skill["status"] != "working":
                raise AgentError(f"{name} is {skill['status']}: only working skills are served over MCP "
                                 "(:skills in the REPL shows why)")
            raise AgentError(f"no working skill named {name!r}: tools/list shows the skills served")
        problem = arguments_problem((), arguments)  # before the schema: the limits, named
        if problem is not None:
            raise AgentError(f"invalid arguments for {name}: {problem}")
        validator = jsonschema.Draft202012Validator(shape.input_schema())
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise AgentError(f"invalid arguments for {name}: {where + ': ' if where else ''}{error.message}")
        args, kwargs = [], {}
        skipped = None  # a positional-only parameter left to its default: later ones cannot follow it
        for parameter in shape.parameters:
            if parameter.name not in arguments:
                skipped = skipped or (parameter.name if parameter.positional_only else None)
                continue
            if parameter.positional_only and skipped:
                raise AgentError(f"invalid arguments for {name}: {parameter.name} needs {skipped} too "
                                 "(positional-only parameters are passed in order)")
            value = arguments.pop(parameter.name)
            if parameter.convert is not None and isinstance(value, list):
                try:
                    value = parameter.convert(value)
                except TypeError:  # a list of lists cannot make a set
                    raise AgentError(f"invalid arguments for {name}: {parameter.name}: "
                                     f"cannot make a {parameter.convert.__name__} of {_one_line(repr(value))[:60]}") \
                        from None
            if parameter.positional_only:
                args.append(value)
            else:
                kwargs[parameter.name] = value
        kwargs.update(arguments)  # names for **kwargs (the schema refused them otherwise)
        with self.lock:
            return self.agent.call_result(name, *args, **kwargs)


def build_server(tools: SkillTools):
    """The SDK's low-level server with the two tool handlers."""
    import anyio
    import mcp.types as types
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        found = await anyio.to_thread.run_sync(tools.tools)
        return types.ListToolsResult(tools=[types.Tool(**tool) for tool in found])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        text, failed = await anyio.to_thread.run_sync(tools.call, params.name, params.arguments)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=failed)

    return Server(SERVER_NAME, version="0.1.0",
                  instructions="Tools are the agent's working skills; each call runs in its sandbox.",
                  on_list_tools=list_tools, on_call_tool=call_tool)


def serve(settings: Settings, ending: tuple[int, ...] = ()) -> int:
    """Serve the workspace's working skills over stdio until the client closes, or one of the
    signals ``ending`` comes (the CLI's SIGTERM and SIGHUP: 128 + its number); the exit status."""
    import anyio
    import mcp.types as types
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage

    def notice(text: str) -> None:
        print(f"mcp: {text}", file=sys.stderr, flush=True)

    try:
        # no one to ask: a tier-2 need runs only with a remembered "always" grant (--yes ignored)
        agent = AutonomousAgent(settings=replace(settings, yes=False), approve=None, on_notice=notice)
        sandbox = agent.sandbox
        tools = SkillTools(agent)
        count = len(tools.working())
    except (AgentError, OSError) as err:
        print(start_error(err), file=sys.stderr)
        return 1
    notice(f"serving {count} working skill{'s' if count != 1 else ''} from {agent.workspace} over stdio "
           f"({sandbox.describe()})")
    server = build_server(tools)

    wire, restore = _take_stdin()
    stopped: list[int] = []

    async def run() -> None:
        lines = ScreenedLines(wire, notice)  # the read side: every line gets its answer
        async with anyio.create_task_group() as group:
            if ending:
                group.start_soon(stop_on, ending, group.cancel_scope)
            async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
                async def answer(error: dict[str, Any]) -> None:
                    data = types.ErrorData(code=error["code"], message=error["message"])
                    await write_stream.send(SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=error["id"],
                                                                              error=data)))

                lines.answer = answer
                lines.ready.set()
                await server.run(read_stream, write_stream, server.create_initialization_options())
            group.cancel_scope.cancel()

    async def stop_on(signums: tuple[int, ...], scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(*signums) as received:
            async for signum in received:
                stopped.append(signum)
                scope.cancel()
                return

    try:
        anyio.run(run)
    except KeyboardInterrupt:
        pass
    finally:
        restore()
    if stopped:
        ended = Terminated(stopped[0])
        notice(ended.line())
        return ended.status
    return 0


def _take_stdin() -> tuple[BinaryIO, Callable[[], None]]:
    """The wire on a private descriptor, and fd 0 on the null device while serving (children read
    EOF, as the SDK's ``stdio_server`` does when it reads stdin itself); the restoring function."""
    try:
        private = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        return sys.stdin.buffer, lambda: None
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except OSError:
        os.close(private)
        return sys.stdin.buffer, lambda: None
    return os.fdopen(private, "rb", closefd=False), lambda: os.dup2(private, 0)
