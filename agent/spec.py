"""Turning text into skill specs and code: parse directives, model replies, and render modules.

Everything here is pure: text in, data out. Replies the model botched yield ``None`` (data for
the loop), never an exception.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap

from agent.state import Example, SkillSpec

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# "reverse_words(text: str) -> str", optionally in backticks, optionally after "def ".
SIGNATURE_RE = re.compile(r"`?(?:def\s+)?([a-z_][a-z0-9_]{0,63})\(([^()`]*(?:\([^()`]*\)[^()`]*)*)\)\s*->\s*")
# "reverse_words('a b') == 'b a'" examples written in a directive.
CODE_BLOCK_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
JSON_BLOCK_RE = re.compile(r"\{.*\}", re.S)


def parse_signature(goal: str) -> tuple[str, str] | None:
    """Find an explicit ``name(args) -> type`` in a directive: (name, signature) or None."""
    match = SIGNATURE_RE.search(goal)
    if not match:
        return None
    name, args = match.group(1), match.group(2).strip()
    returns = _leading_annotation(goal[match.end():])
    if returns is None:
        return None
    signature = f"{name}({args}) -> {returns}"
    try:
        ast.parse(f"def {signature}: pass")
    except SyntaxError:
        return None
    return name, signature


def _leading_annotation(text: str) -> str | None:
    """The longest prefix of ``text`` (up to a backtick, colon or newline) that is an expression."""
    text = re.split(r"[`\n]|:(?:\s|$)", text, maxsplit=1)[0]
    words = text.split(" ")
    for end in range(len(words), 0, -1):
        candidate = " ".join(words[:end]).strip().rstrip(".,;")
        try:
            ast.parse(candidate, mode="eval")
        except SyntaxError:
            continue
        return candidate
    return None


def parse_examples(goal: str, name: str) -> list[Example]:
    """Examples the user wrote in the directive, as ``name(...) == value`` or ``name(...) -> value``."""
    examples: list[Example] = []
    for match in re.finditer(rf"\b{re.escape(name)}\(", goal):
        call_end = _matching_paren(goal, match.end() - 1)
        if call_end is None:
            continue
        rest = goal[call_end + 1:]
        arrow = re.match(r"\s*(==|->|returns|gives)\s*", rest)
        if not arrow:
            continue
        value = _leading_literal(rest[arrow.end():])
        if value is not None:
            examples.append({"call": goal[match.start():call_end + 1], "result": value})
    return examples


def _matching_paren(text: str, open_at: int) -> int | None:
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def _leading_literal(text: str) -> str | None:
    """The longest prefix of text that is a Python literal, normalised to its repr."""
    for end in range(len(text), 0, -1):
        chunk = text[:end].strip().rstrip(",;`")
        if not chunk or chunk.endswith("."):
            continue
        try:
            return repr(ast.literal_eval(chunk))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def describe(goal: str, name: str) -> str:
    """A one-sentence description from a directive ("Create a skill `f(...)` that does X" → "Does X.")."""
    text = SIGNATURE_RE.sub("", re.sub(r"`[^`]*`", "", goal), count=1)
    text = re.split(rf"\b(?:e\.g\.|for example|such that|{re.escape(name)}\()", text)[0]
    match = re.search(r"\b(?:that|which|to)\s+(.+)", text)
    sentence = (match.group(1) if match else text).strip().rstrip(".:,; ")
    sentence = sentence or name.replace("_", " ")
    return sentence[0].upper() + sentence[1:] + "."


def tests_from_examples(name: str, examples: list[Example]) -> str:
    """A pytest module asserting every example."""
    lines = [f"from {name} import {name}", ""]
    for i, example in enumerate(examples, 1):
        lines += [f"def test_example_{i}():", f"    assert {example['call']} == {example['result']}", ""]
    return "\n".join(lines)


def stub(spec: SkillSpec) -> str:
    """``def signature:`` plus the docstring with doctest examples: the module's fixed header."""
    doc = [spec["description"], ""]
    for example in spec["examples"]:
        doc += [f">>> {example['call']}", example["result"]]
    body = textwrap.indent("\n".join(doc).rstrip(), "    ")
    return f'def {spec["signature"]}:\n    """{body.lstrip()}\n    """\n'


def parse_plan(reply: str, *, name_hint: str | None) -> SkillSpec | None:
    """A chat model's JSON plan → spec, or None when it is unusable."""
    match = JSON_BLOCK_RE.search(reply)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    name = name_hint or str(data.get("name", ""))
    signature = str(data.get("signature", "")).strip().removeprefix("def ").rstrip(":")
    if not NAME_RE.match(name) or not signature.startswith(str(data.get("name", name)) + "("):
        return None
    signature = name + signature[signature.index("("):]
    try:
        ast.parse(f"def {signature}: pass")
    except SyntaxError:
        return None
    examples = [
        {"call": name + str(e["call"])[str(e["call"]).index("("):], "result": str(e["result"])}
        for e in data.get("examples") or []
        if isinstance(e, dict) and "call" in e and "result" in e and "(" in str(e["call"])
    ]
    tests = str(data.get("tests") or "")
    if not _parses(tests) or "def test" not in tests:
        tests = tests_from_examples(name, examples) if examples else ""
    if not tests:
        return None
    description = str(data.get("description") or name.replace("_", " ")).strip().splitlines()[0]
    return {"name": name, "signature": signature, "description": description,
            "examples": examples, "tests": tests}


def extract_code(reply: str) -> str | None:
    """The module in a chat reply: the largest fenced block with a ``def`` (kept even when it does
    not parse, so the sandbox reports the syntax error), or the whole reply if it parses."""
    blocks = [b.strip() for b in CODE_BLOCK_RE.findall(reply)]
    fenced = sorted((b for b in blocks if "def " in b), key=len, reverse=True)
    if fenced:
        return fenced[0] + "\n"
    whole = reply.strip()
    return whole + "\n" if "def " in whole and _parses(whole) else None


def complete_module(spec: SkillSpec, body: str) -> str | None:
    """A completion model's continuation (the body after the stub) → the whole module, or None."""
    lines = body.rstrip().splitlines()
    # Keep the indented body; stop at the first line back at column 0 (the model moved on).
    kept: list[str] = []
    for line in lines:
        if line.strip() and not line.startswith((" ", "\t")):
            break
        kept.append(line)
    body_text = "\n".join(kept).rstrip()
    if not body_text.strip():
        return None
    module = stub(spec) + body_text + "\n"
    return module if _parses(module) else None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
