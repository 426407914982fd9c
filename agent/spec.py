"""Turning text into skill specs and code: parse directives, model replies, and render modules.

Everything here is pure: text in, data out. Replies the model botched yield ``None`` (data for
the loop), never an exception.
"""

from __future__ import annotations

import ast
import builtins
import io
import itertools
import json
import keyword
import re
import sys
import textwrap
import tokenize

from agent.state import Evidence, Example, SkillSpec

MAX_LINE_CHARS = 20_000  # the longest input line read: a longer one is refused unread
MAX_GOAL_CHARS = 4_000  # the longest directive goal (memory.schema.json's maxLength): longer text is not a goal
MAX_ANNOTATION_WORDS = 12  # a return annotation is short: only its first words are tried
MAX_LITERAL_TRIES = 32  # prefixes parsed, longest first, before a literal is given up
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# "reverse_words(text: str) -> str", optionally in backticks, optionally after "def ".
SIGNATURE_RE = re.compile(r"`?(?:def\s+)?([a-z_][a-z0-9_]{0,63})\(([^()`]*(?:\([^()`]*\)[^()`]*)*)\)\s*->\s*")
# "reverse_words('a b') == 'b a'" examples written in a directive.
# A fenced block: an opening fence with its info string, the body, the same fence closing it
# (or the end of the reply, for a truncated one). Parsed as lines, so fences in any order work.
FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)",
                      re.S | re.M)
CODE_LANGS = ("", "python", "py", "python3", "py3")
TEST_DEF_RE = re.compile(r"^\s*def test", re.M)


# Module names a skill must not take: its file would shadow them (``base64.py`` breaks ``import base64``).
SHADOWED = frozenset(sys.stdlib_module_names) | frozenset(dir(builtins)) | {
    "test", "tests", "conftest", "pytest", "hypothesis", "typeguard", "skills"}


def module_name(name: str) -> str:
    """``name``, or ``name_skill`` where a module of that name would shadow one Python needs
    (``skills`` is the package, ``conftest`` pytest's); a dunder name loses its underscores
    (``__init__`` would be the skills package itself)."""
    if name.startswith("__"):
        name = name.strip("_") or "skill"
    return f"{name}_skill" if name in SHADOWED or keyword.iskeyword(name) else name


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
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return name, signature


def _leading_annotation(text: str) -> str | None:
    """The longest prefix of ``text`` (up to a backtick, colon or newline) that is an expression.

    One parse per word, of the first ``MAX_ANNOTATION_WORDS`` words only: trying every word of a
    long directive was quadratic (and a parse of thousands of words can run out of memory).
    """
    text = re.split(r"[`\n]|:(?:\s|$)", text, maxsplit=1)[0]
    words = text.split(" ", MAX_ANNOTATION_WORDS)[:MAX_ANNOTATION_WORDS]
    for end in range(len(words), 0, -1):
        candidate = " ".join(words[:end]).strip().rstrip(".,;")
        try:
            ast.parse(candidate, mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        return candidate
    return None


_ARROW_RE = re.compile(r"\s*(==|->|returns|gives)\s*")


def parse_examples(goal: str, name: str) -> list[Example]:
    """Examples the user wrote in the directive, as ``name(...) == value`` or ``name(...) -> value``."""
    examples: list[Example] = []
    closing = _closing_parens(goal)
    for match in re.finditer(rf"\b{re.escape(name)}\(", goal):
        call_end = closing.get(match.end() - 1)
        arrow = _ARROW_RE.match(goal, call_end + 1) if call_end is not None else None
        if not arrow:
            continue
        value = leading_literal(goal[arrow.end():])
        if value is not None:
            examples.append({"call": goal[match.start():call_end + 1], "result": value})
    return examples


def _closing_parens(text: str) -> dict[int, int]:
    """Where each "(" of ``text`` is closed (unclosed ones are left out), in one pass for all calls:
    scanning from each call to its end was quadratic in a text of unclosed calls."""
    closing: dict[int, int] = {}
    opened: list[int] = []
    for paren in re.finditer(r"[()]", text):
        if paren.group() == "(":
            opened.append(paren.start())
        elif opened:
            closing[opened.pop()] = paren.start()
    return closing


# The tokens a literal is made of (``set()`` is one too); any other token ends it.
_LITERAL_NAMES = frozenset({"True", "False", "None", "set"})
_LITERAL_OPS = frozenset({"(", ")", "[", "]", "{", "}", ",", ":", "+", "-"})
_SKIPPED_TOKENS = frozenset({tokenize.NL, tokenize.INDENT, tokenize.DEDENT})


def _literal_ends(text: str) -> list[int]:
    """Where a literal at the start of ``text`` could end: after each token outside brackets, up
    to the first token no literal has. One tokenizer pass finds the only prefixes worth parsing."""
    starts = [0, *itertools.accumulate(len(line) for line in text.splitlines(keepends=True))]
    ends: list[int] = []
    depth, previous = 0, tokenize.OP
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in _SKIPPED_TOKENS:
                continue
            if token.type == tokenize.OP and token.string in _LITERAL_OPS:
                depth += (token.string in "([{") - (token.string in ")]}")
            elif not (token.type in (tokenize.STRING, tokenize.NUMBER)
                      or (token.type == tokenize.NAME and token.string in _LITERAL_NAMES)):
                break
            elif previous != tokenize.OP and not previous == token.type == tokenize.STRING:
                break  # two values in a row ("1 2") end it; two strings are one ('a' 'b')
            if depth < 0:
                break
            previous = token.type
            if depth == 0:
                ends.append(starts[token.end[0] - 1] + token.end[1])
    except (tokenize.TokenError, SyntaxError):
        pass  # an unclosed bracket or string: the ends found before it stand
    return ends


def leading_literal(text: str) -> str | None:
    """The longest prefix of text that is a Python literal, normalised to its repr.

    Only prefixes ending at a token outside brackets are parsed, the longest
    ``MAX_LITERAL_TRIES`` of them: parsing every prefix was quadratic in the text's length.
    """
    for end in reversed(_literal_ends(text)[-MAX_LITERAL_TRIES:]):
        chunk = text[:end].strip().rstrip(",;`")
        chunk = chunk[:-1] if chunk.endswith(".") else chunk  # "1." ending a sentence is 1
        if not chunk:
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
    sentence = " ".join((match.group(1) if match else text).split()).rstrip(".:,; ")
    if not match:  # no clause saying what it does: the name says it, the rest qualifies it
        sentence = re.sub(r"(?i)^(?:please\s+)?(?:create|add|make|write|build|implement|i want|i need)\b"
                          r"(?:\s+(?:a|an|new|the))*(?:\s+(?:skill|function))?\b\s*", "", sentence)
        sentence = " ".join([name.replace("_", " ").capitalize() + (":" if sentence else ""), sentence]).strip()
    return sentence[0].upper() + sentence[1:] + "."


def tests_from_examples(name: str, examples: list[Example], prefix: str = "example", start: int = 1) -> str:
    """A pytest module asserting every example; a failure reads "call returned X, expected Y"."""
    def text(s: str) -> str:  # literal text inside an f-string
        return s.replace("{", "{{").replace("}", "}}")

    lines = [f"from {name} import {name}", ""]
    for i, example in enumerate(examples, start):
        message = f"{text(example['call'])} returned {{got!r}}, expected {text(example['result'])}"
        lines += [f"def test_{prefix}_{i}():", f"    got = {example['call']}",
                  f"    assert got == {example['result']}, f{message!r}", ""]
    return "\n".join(lines)


def stub(spec: SkillSpec) -> str:
    """``def signature:`` plus the docstring with doctest examples: the module's fixed header,
    after the spec's ``preamble`` (imports and helpers the function may use) if it has one.

    A docstring with a backslash is raw, so that doctest reads ``f('a\\nb')`` as written; a
    result of None is shown as no output, which is what doctest sees of it."""
    doc = [spec["description"], ""]
    for example in spec["examples"]:
        doc += [f">>> {example['call']}"] + ([example["result"]] if example["result"] != "None" else [])
    body = textwrap.indent("\n".join(doc).rstrip(), "    ")
    prefix = "r" if "\\" in body else ""
    preamble = (spec.get("preamble") or "").strip()
    head = f"{preamble}\n\n\n" if preamble else ""
    return f'{head}def {spec["signature"]}:\n    {prefix}"""{body.lstrip()}\n    """\n'


def _bound_names(code: str) -> set[str]:
    """The names a module binds at its top level (imports, functions, classes, assignments)."""
    names: set[str] = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def with_preamble(spec: SkillSpec, code: str) -> str:
    """``code`` (a whole module a chat model wrote) with the spec's preamble in front when the
    module leaves out a name the preamble binds (an import, a helper), after any
    ``from __future__`` imports; its own definitions, coming later, win."""
    preamble = (spec.get("preamble") or "").strip()
    if not preamble:
        return code
    try:
        if _bound_names(preamble) <= _bound_names(code):
            return code
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code  # the sandbox reports the syntax error of the code as written
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    lines = code.splitlines(keepends=True)
    cut = (future[-1].end_lineno or 0) if future else 0
    return "".join(lines[:cut]) + preamble + "\n\n\n" + "".join(lines[cut:])


def fenced_blocks(reply: str) -> list[tuple[str, str]]:
    """Every fenced block in a reply as (language, body), in order; the language is lower-case."""
    return [(lang.lower(), body) for _, lang, body in FENCE_RE.findall(reply)]


def json_objects(text: str) -> list[dict]:
    """Every top-level JSON object in ``text`` (prose and fences around them are skipped)."""
    decoder, found, i = json.JSONDecoder(), [], text.find("{")
    while i >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        i = text.find("{", end)
    return found


def parse_plan(reply: str, *, name_hint: str | None) -> SkillSpec | None:
    """A model's plan → spec, salvaging what the reply holds, or None when no signature can be had.

    The JSON may sit in a fence or in prose; tests may be a string, a list of asserts, or a
    separate fenced Python block. A plan without tests comes back with ``tests`` empty (the caller
    may ask for them); examples are turned into tests.
    """
    plans = [d for d in json_objects(reply) if "signature" in d or "name" in d]
    if not plans:
        return None
    data = plans[0]
    signature = _plan_signature(data, name_hint)
    if signature is None:
        return None
    planned = signature[:signature.index("(")]
    name = module_name(planned)
    signature = name + signature[len(planned):]
    examples = _plan_examples(data.get("examples"), name)
    tests = find_tests(data.get("tests"), reply, planned)
    if name != planned:  # the tests call it by the planned name
        tests = tests.replace(f"from {planned} import {planned}\n", f"from {name} import {name} as {planned}\n")
    if not tests and examples:
        tests = tests_from_examples(name, examples)
    description = (str(data.get("description") or "").strip().splitlines() or [""])[0]
    return {"name": name, "signature": signature,
            "description": description or name.replace("_", " ").capitalize() + ".",
            "examples": examples, "tests": tests, "holdout": [], "probes": [],
            "evidence": new_evidence(plan_tests=tests.count("def test") if tests else 0)}


def _plan_signature(data: dict, name_hint: str | None) -> str | None:
    """``name(args) -> type`` from a plan, renamed to ``name_hint``; None when it does not parse."""
    signature = " ".join(str(data.get("signature") or "").split()).removeprefix("def ").rstrip(":").strip()
    match = re.match(r"([A-Za-z_]\w*)\s*\(", signature)
    planned = str(data.get("name") or (match.group(1) if match else ""))
    name = name_hint or planned
    if not match or not NAME_RE.match(name) or match.group(1) not in (planned, name):
        return None
    signature = name + signature[match.end() - 1:]
    try:
        tree = ast.parse(f"def {signature}: pass")
    except SyntaxError:
        return None
    return signature if isinstance(tree.body[0], ast.FunctionDef) else None


def _plan_examples(raw: object, name: str) -> list[Example]:
    """Examples as {"call", "result"} dicts, or as "f(x) == y" strings; others are dropped."""
    examples: list[Example] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and "call" in item and "result" in item:
            call, result = str(item["call"]).strip(), _as_literal(item["result"])
            if "(" in call and result is not None and _parses(call):
                examples.append({"call": name + call[call.index("("):], "result": result})
        elif isinstance(item, str) and (called := re.match(r"\s*([A-Za-z_]\w*)\(", item)):
            examples += [{"call": name + e["call"][e["call"].index("("):], "result": e["result"]}
                         for e in parse_examples(item, called.group(1))]
    return examples


def _as_literal(value: object) -> str | None:
    """A result as the repr of a literal: strings are read as Python source first."""
    if isinstance(value, str):
        return leading_literal(value)
    try:
        return repr(ast.literal_eval(repr(value)))
    except (ValueError, SyntaxError):
        return None


def find_tests(raw: object, reply: str, name: str) -> str:
    """Pytest source for ``name``: a plan's "tests" field (a string or a list of asserts), else a
    fenced Python block of the reply with tests, else the reply itself; "" when there is none."""
    if isinstance(raw, list):
        raw = "\n".join(str(t) for t in raw)
    candidates = [str(raw or "")] + [body for lang, body in fenced_blocks(reply) if lang in CODE_LANGS]
    candidates.append(reply)
    for tests in candidates:
        if not TEST_DEF_RE.search(tests) and re.search(r"^\s*assert ", tests, re.M):
            body = "\n".join(line.strip() for line in tests.splitlines() if line.strip())
            tests = "def test_plan():\n" + textwrap.indent(body, "    ")
        if TEST_DEF_RE.search(tests) and _parses(tests):
            header = f"from {name} import {name}\n\n" if f"import {name}" not in tests else ""
            return header + tests.strip() + "\n"
    return ""


def new_evidence(**counts: int) -> Evidence:
    """Evidence counts for a spec (all zero unless given)."""
    evidence: Evidence = {"user_examples": 0, "plan_tests": 0, "confirmed": 0, "held_back": 0,
                          "property_cases": 0}
    evidence.update(counts)  # type: ignore[typeddict-item]
    return evidence


def extract_code(reply: str) -> str | None:
    """The module in a reply: the largest Python fenced block with a ``def`` (kept even when it does
    not parse, so the sandbox reports the syntax error), or the whole reply if it parses."""
    blocks = [body.strip() for lang, body in fenced_blocks(reply) if lang in CODE_LANGS]
    fenced = sorted((b for b in blocks if "def " in b), key=len, reverse=True)
    if fenced:
        return fenced[0] + "\n"
    whole = reply.strip()
    return whole + "\n" if "def " in whole and _parses(whole) else None


def function_body(text: str) -> str:
    """A completion model's continuation cut where the function ends: the indented lines up to
    the first line back at column 0 (the model moved on)."""
    kept: list[str] = []
    for line in text.rstrip().splitlines():
        if line.strip() and not line.startswith((" ", "\t")):
            break
        kept.append(line)
    return "\n".join(kept).rstrip()


def complete_module(spec: SkillSpec, body: str, *, imports: str = "") -> str | None:
    """A completion model's continuation (the body after the stub) → the whole module, or None.

    Of ``imports`` (one ``from skills.x import x  # ...`` line per reusable skill), the lines
    whose imported name the body uses are kept at the top of the module.
    """
    body_text = function_body(body)
    if not body_text.strip():
        return None
    used = [line.split("  #")[0] for line in imports.splitlines()
            if re.search(rf"\b{re.escape(line.split('  #')[0].split()[-1])}\b", body_text)]
    module = "".join(f"{line}\n" for line in used) + ("\n\n" if used else "") + stub(spec) + body_text + "\n"
    return module if _parses(module) else None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
