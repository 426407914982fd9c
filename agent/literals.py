"""Python literals as call arguments: one set of limits for ``:run``, ``agent.call`` and MCP.

A value is taken exactly as written, or refused in one line that names the limit it passes; it is
never turned into something else (a string that was meant as a list, a number cut short).

The limits: an int has at most ``MAX_INT_DIGITS`` decimal digits (Python's own limit for int
text: a longer one has no repr and cannot be read back); lists, tuples, dicts and sets nest at
most ``MAX_DEPTH`` deep (Python's parser stops at 200 brackets, and a call's arguments are read
back by ``literal_eval`` inside two more); a call's arguments are at most ``MAX_CHARS``
characters as Python literals.
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from collections.abc import Iterable

from agent.errors import AgentError

MAX_INT_DIGITS = 4_300
MAX_DEPTH = 100
MAX_CHARS = 100_000
NOT_A_LITERAL = ("arguments must be Python literals: str, int, float, bool, None, bytes, complex, "
                 "and lists, tuples, dicts and sets of them")

_INT_BOUND = 10 ** MAX_INT_DIGITS
_SCALARS = (str, bytes, bool, type(None))
_CONTAINERS = (list, tuple, set)
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")


class LiteralRefused(AgentError):
    """Text or a value that is not taken as a literal: a limit it passes, or an expression."""


def depth_problem(depth: int | None = None) -> str:
    return f"is nested {'more than ' + str(MAX_DEPTH) if depth is None else f'{depth:,}'} deep (at most {MAX_DEPTH})"


def digits_problem(digits: int | None = None) -> str:
    count = f"more than {MAX_INT_DIGITS:,}" if digits is None else f"{digits:,}"
    return f"has an int of {count} digits (at most {MAX_INT_DIGITS:,})"


def size_problem() -> str:
    return f"are more than {MAX_CHARS:,} characters as Python literals (at most {MAX_CHARS:,})"


def values_problem(values: Iterable[object], subject: str = "an argument") -> str | None:
    """Why ``values`` cannot be call arguments, in one line (None when they can). Walks them
    without recursion, so a list nested 100,001 deep (or one that holds itself) is refused, not
    a RecursionError."""
    stack = [(value, 0) for value in values]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_CHARS:  # each value is a character or more of the arguments' repr
            return f"the arguments {size_problem()}"
        kind = type(item)
        if kind is int:
            if not -_INT_BOUND < item < _INT_BOUND:  # type: ignore[operator]
                return f"{subject} {digits_problem()}"
        elif kind is float:
            if not math.isfinite(item):  # type: ignore[arg-type]
                return NOT_A_LITERAL
        elif kind is complex:
            if not (math.isfinite(item.real) and math.isfinite(item.imag)):  # type: ignore[union-attr]
                return NOT_A_LITERAL
        elif kind in _CONTAINERS or kind is dict:
            if depth >= MAX_DEPTH:
                return f"{subject} {depth_problem()}"
            items = [*item.keys(), *item.values()] if kind is dict else item  # type: ignore[union-attr]
            stack.extend((child, depth + 1) for child in items)  # type: ignore[union-attr]
        elif kind not in _SCALARS:
            return NOT_A_LITERAL
    return None


def arguments_problem(args: Iterable[object], kwargs: dict[str, object]) -> str | None:
    """Why a call's arguments cannot be passed (None when they can): see ``values_problem``."""
    return values_problem([*args, *kwargs.values()])


def _decimal_digits(number: str) -> int:
    """The digits of a decimal int literal (0 for floats, imaginary and non-decimal literals)."""
    digits = number.replace("_", "")
    return len(digits) if digits.isdigit() else 0


def text_problem(text: str) -> str | None:
    """Why Python literal text passes a limit (None when it does not): brackets nested more than
    ``MAX_DEPTH`` deep or an int of more than ``MAX_INT_DIGITS`` digits outside strings. Read
    with ``tokenize``, which has no nesting limit of its own to trip over."""
    depth = deepest = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.OP and token.string in _OPEN:
                depth += 1
                deepest = max(deepest, depth)
            elif token.type == tokenize.OP and token.string in _CLOSE:
                depth -= 1
            elif token.type == tokenize.NUMBER and (digits := _decimal_digits(token.string)) > MAX_INT_DIGITS:
                return digits_problem(digits)
    except (tokenize.TokenError, SyntaxError):
        pass  # unclosed brackets or strings: what was read before stands
    return depth_problem(deepest) if deepest > MAX_DEPTH else None


def reads_as_written(text: str) -> bool:
    """Whether Python reads all of ``text``: False when it holds a comment (``1 # c`` reads as
    ``1``) or a backslash outside a string (a line continuation, or no Python at all: ``\\d+``),
    which a parse would drop or stop at; such text is no literal, only words."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return "#" not in text and "\\" not in text
    starts = [0]
    for line in io.StringIO(text):
        starts.append(starts[-1] + len(line))
    inside = [False] * len(text)
    for token in tokens:
        if token.type == tokenize.COMMENT:
            return False
        if token.type == tokenize.STRING:
            begin = starts[token.start[0] - 1] + token.start[1]
            end = starts[token.end[0] - 1] + token.end[1]
            inside[begin:end] = [True] * (end - begin)
    return all(inside[i] for i, char in enumerate(text) if char == "\\")


def short(text: str, limit: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def read_word(text: str) -> tuple[bool, object]:
    """A word typed as an argument: ``(True, value)`` when it is a Python literal within the
    limits; ``(False, None)`` when it is no expression of literals (``Hello``, ``hello-world``,
    ``eval(1)``: the caller may take it as a string). Raises ``LiteralRefused`` for literal text
    that passes a limit (``[[[...]]]`` 3,000 deep, a 5,000-digit int) and for an expression made
    of literals alone (``10**400``, ``2+3``), which is computed by nobody and meant as no string.
    Text Python would not read whole (``1 # c``, ``\\d+``: see ``reads_as_written``) is no literal."""
    problem = text_problem(text)
    if problem is not None:
        raise LiteralRefused(f"{short(text)} {problem}")
    if not reads_as_written(text):
        return False, None
    try:
        node = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False, None
    except (RecursionError, MemoryError):
        raise LiteralRefused(f"{short(text)} is nested too deeply to read (at most {MAX_DEPTH})") from None
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        if any(isinstance(part, ast.Name | ast.Attribute) for part in ast.walk(node)):
            return False, None
        raise LiteralRefused(f"{short(text)} is an expression, not a literal: write its value "
                             "(or quote it to pass a string)") from None
    problem = values_problem([value], subject="it")
    if problem == NOT_A_LITERAL:  # 1e999: inf
        raise LiteralRefused(f"{short(text)} reads as {value!r}, not a finite number")
    if problem is not None:
        raise LiteralRefused(f"{short(text)}: {problem}")
    return True, value


def read_result(text: str) -> object:
    """A call's result from its repr: the value when the repr is a Python literal within the
    limits, else the repr itself (``<Thing object at 0x...>``). Raises ``LiteralRefused`` (the
    limit) for a literal repr that passes one, rather than returning it as a string."""
    problem = text_problem(text)
    if problem is not None:
        raise LiteralRefused(f"a value that {problem}")
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
