"""The read side of the MCP server's stdio: every line gets its JSON-RPC answer.

The SDK's ``stdio_server`` reads lines of any length and hands a line it cannot validate to the
session as an exception, which logs it and answers nothing: the client waits forever. Here each
line is read with a bound (``MAX_LINE_BYTES``), parsed with bounds (ints of at most 4,300 digits,
``MAX_JSON_DEPTH`` levels, at most ``MAX_JSON_VALUES`` values, finite numbers) and its envelope
checked per JSON-RPC 2.0, in a worker thread (the event loop stays free); a bad one
is answered at once on the SDK's own write stream (-32700 parse error, -32600 invalid request,
-32602 invalid params, with a short reason; id null when its id cannot be read), a good one is
passed on to the SDK, which does the protocol (-32601 for an unknown method is the SDK's).
A notification (no id) is never answered, even when it is bad: it is noted on stderr.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from agent.literals import MAX_INT_DIGITS, digits_problem

MAX_LINE_BYTES = 1024 * 1024  # ten times what a call's arguments may be (100,000 characters), escapes and all
MAX_JSON_DEPTH = 128  # well inside the SDK's JSON parser (it stops at 200) and Python's json
# A call's arguments are at most 100,000 characters as Python literals (agent.literals.MAX_CHARS),
# and a value takes two or more there ("0, ", "[], "): a message with more values than this holds
# no call that could run, and validating one (pydantic here, then the SDK) takes seconds, with
# every message behind it waiting.
MAX_JSON_VALUES = 60_000
MAX_REASON_CHARS = 200
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602

# A JSON string (skipped whole; an unclosed one runs to the end, so no rescan from each quote)
# or a bracket: where the brackets are, for a message too deep to parse.
_JSON_PIECE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.S)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SPACE = re.compile(rb"[ \t\r\n]+")
MAX_PIECES = 500_000  # strings and brackets walked to find the id of a message too deep (else null)
MAX_WALK = 200_000  # values walked to say where a number that cannot be read is


class _Unreadable:
    """A number in a message that cannot be taken as it is written (its reason)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _NotJson(ValueError):
    """NaN, Infinity: Python's json reads them, JSON has none."""


def _constant(text: str) -> Any:
    raise _NotJson(f"{text} is not JSON")


def _read(text: str) -> tuple[Any, _Unreadable | None]:
    """The JSON value of ``text`` (``json.loads``, C speed), and the first int in it past
    ``MAX_INT_DIGITS`` digits: such an int is read as an ``_Unreadable``, so that the message's id
    can still be. Raises ``json.JSONDecodeError``, ``_NotJson``, or ``RecursionError`` (too deep)."""
    try:
        return json.loads(text, parse_constant=_constant), None
    except (json.JSONDecodeError, _NotJson, RecursionError):
        raise
    except ValueError:  # an int past Python's limit for int text: read again, marking it
        pass
    found: list[_Unreadable] = []

    def parse_int(number: str) -> int | _Unreadable:
        digits = len(number.lstrip("-"))
        if digits <= MAX_INT_DIGITS:
            return int(number)
        found.append(_Unreadable(digits_problem(digits).removeprefix("has ")))
        return found[-1]

    value = json.loads(text, parse_int=parse_int, parse_constant=_constant)
    return value, (found[0] if found else None)


def values_in(line: bytes) -> int:
    """How many values (an object's keys not counted) the JSON text ``line`` holds, counted at C
    speed from its text: a non-empty array or object of n items has n - 1 commas, and strings
    (commas and brackets in them too) are taken out first. Exact for valid JSON."""
    bare = _SPACE.sub(b"", _JSON_STRING.sub(b'""', line))
    opened = bare.count(b"[") + bare.count(b"{")
    empty = bare.count(b"[]") + bare.count(b"{}")
    return 1 + bare.count(b",") + opened - empty


def depth_of(value: Any) -> int:
    """How deeply a parsed JSON value nests (level by level, no recursion)."""
    depth, level = 0, [value] if isinstance(value, list | dict) else []
    while level:
        depth += 1
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, list | dict)]
    return depth


def _where(value: Any, target: _Unreadable) -> str:
    """Where ``target`` is in ``value`` ("params.arguments.x"), or "" when not among the first
    ``MAX_WALK`` values (walked depth first, one at a time: no list of them all is made)."""
    path: list[str] = []
    stack: list[Any] = [iter([("", value)])]
    for _ in range(MAX_WALK):
        if not stack:
            break
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            if path:
                path.pop()
            continue
        key, item = step
        if item is target:
            return "".join([*path, key]).lstrip(".")
        if isinstance(item, dict):
            path.append(key)
            stack.append((f".{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            path.append(key)
            stack.append((f"[{i}]", v) for i, v in enumerate(item))
    return ""


@dataclass(frozen=True)
class Verdict:
    """What to do with one line: pass ``message`` on, answer ``error``, or neither (``note``)."""

    message: str | None = None  # the line for the SDK, re-serialised from what was read
    error: dict[str, Any] | None = None  # {"id": ..., "code": ..., "message": ...}
    note: str = ""  # why nothing was passed on or answered (for stderr)


def _answer(request_id: Any, code: int, reason: str) -> Verdict:
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS - 3] + "..."
    return Verdict(error={"id": request_id, "code": code, "message": reason}, note=reason)


def _shallow(line: bytes) -> tuple[bytes | None, int]:
    """``line`` with every array or object below ``MAX_JSON_DEPTH`` levels replaced by null (what
    is left can be parsed for the id and method of a message too deep to take), and how deeply it
    nests; None (and the depth so far) when that would mean walking more than ``MAX_PIECES``
    strings and brackets."""
    out, depth, deepest, start, last = [], 0, 0, 0, 0
    for count, piece in enumerate(_JSON_PIECE.finditer(line)):
        if count > MAX_PIECES:
            return None, deepest
        token = piece.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if depth == MAX_JSON_DEPTH + 1:
                start = piece.start()
        elif token in (b"]", b"}"):
            if depth == MAX_JSON_DEPTH + 1:
                out += [line[last:start], b"null"]
                last = piece.end()
            depth -= 1
    out.append(line[last:])
    return b"".join(out), deepest


def screen(line: bytes | None) -> Verdict:
    """One line off the wire (None: longer than ``MAX_LINE_BYTES``), judged."""
    if line is None:
        return _answer(None, INVALID_REQUEST, f"message longer than {MAX_LINE_BYTES:,} bytes")
    line = line.strip()
    if not line:
        return Verdict(note="empty line")
    deep = 0
    try:
        try:
            message, unreadable = _read(line.decode("utf-8"))
        except RecursionError:  # nested deeper than Python's json goes: read what is above the limit
            shallow, deep = _shallow(line)
            if shallow is None:
                return _answer(None, INVALID_PARAMS, f"invalid params: the message is nested more than {deep:,} "
                                                     f"deep (at most {MAX_JSON_DEPTH})")
            message, unreadable = _read(shallow.decode("utf-8"))
    except UnicodeDecodeError:
        return _answer(None, PARSE_ERROR, "parse error: the message is not UTF-8")
    except (ValueError, RecursionError) as err:
        why = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)
        return _answer(None, PARSE_ERROR, f"parse error: {why}")
    values = values_in(line)
    if not deep and values <= MAX_JSON_VALUES and line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH:
        deep = depth_of(message)  # else it cannot be too deep (or is refused for its size)
    if isinstance(message, list):
        return _answer(None, INVALID_REQUEST, "invalid request: a batch (JSON array); MCP takes one message a line"
                       if message else "invalid request: an empty batch")
    if not isinstance(message, dict):
        return _answer(None, INVALID_REQUEST, "invalid request: not a JSON-RPC message (a JSON object)")
    has_id, request_id = "id" in message, message.get("id")
    if has_id and type(request_id) not in (int, str):  # bool, float, null, a list: unreadable
        return _answer(None, INVALID_REQUEST, "invalid request: id must be a string or an integer")
    notification = not has_id and "method" in message

    def fail(code: int, reason: str) -> Verdict:
        return Verdict(note=f"notification ignored: {reason}") if notification else _answer(request_id, code, reason)

    if message.get("jsonrpc") != "2.0":
        return fail(INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')
    if "method" not in message:
        if has_id and ("result" in message or "error" in message):  # a response to the server
            if deep > MAX_JSON_DEPTH or unreadable is not None or values > MAX_JSON_VALUES:
                return Verdict(note="response ignored: past the limits")
            return _validated(message, fail)
        return fail(INVALID_REQUEST, "invalid request: no method (a string)")
    if not isinstance(message["method"], str):
        return fail(INVALID_REQUEST, "invalid request: method must be a string")
    if "params" in message and not isinstance(message["params"], dict):
        return fail(INVALID_PARAMS, "invalid params: params must be an object")
    if deep > MAX_JSON_DEPTH:
        return fail(INVALID_PARAMS, f"invalid params: the message is nested {deep:,} deep "
                                    f"(at most {MAX_JSON_DEPTH})")
    if values > MAX_JSON_VALUES:
        return fail(INVALID_PARAMS, f"invalid params: the message holds {values:,} JSON values "
                                    f"(at most {MAX_JSON_VALUES:,})")
    if unreadable is not None:
        where = _where(message, unreadable)
        return fail(INVALID_PARAMS, f"invalid params: {where + ': ' if where else ''}{unreadable.reason}")
    if message["method"] == "tools/call" and (problem := _tool_call_problem(message.get("params"))):
        return fail(INVALID_PARAMS, f"invalid params: {problem}")
    return _validated(message, fail)


def _tool_call_problem(params: dict[str, Any] | None) -> str | None:
    """What is wrong with a tools/call's params, said (the SDK answers "Invalid request parameters")."""
    import mcp_types
    import pydantic

    try:
        mcp_types.CallToolRequestParams.model_validate(params or {})
    except pydantic.ValidationError as err:
        first = (err.errors() or [{}])[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ())) or 'params'}: {first.get('msg', err)}"
    return None


def _validated(message: dict[str, Any], fail: Callable[[int, str], Verdict]) -> Verdict:
    """The message as the SDK will read it, when the SDK's own parser takes it."""
    import mcp_types
    import pydantic

    try:
        text = json.dumps(message, allow_nan=False)
    except ValueError:  # 1e999 read as inf
        return fail(INVALID_PARAMS, "invalid params: a number out of range (JSON numbers here are finite doubles)")
    try:
        mcp_types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except pydantic.ValidationError as err:
        first = (err.errors() or [{}])[0]
        if first.get("type") == "json_invalid":  # what json read, the SDK's parser does not (a lone surrogate)
            return fail(PARSE_ERROR, f"parse error: {first.get('msg', err)}")
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return fail(INVALID_REQUEST, f"invalid request: {where + ': ' if where else ''}{first.get('msg', err)}")
    return Verdict(message=text)


def read_and_screen(stream: BinaryIO) -> Verdict | EOFError:
    """The next line, judged (``read_line``, then ``screen``): both off the event loop."""
    line = read_line(stream)
    return line if isinstance(line, EOFError) else screen(line)


def read_line(stream: BinaryIO) -> bytes | None | EOFError:
    """The next line, at most ``MAX_LINE_BYTES`` read into memory: None for a longer one (the rest
    of it is read and dropped), ``EOFError()`` at the end of the stream."""
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return EOFError()
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
            pass
        return None
    return line


class ScreenedLines:
    """The lines for the SDK's ``stdio_server`` (its ``stdin``): only those that pass ``screen``;
    the others are answered through ``answer`` (set once the write stream exists) or noted."""

    def __init__(self, stream: BinaryIO, note: Callable[[str], None]) -> None:
        import anyio

        self.stream, self.note = stream, note
        self.answer: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.ready = anyio.Event()

    def __aiter__(self) -> ScreenedLines:
        return self

    async def __anext__(self) -> str:
        import anyio

        while True:
            verdict = await anyio.to_thread.run_sync(read_and_screen, self.stream, abandon_on_cancel=True)
            if isinstance(verdict, EOFError):
                raise StopAsyncIteration
            if verdict.message is not None:
                return verdict.message
            if verdict.error is not None:
                await self.ready.wait()
                assert self.answer is not None
                await self.answer(verdict.error)
            if verdict.note and verdict.note != "empty line":
                self.note(verdict.note)
