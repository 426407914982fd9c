"""The read side of the MCP server's stdio: every line gets its JSON-RPC answer.

The SDK's ``stdio_server`` reads lines of any length and hands a line it cannot validate to the
session as an exception, which logs it and answers nothing: the client waits forever. Here each
line is read with a bound (``MAX_LINE_BYTES``), parsed with bounds (ints of at most 4,300 digits,
``MAX_JSON_DEPTH`` levels, finite numbers) and its envelope checked per JSON-RPC 2.0; a bad one
is answered at once on the SDK's own write stream (-32700 parse error, -32600 invalid request,
-32602 invalid params, with a short reason; id null when its id cannot be read), a good one is
passed on to the SDK, which does the protocol (-32601 for an unknown method is the SDK's).
A notification (no id) is never answered, even when it is bad: it is noted on stderr.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from agent.literals import MAX_INT_DIGITS, digits_problem

MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 128  # well inside the SDK's JSON parser (it stops at 200) and Python's json
MAX_REASON_CHARS = 200
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602

# A JSON string (skipped whole) or a bracket: enough to measure nesting without parsing.
# (an unclosed string runs to the end: one pass, never a rescan from each quote).
_JSON_PIECE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.S)


class _Unreadable:
    """A number in a message that cannot be taken as it is written (its reason)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _int(text: str) -> int | _Unreadable:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= MAX_INT_DIGITS else _Unreadable(digits_problem(digits).removeprefix("has "))


def _float(text: str) -> float | _Unreadable:
    value = float(text)
    return value if math.isfinite(value) else _Unreadable(f"the number {text[:20]} is out of range")


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


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


def depth_of(line: bytes) -> int:
    """How deeply the JSON in ``line`` nests (strings skipped), read without parsing it."""
    depth = deepest = 0
    for piece in _JSON_PIECE.finditer(line):
        token = piece.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _shallow(line: bytes) -> bytes:
    """``line`` with every array or object below ``MAX_JSON_DEPTH`` levels replaced by null: what
    is left can be parsed for the id and method of a message too deep to take."""
    out, depth, start, last = [], 0, 0, 0
    for piece in _JSON_PIECE.finditer(line):
        token = piece.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth == MAX_JSON_DEPTH + 1:
                start = piece.start()
        elif token in (b"]", b"}"):
            if depth == MAX_JSON_DEPTH + 1:
                out += [line[last:start], b"null"]
                last = piece.end()
            depth -= 1
    out.append(line[last:])
    return b"".join(out)


def _unreadable(value: Any, path: str) -> str | None:
    """The first number that could not be read as written, as "path: reason"."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, _Unreadable):
            return f"{where}: {item.reason}" if where else item.reason
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def screen(line: bytes | None) -> Verdict:
    """One line off the wire (None: longer than ``MAX_LINE_BYTES``), judged."""
    if line is None:
        return _answer(None, INVALID_REQUEST, f"message longer than {MAX_LINE_BYTES:,} bytes")
    line = line.strip()
    if not line:
        return Verdict(note="empty line")
    deep = depth_of(line)
    try:
        text = (_shallow(line) if deep > MAX_JSON_DEPTH else line).decode("utf-8")
        message = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except UnicodeDecodeError:
        return _answer(None, PARSE_ERROR, "parse error: the message is not UTF-8")
    except (ValueError, RecursionError) as err:
        why = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)
        return _answer(None, PARSE_ERROR, f"parse error: {why}")
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
            if deep > MAX_JSON_DEPTH or _unreadable(message, ""):
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
    if (problem := _unreadable(message, "")) is not None:
        return fail(INVALID_PARAMS, f"invalid params: {problem}")
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

    text = json.dumps(message)
    try:
        mcp_types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except pydantic.ValidationError as err:
        first = (err.errors() or [{}])[0]
        if first.get("type") == "json_invalid":  # what json read, the SDK's parser does not (a lone surrogate)
            return fail(PARSE_ERROR, f"parse error: {first.get('msg', err)}")
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return fail(INVALID_REQUEST, f"invalid request: {where + ': ' if where else ''}{first.get('msg', err)}")
    return Verdict(message=text)


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
            line = await anyio.to_thread.run_sync(read_line, self.stream, abandon_on_cancel=True)
            if isinstance(line, EOFError):
                raise StopAsyncIteration
            verdict = screen(line)
            if verdict.message is not None:
                return verdict.message
            if verdict.error is not None:
                await self.ready.wait()
                assert self.answer is not None
                await self.answer(verdict.error)
            if verdict.note and verdict.note != "empty line":
                self.note(verdict.note)
