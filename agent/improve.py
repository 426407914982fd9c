"""``:improve``: review → change → test, one version a round, kept only if old and new tests pass.

A round lints the current code with ruff (it reads code, never runs it), asks the model for a
short review, and then runs the agent's loop from a spec built from the skill as it is: its
signature and description, and as tests the current version's own tests plus any examples the
user gave with the request. The loop sees the current code, the lint findings and the review;
what passes is kept as the next version through the same check as any new version (the current
version's tests, and those it inherited), so a round that breaks anything keeps the old one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass

from agent.checks import AUTOMATIC_MARK
from agent.llm.base import Model, Request
from agent.spec import new_evidence, parse_examples, tests_from_examples
from agent.state import Example, LoopState, SkillSpec

LINT_RULES = "E,F,W,B,SIM,UP"  # pycodestyle, pyflakes, bugbear, simplify, pyupgrade
LINT_IGNORE = "E501,W291,W293"  # line length and trailing blanks: not worth a model round
REVIEW_SYSTEM = ("You review one Python function for a careful developer. List at most 5 concrete problems "
                 "(a bug, an unhandled edge case, an unclear error, needless complexity), one per line, most "
                 "important first, each with how to fix it. If there is nothing worth changing, reply: none.")
DEFAULT_GOAL = ("make it more robust (edge cases, clear errors) and simpler, without changing what it returns "
                "for the inputs its tests cover")


@dataclass(frozen=True)
class Round:
    """What one improvement round found and did."""

    number: int
    lint: list[str]  # ruff findings on the code before the round ("" rule: ruff unavailable)
    review: str  # the model's review, as given
    status: str  # the directive's status: working / untested mean a new version was kept
    version: int | None  # the version kept, or None (the old one stays)
    message: str  # one line: what was kept, or why not


def lint(code: str, filename: str = "skill.py") -> list[str]:
    """ruff's findings on ``code`` ("rule line:col message" each); one line saying why when ruff
    cannot run. ruff parses the code; nothing in it is executed."""
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and ruff, the code goes to stdin
            [sys.executable, "-m", "ruff", "check", "--isolated", "--select", LINT_RULES, "--ignore", LINT_IGNORE,
             "--output-format", "json", "--stdin-filename", filename, "-"],
            input=code, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode not in (0, 1):
            return [f"(ruff could not run: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]})"]
        found = json.loads(done.stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        return [f"(ruff could not run: {type(err).__name__})"]
    return [f"{f['code'] or 'syntax'} {f['location']['row']}:{f['location']['column']} {f['message']}"
            for f in found]


def review_request(model: Model, name: str, code: str, what: str, findings: list[str]) -> Request:
    """The review question, in the style the model takes (chat or completion)."""
    asked = f"The user wants: {what}\n" if what else ""
    lint_text = "".join(f"- {f}\n" for f in findings) or "- none\n"
    if model.chat:
        user = (f"Review this module ({name}.py):\n```python\n{code.rstrip()}\n```\n{asked}"
                f"A linter (ruff) reported:\n{lint_text}")
        return Request(messages=[{"role": "system", "content": REVIEW_SYSTEM}, {"role": "user", "content": user}],
                       temperature=0.0, max_tokens=400)
    prompt = (f"{code.rstrip()}\n\n\n# Code review of {name} above.\n"
              + "".join(f"# ruff: {f}\n" for f in findings)
              + (f"# The user wants: {what}\n" if what else "")
              + "# The most important problems, one per line, with the fix:\n# 1.")
    return Request(prompt=prompt, temperature=0.0, max_tokens=120, stop=("\n\n", "```", "\ndef "))


def clean_review(text: str, chat: bool) -> str:
    """The review as a few short lines (a completion model's comment marks removed)."""
    lines = [line.strip().lstrip("#").strip() for line in text.strip().splitlines()]
    if not chat and lines:
        lines[0] = "1. " + lines[0]
    kept = [line for line in lines if line][:8]
    return "\n".join(line[:300] for line in kept) or "none"


def split_held_back(tests: str) -> tuple[str, list[Example]]:
    """The saved tests without their held-back examples, and those examples (call, result), so
    that they stay out of every prompt and are checked last, as when the skill was made."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError):
        return tests, []
    lines, held, cut = tests.splitlines(keepends=True), [], []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_held_back_")):
            continue
        body = node.body
        if (len(body) == 2 and isinstance(body[0], ast.Assign) and isinstance(body[1], ast.Assert)
                and isinstance(body[1].test, ast.Compare) and len(body[1].test.comparators) == 1):
            call = ast.get_source_segment(tests, body[0].value)
            result = ast.get_source_segment(tests, body[1].test.comparators[0])
            if call and result:
                held.append({"call": call, "result": result})
                cut.append((node.lineno - 1, node.end_lineno or node.lineno))
    for start, end in reversed(cut):
        del lines[start:end]
    return "".join(lines), held


def improvement_spec(skill: dict, tests: str, what: str) -> SkillSpec:
    """The spec a round works to: the skill's signature and description, its current tests
    (without the automatic checks, which every run adds, and with the held-back examples kept
    back again) and the examples in ``what`` not already among them."""
    name = skill["name"]
    own, held = split_held_back(tests.partition(AUTOMATIC_MARK)[0])
    own = own.rstrip()
    examples = [e for e in parse_examples(what, name)
                if f"got = {e['call']}\n" not in own and e["call"] not in {h["call"] for h in held}]
    if examples:
        added = tests_from_examples(name, examples, prefix="improve", start=own.count("def test_improve_") + 1)
        own = own + "\n\n\n" + added.split("\n", 2)[2] if own else added
    evidence = {**new_evidence(), **(skill.get("evidence") or {})}
    evidence["user_examples"] += len(examples)
    return {"name": name, "signature": skill["signature"], "description": skill.get("description", ""),
            "examples": [], "tests": own + "\n" if own else "", "holdout": held, "probes": [],
            "evidence": evidence}  # type: ignore[typeddict-item]


def start_state(goal: str, directive_id: str, max_iterations: int, spec: SkillSpec, code: str,
                notes: str) -> LoopState:
    """A loop that starts planned: the plan node keeps a spec it is given."""
    return {"goal": goal, "skill_name": spec["name"], "directive_id": directive_id,
            "max_iterations": max_iterations, "spec": spec, "iteration": 0, "best_code": "", "best_passed": -1,
            "previous_failure": "", "tokens": 0, "base_code": code, "notes": notes, "origin": "improve"}
