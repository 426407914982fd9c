"""The loop's nodes (plan, write, run_tests, analyze, save) and its routers.

Each node takes the state and the injected ``Deps`` and returns a partial state. Nodes never
construct a model or run code themselves: the model and the safety path come in ``Deps``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

from agent import prompts
from agent.analysis import classify, headline, report_from_outcome
from agent.library import SkillLibrary, describe_skills
from agent.llm.base import Completion, Model, Request, TokenCallback
from agent.memory import Memory
from agent.spec import (complete_module, describe, extract_code, parse_examples,
                        parse_plan, parse_signature, stub, tests_from_examples)
from agent.state import LoopState, SkillSpec, TestReport
from safety import SafetyOutcome
from safety.paths import validate_skill_name

RESAMPLES = 2  # extra samples in one iteration when the model repeats a failed version
# Completion models stop when they leave the function body.
BODY_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\n\n\n", "```", "\n#", "\nprint(")


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
    execute: Callable[[str, str, str], SafetyOutcome]  # (name, module, tests) → gates + sandbox
    memory: Memory
    library: SkillLibrary
    emit: Callable[[Event], None] = lambda event: None
    on_token: TokenCallback | None = None
    on_call: Callable[[str, Request, Completion], None] = lambda phase, request, completion: None
    tokens: list[int] = field(default_factory=lambda: [0])  # running total, shared by nodes


def temperature(iteration: int) -> float:
    """Sampling temperature for an attempt: near-greedy first, more varied on each retry."""
    return round(min(0.1 + 0.15 * (iteration - 1), 1.0), 2)


def _generate(deps: Deps, request: Request, phase: str) -> Completion:
    completion = deps.model.generate(request, on_token=deps.on_token)
    deps.tokens[0] += completion.tokens_in + completion.tokens_out
    deps.on_call(phase, request, completion)
    return completion


# ---- plan ------------------------------------------------------------------------------------

def plan(state: LoopState, deps: Deps) -> dict:
    """Goal → skill spec (name, signature, examples, tests), or reason ``no_plan``."""
    started = time.monotonic()
    spec = _plan_chat(state, deps) if deps.model.chat else _plan_completion(state, deps)
    if spec is None:
        deps.emit(Event("PLAN", "no usable plan (for small models, give an explicit signature "
                                "and examples, e.g. `add(a: int, b: int) -> int`, add(1, 2) == 3)",
                        tokens=deps.tokens[0], seconds=time.monotonic() - started))
        return {"spec": None, "reason": "no_plan"}
    tests = spec["tests"].count("def test")
    deps.emit(Event("PLAN", f"{spec['signature']}  ({len(spec['examples'])} examples, {tests} tests)",
                    tokens=deps.tokens[0], seconds=time.monotonic() - started))
    return {"spec": spec, "iteration": 0, "best_code": "", "best_passed": -1, "previous_failure": ""}


def _requested_name(state: LoopState) -> str | None:
    name = state.get("skill_name")
    if name:
        return validate_skill_name(name)
    explicit = parse_signature(state["goal"])
    return explicit[0] if explicit else None


def _plan_chat(state: LoopState, deps: Deps) -> SkillSpec | None:
    goal, name = state["goal"], _requested_name(state)
    skills = deps.library.relevant(goal, deps.memory.read()["skills"])
    failures = deps.memory.similar_failures(goal, n=3)
    user = prompts.render(
        "plan_user", goal=goal,
        name_hint=f"The function must be named {name}." if name else "",
        skills=describe_skills(skills),
        past_failures=("Mistakes made before on similar goals:\n" + "\n".join(
            f"- {f['skill']}: {f['category']}: {f['error'][:200]}" for f in failures)) if failures else "")
    messages = [{"role": "system", "content": prompts.render("plan_system")},
                {"role": "user", "content": user}]
    for attempt in range(2):
        reply = _generate(deps, Request(messages=messages, temperature=0.2 + 0.3 * attempt), "plan").text
        spec = parse_plan(reply, name_hint=name)
        if spec is not None:
            return _with_user_examples(spec, goal)
    return None


def _with_user_examples(spec: SkillSpec, goal: str) -> SkillSpec:
    """Examples the user wrote in the directive are ground truth: always tested, always shown."""
    given = parse_examples(goal, spec["name"])
    known = {e["call"] for e in spec["examples"]}
    extra = [e for e in given if e["call"] not in known]
    if not extra:
        return spec
    return {**spec, "examples": extra + spec["examples"],
            "tests": spec["tests"] + "\n\n" + tests_from_examples(spec["name"], extra).split("\n", 2)[2]
            .replace("def test_example_", "def test_directive_example_")}


def _plan_completion(state: LoopState, deps: Deps) -> SkillSpec | None:
    """Base models cannot design a spec; the directive supplies it, the model fills in examples."""
    goal = state["goal"]
    explicit = parse_signature(goal)
    if explicit is None:
        return None
    name, signature = explicit
    if state.get("skill_name"):
        name = validate_skill_name(state["skill_name"] or "")
        signature = name + signature[signature.index("("):]
    description = describe(goal, name)
    examples = parse_examples(goal, explicit[0])
    if explicit[0] != name:
        examples = [{"call": name + e["call"][len(explicit[0]):], "result": e["result"]} for e in examples]
    if not examples:
        examples = _model_examples(deps, name, signature, description)
    if not examples:
        return None
    return {"name": name, "signature": signature, "description": description,
            "examples": examples, "tests": tests_from_examples(name, examples)}


def _model_examples(deps: Deps, name: str, signature: str, description: str) -> list:
    prompt = prompts.render("examples_completion", name=name, signature=signature,
                            description=description)
    reply = _generate(deps, Request(prompt=prompt, stop=('"""', "\ndef "), temperature=0.1,
                                    max_tokens=160), "plan").text
    text = f">>> {name}(" + reply
    goal_like = " ".join(line.strip().replace(">>> ", "", 1) + (" ==" if line.strip().startswith(">>>") else "")
                         for line in text.splitlines() if line.strip())
    return parse_examples(goal_like, name)[:4]


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
    tokens_out, seconds = 0, 0.0
    for attempt in range(1 + RESAMPLES):
        code, completion = _ask_for_code(state, spec, deps, temperature(iteration) + 0.3 * attempt)
        tokens_out, seconds = tokens_out + completion.tokens_out, seconds + completion.seconds
        if code is None or digest(code) not in failed:
            break
    fresh = code is not None
    note = f"skills/{spec['name']}.py" if fresh else "reply had no usable code"
    if attempt:
        note += f" ({attempt} resample{'s' if attempt > 1 else ''}: repeated a failed version)"
    deps.emit(Event("WRITE", note, iteration, state["max_iterations"], tokens_out, seconds))
    return {"iteration": iteration, "code": code if fresh else state.get("best_code", ""),
            "fresh_code": fresh}


def _ask_for_code(state: LoopState, spec: SkillSpec, deps: Deps, temp: float) -> tuple[str | None, Completion]:
    """One request for the module, in the style the model takes (chat or completion)."""
    temp = round(min(temp, 1.5), 2)
    if deps.model.chat:
        completion = _generate(deps, Request(messages=_write_messages(state, spec, deps), temperature=temp,
                                             max_tokens=2048), "write")
        code = extract_code(completion.text)
        if code is not None and f"def {spec['name']}(" not in code:
            code = None
        return code, completion
    completion = _generate(deps, Request(prompt=prompts.render("write_completion", stub=stub(spec)),
                                         stop=BODY_STOPS, temperature=temp, max_tokens=256), "write")
    return complete_module(spec, completion.text), completion


def digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _write_messages(state: LoopState, spec: SkillSpec, deps: Deps) -> list[dict[str, str]]:
    report = state.get("report")
    feedback = ""
    if report and not report["ok"] and state.get("code"):
        feedback = prompts.render("feedback", iteration=state.get("iteration", 0),
                                  category=report["category"], error=report["error"],
                                  code=state["code"].rstrip())
    elif report and report["category"] == "no_code":
        feedback = "Your previous reply had no usable ```python block. Reply with the whole module."
    skills = deps.library.relevant(state["goal"], deps.memory.read()["skills"])
    user = prompts.render("write_user", name=spec["name"], stub=stub(spec).rstrip(),
                          tests=spec["tests"].rstrip(), skills=describe_skills(skills), feedback=feedback)
    return [{"role": "system", "content": prompts.render("write_system")},
            {"role": "user", "content": user}]


# ---- run_tests -------------------------------------------------------------------------------

def run_tests(state: LoopState, deps: Deps) -> dict:
    """Gates, then the module's import, doctests and tests in the sandbox (via ``Deps.execute``)."""
    spec = state["spec"]
    assert spec is not None
    if not state.get("fresh_code"):
        report: TestReport = {"ok": False, "passed": 0, "failed": 0, "errors": 0, "category": "no_code",
                              "error": "the model's reply had no usable code", "level": "", "seconds": 0.0}
        deps.emit(Event("TEST", "skipped: nothing new to test", state["iteration"], state["max_iterations"]))
        return {"report": report}
    report = report_from_outcome(deps.execute(spec["name"], state["code"], spec["tests"]))
    if report["category"] == "blocked":
        message = f"blocked: {report['error']}"
    else:
        message = f"sandbox: {report['level']} · {report['passed']} passed"
        if report["failed"] or report["errors"]:
            message += f", {report['failed']} failed, {report['errors']} errors"
    deps.emit(Event("TEST", message, state["iteration"], state["max_iterations"], seconds=report["seconds"]))
    return {"report": report}


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
    deps.memory.record_failure(skill=state["spec"]["name"], error=report["error"][:500], category=category,
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
    first_line = headline(report["error"])
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
    """Keep the working module and its tests in the library."""
    spec = state["spec"]
    assert spec is not None
    path = deps.library.save(spec, state["code"])
    deps.emit(Event("SAVE", str(path.relative_to(deps.library.workspace)), state["iteration"],
                    state["max_iterations"]))
    return {}


__all__ = ["Deps", "Event", "analyze", "plan", "route_after_analyze", "route_after_plan", "run_tests",
           "save", "temperature", "write"]
