"""The loop's nodes (plan, write, run_tests, analyze, save) and its routers.

Each node takes the state and the injected ``Deps`` and returns a partial state. Nodes never
construct a model or run code themselves: the model and the safety path come in ``Deps``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent import planner, prompts, versions
from agent.analysis import classify, headline, report_from_outcome
from agent.checks import (
    PROPERTY_CASES,
    describe_evidence,
    holdout_tests,
    overfit,
    property_ready,
    status_of,
    test_module,
)
from agent.library import SkillLibrary, describe_skills, importable
from agent.llm.base import Completion, Model, Request, TokenCallback
from agent.memory import Memory
from agent.spec import complete_module, extract_code, stub, with_preamble
from agent.state import Category, LoopState, SkillSpec, TestReport
from safety import SafetyOutcome

RESAMPLES = 2  # extra samples in one iteration when the model repeats a failed version
# Shown to a completion model above the importable skills: a function built on an earlier one.
# Without it Gemma 3 270M copied the nearest few-shot body instead of calling the skill imported
# just above (shout_bang: ' '.join(word.capitalize() ...) -> with it: shout(text) + '!').
COMPOSE_EXAMPLE = '''def title_case_bang(text: str) -> str:
    """Capitalize every word, then add an exclamation mark.

    >>> title_case_bang('hello big world')
    'Hello Big World!'
    """
    return title_case(text) + '!'


'''
PAST_FIXES = 3  # similar past failures (with the change that fixed them) a chat model's fix prompt shows
FIX_LINES = 3  # lines of the most similar past fix a completion model's fix comment shows
NOT_CODE = ("#", '"""', "'''", ">>>")  # added lines of a fix that a completion model is not shown
# Completion models stop when they leave the function body.
BODY_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\n\n\n", "```", "\n#", "\nprint(")
BODY_TOKENS = 256  # the longest body a completion model writes in one request


@dataclass(frozen=True)
class Event:
    """One line of progress for the user: a phase and what happened in it."""

    phase: str  # PLAN | WRITE | TEST | ANALYZE | SAVE
    message: str
    iteration: int = 0
    max_iterations: int = 0
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class Deps:
    """What the nodes need from outside. Built once per directive by the agent."""

    model: Model
    execute: Callable[..., SafetyOutcome]  # (name, module, tests, extra_tests=None) → gates + sandbox
    memory: Memory
    library: SkillLibrary
    emit: Callable[[Event], None] = lambda event: None
    on_token: TokenCallback | None = None
    on_call: Callable[[str, Request, Completion], None] = lambda phase, request, completion: None
    past_fixes: bool | None = None  # fix prompts show similar past failures' fixes (None: chat models only)


def temperature(iteration: int) -> float:
    """Sampling temperature for an attempt: greedy first, more varied on each retry."""
    return 0.0 if iteration <= 1 else round(min(0.1 + 0.15 * (iteration - 1), 1.0), 2)


def _generate(deps: Deps, request: Request, phase: str) -> Completion:
    completion = deps.model.generate(request, on_token=deps.on_token)
    deps.on_call(phase, request, completion)
    return completion


# ---- plan ------------------------------------------------------------------------------------

def plan(state: LoopState, deps: Deps) -> dict:
    """Goal → skill spec (name, signature, trusted examples and tests, probes), or ``no_plan``.

    A state that already holds a spec (a directive resumed with the user's answers) keeps it.
    """
    if state.get("spec") is not None:
        return {}
    started, spent = time.monotonic(), [0]

    def generate(request: Request, phase: str) -> Completion:
        completion = _generate(deps, request, phase)
        spent[0] += completion.tokens_in + completion.tokens_out
        return completion

    name = planner.requested_name(state["goal"], state.get("skill_name"))
    if deps.model.chat:
        failures = deps.memory.similar_failures(state["goal"], n=3)
        if deps.past_fixes is False:
            failures = [{k: v for k, v in f.items() if k != "fix"} for f in failures]
        spec = planner.plan_chat(state["goal"], name, generate,
                                 skills=deps.library.relevant(state["goal"], deps.memory.read()["skills"]),
                                 failures=failures)
    else:
        spec = planner.plan_completion(state["goal"], name, generate)
    tokens = state.get("tokens", 0) + spent[0]
    if spec is None:
        deps.emit(Event("PLAN", "no usable plan: no function signature could be had (for small models, "
                                "name one, e.g. `is_valid_json(text: str) -> bool`, with examples such as "
                                "is_valid_json('[1]') == True)", tokens=tokens,
                        seconds=time.monotonic() - started))
        return {"spec": None, "reason": "no_plan", "tokens": tokens}
    deps.emit(Event("PLAN", f"{spec['signature']}  ({describe_evidence(spec['evidence'], planned=True)})",
                    tokens=tokens, seconds=time.monotonic() - started))
    return {"spec": spec, "iteration": 0, "best_code": "", "best_passed": -1, "previous_failure": "",
            "tokens": tokens}


# ---- write -----------------------------------------------------------------------------------

def write(state: LoopState, deps: Deps) -> dict:
    """Ask the model for the module; a reply without usable code keeps the best version so far.

    A reply repeating a version that already failed is resampled (hotter) up to RESAMPLES times:
    the loop has learned that code fails, so asking again is cheaper than testing it again.
    """
    spec = state["spec"]
    assert spec is not None, "write runs only after a successful plan"
    iteration = state.get("iteration", 0) + 1
    failed = set(state.get("failed_code", []))
    tokens, tokens_out, seconds = state.get("tokens", 0), 0, 0.0
    for attempt in range(1 + RESAMPLES):
        code, completion = _ask_for_code(state, spec, deps, temperature(iteration) + 0.3 * attempt)
        tokens += completion.tokens_in + completion.tokens_out
        tokens_out, seconds = tokens_out + completion.tokens_out, seconds + completion.seconds
        if code is None or digest(code) not in failed:
            break
    fresh = code is not None
    note = f"skills/{spec['name']}.py" if fresh else "reply had no usable code"
    if attempt:
        note += f" ({attempt} resample{'s' if attempt > 1 else ''}: repeated a failed version)"
    deps.emit(Event("WRITE", note, iteration, state["max_iterations"], tokens_out, seconds))
    return {"iteration": iteration, "code": code if fresh else state.get("best_code", ""),
            "fresh_code": fresh, "tokens": tokens}


def _ask_for_code(state: LoopState, spec: SkillSpec, deps: Deps, temp: float) -> tuple[str | None, Completion]:
    """One request for the module, in the style the model takes (chat or completion)."""
    temp = round(min(temp, 1.5), 2)
    skills = deps.library.relevant(state["goal"], deps.memory.read()["skills"], exclude=spec["name"])
    if deps.model.chat:
        fixes = past_fixes(state, spec, deps, PAST_FIXES)
        completion = _generate(deps, Request(messages=_write_messages(state, spec, skills, fixes),
                                             temperature=temp, max_tokens=2048), "write")
        code = extract_code(completion.text)
        if code is not None and f"def {spec['name']}(" not in code:
            code = None
        return (with_preamble(spec, code) if code is not None else None), completion
    imports = importable(skills)
    if _failed(state) or imports:   # the few-shot solutions (composition shown on one of them), the stub
        prompt = prompts.render("write_completion", imports=(COMPOSE_EXAMPLE + imports) if imports else "",
                                stub=stub(spec) + _completion_feedback(state, past_fixes(state, spec, deps, 1)))
    else:   # a first version with nothing to import: the stub alone (and :improve's notes), as a file goes on
        prompt = stub(spec) + _completion_feedback(state)
    completion = _generate(deps, Request(prompt=prompt, stop=BODY_STOPS, temperature=temp, max_tokens=BODY_TOKENS),
                           "write")
    return complete_module(spec, completion.text, imports=imports), completion


def _failed(state: LoopState) -> bool:
    """Whether the last version ran and failed (what a fix prompt is about)."""
    report = state.get("report")
    return bool(report and not report["ok"] and state.get("code")
                and report["category"] not in ("no_code", "blocked"))


def past_fixes(state: LoopState, spec: SkillSpec, deps: Deps, n: int) -> list[dict]:
    """Up to ``n`` past failures most like the current one (its error, the skill's name and
    signature; BM25) that carry the change that fixed them, one per directive; none when the
    last version did not fail, or past fixes are off (``deps.past_fixes``; None: chat models only)."""
    report = state.get("report")
    enabled = deps.model.chat if deps.past_fixes is None else deps.past_fixes
    if not enabled or not _failed(state) or report is None:
        return []
    return deps.memory.similar_failures(f"{spec['name']} {spec['signature']} {report['error']}", n=n, fixed=True,
                                        exclude=state.get("directive_id"))


def _completion_feedback(state: LoopState, fixes: list[dict] | None = None) -> str:
    """What the last version got wrong, as a comment a completion model reads before the body,
    then the code lines the most similar past fix added, if any (a small model's prompt has
    little room: no diff, no old error)."""
    report = state.get("report")
    if not _failed(state) or report is None:  # before the first failure of :improve: its notes
        notes = (state.get("notes") or "").splitlines() if state.get("base_code") else []
        return "".join(f"    # To improve: {line[:150]}\n" for line in notes[:3])
    comment = f"    # The last version was wrong: {headline(report['error'])[:150]}\n"
    added = fix_lines(fixes[0]["fix"], FIX_LINES) if fixes else []
    if added:
        comment += (f"    # A similar error in {fixes[0]['skill'] or 'another skill'} was fixed by writing:\n"
                    + "".join(f"    #     {line}\n" for line in added))
    return comment


def fix_lines(fix: str, n: int) -> list[str]:
    """The first ``n`` code lines a fix (a unified diff) added: no docstring, comment or blank lines."""
    lines: list[str] = []
    for line in fix.splitlines():
        code = line[1:].rstrip()
        code = code[4:] if code.startswith("    ") else code  # indented as in the function body
        if line.startswith("+") and not line.startswith("+++") and code.strip() \
                and not code.lstrip().startswith(NOT_CODE):
            lines.append(code[:100])
            if len(lines) == n:
                break
    return lines


def describe_fixes(failures: list[dict]) -> str:
    """The prompt fragment showing similar past failures and the diffs that fixed them ("" if none)."""
    if not failures:
        return ""
    parts = ["Similar failures were fixed before; each one's error and the change that fixed it:"]
    for failure in failures:
        parts.append(f"- {failure['skill'] or 'a skill'} ({failure['category']}): "
                     f"{headline(failure['error'])[:200]}\n```diff\n{failure['fix'].rstrip()}\n```")
    return "\n".join(parts) + "\n\n"


def digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _write_messages(state: LoopState, spec: SkillSpec, skills: list[dict],
                    fixes: list[dict] | None = None) -> list[dict[str, str]]:
    report = state.get("report")
    feedback = ""
    if report and not report["ok"] and state.get("code"):
        feedback = prompts.render("feedback", iteration=state.get("iteration", 0),
                                  category=report["category"], error=report["error"],
                                  code=state["code"].rstrip(), past_fixes=describe_fixes(fixes or []))
    elif report and report["category"] == "no_code":
        feedback = "Your previous reply had no usable ```python block. Reply with the whole module."
    if state.get("base_code") and not feedback:
        feedback = prompts.render("improve", code=state["base_code"].rstrip(), notes=state.get("notes") or "none")
    user = prompts.render("write_user", name=spec["name"], stub=stub(spec).rstrip(),
                          tests=spec["tests"].rstrip(), skills=describe_skills(skills), feedback=feedback)
    return [{"role": "system", "content": prompts.render("write_system")},
            {"role": "user", "content": user}]


# ---- run_tests -------------------------------------------------------------------------------

def run_tests(state: LoopState, deps: Deps) -> dict:
    """The over-fitting guard, then gates + sandbox on the trusted tests and the property checks,
    then (once they all pass) the held-back examples, whose details the model never sees."""
    spec = state["spec"]
    assert spec is not None
    progress = (state["iteration"], state["max_iterations"])
    if not state.get("fresh_code"):
        deps.emit(Event("TEST", "skipped: nothing new to test", *progress))
        return {"report": _verdict_without_run("no_code", "the model's reply had no usable code")}
    special_cased = overfit(state["code"], spec)
    if special_cased:
        deps.emit(Event("TEST", f"over-fitting: {special_cased}", *progress))
        return {"report": _verdict_without_run("overfit", f"the code special-cases the examples: {special_cased}")}
    report = report_from_outcome(deps.execute(spec["name"], state["code"], test_module(spec)))
    if report["ok"] and spec["holdout"]:
        held = report_from_outcome(deps.execute(spec["name"], state["code"], holdout_tests(spec)))
        if not held["ok"]:
            report = {**report, "ok": False, "failed": held["failed"] or 1, "category": "held_back",
                      "error": HELD_BACK_MESSAGE}
        else:
            report = {**report, "passed": report["passed"] + held["passed"], "seconds": report["seconds"]
                      + held["seconds"]}
    if report["category"] == "blocked":
        message = f"blocked: {report['error']}"
    elif not report["level"]:  # never ran: the code does not parse
        message = f"not run: {headline(report['error'])}"
    else:
        message = f"sandbox: {report['level']} · {report['passed']} passed"
        if report["failed"] or report["errors"]:
            message += f", {report['failed']} failed, {report['errors']} errors"
        if report["category"] == "held_back":
            message += " (a held-back example failed)"
    deps.emit(Event("TEST", message, *progress, seconds=report["seconds"]))
    return {"report": report}


HELD_BACK_MESSAGE = ("The code passes the examples it was shown but fails an example that was kept back to "
                     "catch code fitted to the examples: implement the general rule the description states.")


def _verdict_without_run(category: Category, error: str) -> TestReport:
    return {"ok": False, "passed": 0, "failed": 0, "errors": 0, "category": category,
            "error": error, "level": "", "seconds": 0.0}


# ---- analyze ---------------------------------------------------------------------------------

def analyze(state: LoopState, deps: Deps) -> dict:
    """Decide: done (all passed), retry with the failure fed back, or stop (and why)."""
    report, iteration, code = state["report"], state["iteration"], state.get("code", "")
    assert report is not None and state["spec"] is not None
    update: dict = {}
    if state.get("fresh_code") and report["passed"] > state.get("best_passed", -1):
        update.update(best_code=code, best_passed=report["passed"])
    if report["ok"]:
        deps.emit(Event("ANALYZE", "ok", iteration, state["max_iterations"]))
        return {**update, "reason": "passed"}
    category = report["category"] or classify(report)
    first_line = headline(report["error"])  # what memory keeps, and :memory and later prompts show
    deps.memory.record_failure(skill=state["spec"]["name"], error=first_line, category=category,
                               code_snippet=code, iteration=iteration,
                               directive_id=state.get("directive_id"))
    fingerprint = digest(f"{category}\0{report['error']}\0{code}")
    reason = None
    if category == "blocked":
        reason = "blocked"
    elif iteration >= state["max_iterations"]:
        reason = "iteration_cap"
    elif state.get("fresh_code") and fingerprint == state.get("previous_failure"):
        reason = "no_progress"
    verdict = "retry" if reason is None else f"stop ({reason})"
    deps.emit(Event("ANALYZE", f"{category}: {first_line} → {verdict}", iteration, state["max_iterations"]))
    failed_code = state.get("failed_code", []) + ([digest(code)] if state.get("fresh_code") else [])
    return {**update, "reason": reason, "previous_failure": fingerprint, "failed_code": failed_code}


def route_after_plan(state: LoopState) -> Literal["write", "stop"]:
    return "write" if state.get("spec") is not None else "stop"


def route_after_analyze(state: LoopState) -> Literal["done", "retry", "stop"]:
    reason = state.get("reason")
    if reason == "passed":
        return "done"
    if reason is None:
        return "retry"
    if reason in ("iteration_cap", "no_progress", "blocked"):
        return "stop"
    raise ValueError(f"unexpected reason after analyze: {reason!r}")


# ---- save ------------------------------------------------------------------------------------

def save(state: LoopState, deps: Deps) -> dict:
    """Keep the passing module and all its checks (held-back examples included) in the library,
    and record its status: ``working`` only with evidence no code-writing call produced. For a
    name that exists, it becomes the next version only if it passes the current version's
    tests too; otherwise nothing is written and the loop ends ``incompatible``."""
    spec, report = state["spec"], state["report"]
    assert spec is not None and report is not None
    evidence = {**spec["evidence"], "property_cases": PROPERTY_CASES if property_ready(spec["signature"]) else 0}
    spec = {**spec, "evidence": evidence}
    progress = (state["iteration"], state["max_iterations"])
    problem = versions.incompatibility(deps.memory, deps.library, deps.execute, spec["name"], state["code"])
    if problem is not None:
        deps.emit(Event("SAVE", f"not kept: {problem}", *progress))
        return {"spec": spec, "reason": "incompatible", "incompatible": problem}
    number = versions.keep_passing(deps.memory, deps.library, {**state, "spec": spec}, model=deps.model.name,
                                   origin=state.get("origin") or "directive", note=state["goal"])
    path = deps.library.module_path(spec["name"])
    deps.emit(Event("SAVE", f"{path} v{number}  ({status_of(evidence)}: {describe_evidence(evidence)})", *progress))
    return {"spec": spec}


__all__ = ["Deps", "Event", "analyze", "describe_fixes", "past_fixes", "plan", "route_after_analyze",
           "route_after_plan", "run_tests", "save", "temperature", "write"]
