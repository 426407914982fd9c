"""Planning: a goal in the user's words → a skill spec, on every kind of model.

One JSON Schema (``plan.schema.json``) describes a plan. Chat models get it as structured output
(Ollama ``format``, OpenAI ``response_format``); completion models (a base model such as Gemma 3
270M) plan by few-shot completion under a llama.cpp grammar built from the same schema, without
``tests``. Whatever a reply holds is salvaged by ``spec.parse_plan``.

What counts as evidence is decided here: the user's own examples always; a chat model's examples
and tests (written before any code); never a completion model's invented results, which become
``probes``: calls whose actual results the user is asked to confirm.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from functools import cache
from importlib import resources

from agent import prompts
from agent.checks import parameters
from agent.library import describe_skills
from agent.llm.base import Completion, Request
from agent.spec import (
    describe,
    find_tests,
    json_objects,
    module_name,
    new_evidence,
    parse_examples,
    parse_plan,
    parse_signature,
    stub,
    tests_from_examples,
)
from agent.state import Example, SkillSpec
from safety.paths import validate_skill_name

HOLD_BACK_FROM = 3  # with this many user examples or more, one is kept out of every prompt
MAX_PROBES = 3

Generate = Callable[[Request, str], Completion]
_TYPE = r"(str|int|float|bool|bytes|list|dict|list\[(str|int|float)\]|dict\[str, (str|int|float)\])"
_PARAM = rf"[a-z_][a-z0-9_]{{0,20}}: {_TYPE}"
# Up to three parameters, each annotated with one of the simple types above.
TYPED_SIGNATURE = rf"^[a-z_][a-z0-9_]{{0,39}}\({_PARAM}(, {_PARAM}){{0,2}}\) -> {_TYPE}$"


@cache
def plan_schema(*, with_tests: bool = True) -> dict:
    """The plan's JSON Schema; completion models get it without ``tests`` (they cannot write them)."""
    schema = json.loads(resources.files("agent").joinpath("plan.schema.json").read_text(encoding="utf-8"))
    if not with_tests:
        del schema["properties"]["tests"]
        schema["required"].remove("tests")
        # A small model under a loose grammar invents types; give it simple annotated ones.
        schema["properties"]["signature"]["pattern"] = TYPED_SIGNATURE
        schema["properties"]["examples"]["maxItems"] = 2
    return schema


def requested_name(goal: str, skill_name: str | None) -> str | None:
    """The name the caller or the directive fixed, if any."""
    if skill_name:
        return module_name(validate_skill_name(skill_name))
    explicit = parse_signature(goal)
    return module_name(explicit[0]) if explicit else None


# ---- chat models ---------------------------------------------------------------------------------

def plan_chat(goal: str, name: str | None, generate: Generate, *, skills: list[dict],
              failures: list[dict]) -> SkillSpec | None:
    """Ask for a plan under the schema (twice at most); a plan without tests gets one follow-up."""
    user = prompts.render(
        "plan_user", goal=goal,
        name_hint=f"The function must be named {name}." if name else "",
        skills=describe_skills(skills),
        past_failures=("Mistakes made before on similar goals:\n" + "\n".join(
            _mistake(f) for f in failures)) if failures else "")
    messages = [{"role": "system", "content": prompts.render("plan_system")},
                {"role": "user", "content": user}]
    spec = None
    for attempt in range(2):
        reply = generate(Request(messages=messages, temperature=0.2 + 0.3 * attempt, schema=plan_schema()),
                         "plan").text
        spec = parse_plan(reply, name_hint=name)
        if spec is not None:
            break
    if spec is None:
        return None
    if not spec["tests"]:
        spec = _ask_for_tests(spec, generate)
    spec = with_user_examples(spec, goal)
    if not spec["tests"]:  # nothing vouches for any result: ask the user about plain calls
        spec["probes"] = typical_calls(spec)
    return spec


PLAN_FIX_MAX = 600  # of a past failure's fix shown in a plan prompt


def _mistake(failure: dict) -> str:
    """A past failure as a plan prompt shows it: skill, category, error and, when its directive
    passed in the end, the start of the change that fixed it."""
    line = f"- {failure['skill']}: {failure['category']}: {failure['error'][:200]}"
    fix = failure.get("fix")
    if fix:
        shown = fix if len(fix) <= PLAN_FIX_MAX else fix[:PLAN_FIX_MAX].rsplit("\n", 1)[0] + "\n..."
        line += f"\n  fixed by:\n```diff\n{shown}\n```"
    return line


def _ask_for_tests(spec: SkillSpec, generate: Generate) -> SkillSpec:
    """One follow-up request for the tests a plan left out."""
    messages = [{"role": "user", "content": prompts.render("plan_tests", name=spec["name"],
                                                           stub=stub(spec).rstrip())}]
    tests = find_tests(None, generate(Request(messages=messages, temperature=0.2), "plan").text, spec["name"])
    if not tests:
        return spec
    return {**spec, "tests": tests, "evidence": {**spec["evidence"], "plan_tests": tests.count("def test")}}


def with_user_examples(spec: SkillSpec, goal: str) -> SkillSpec:
    """The user's examples in ``goal`` are ground truth: see ``with_examples``."""
    return with_examples(spec, parse_examples(goal, spec["name"]))


def with_examples(spec: SkillSpec, examples: list[Example]) -> SkillSpec:
    """The user's examples are ground truth: tested always; with three or more, the last is held back."""
    given = [e for e in examples if e["call"] not in {x["call"] for x in spec["examples"]}]
    if not given:
        return spec
    holdout = given[-1:] if len(given) >= HOLD_BACK_FROM else []
    shown = given[:len(given) - len(holdout)]
    tests = tests_from_examples(spec["name"], shown, prefix="user_example")
    if spec["tests"]:
        tests = spec["tests"].rstrip() + "\n\n\n" + tests.split("\n", 2)[2]
    return {**spec, "examples": shown + spec["examples"], "tests": tests, "holdout": holdout,
            "evidence": {**spec["evidence"], "user_examples": len(shown), "held_back": len(holdout)}}


# ---- completion models ---------------------------------------------------------------------------

def plan_completion(goal: str, name: str | None, generate: Generate) -> SkillSpec | None:
    """The directive's own signature if it has one, else a plan completed under the schema's grammar.

    The model's example *results* are never evidence here; its example *calls* become probes.
    """
    explicit = parse_signature(goal)
    if explicit is not None:
        name = module_name(name or explicit[0])
        signature = name + explicit[1][explicit[1].index("("):]
        spec = _bare_spec(name, signature, describe(goal, explicit[0]))
        given = parse_examples(goal, explicit[0])
        if name != explicit[0]:  # renamed (by the caller, or off a module name): so are the examples
            goal = goal.replace(f"{explicit[0]}(", f"{name}(")
        spec = with_user_examples(spec, goal)
        if not given:
            spec["probes"] = _probe_calls(generate, spec)
        return spec
    reply = generate(Request(prompt=prompts.render("plan_completion", goal=goal).rstrip() + " ",
                             temperature=0.0, max_tokens=320, stop=("\nGoal:",),
                             schema=plan_schema(with_tests=False)), "plan").text
    data = next(iter(json_objects(reply)), None)
    if data is None:
        return None
    planned = parse_plan(json.dumps({**data, "examples": [], "tests": ""}), name_hint=name)
    if planned is None:
        return None
    spec = with_user_examples(_bare_spec(planned["name"], planned["signature"], planned["description"]), goal)
    if not spec["examples"]:
        spec["probes"] = (_calls_of(data.get("examples"), planned["name"], planned["signature"])
                          or _probe_calls(generate, spec))
    return spec


def _bare_spec(name: str, signature: str, description: str) -> SkillSpec:
    return {"name": name, "signature": signature, "description": description, "examples": [],
            "tests": "", "holdout": [], "probes": [], "evidence": new_evidence()}


def _probe_calls(generate: Generate, spec: SkillSpec) -> list[str]:
    """Example calls a completion model suggests for a signature (their results are ignored)."""
    prompt = prompts.render("examples_completion", name=spec["name"], signature=spec["signature"],
                            description=spec["description"])
    reply = generate(Request(prompt=prompt, stop=('"""', "\ndef "), temperature=0.1, max_tokens=160),
                     "plan").text
    calls = [f"{spec['name']}(" + reply.split("\n", 1)[0]]
    calls += [line.strip()[4:] for line in reply.splitlines()[1:] if line.strip().startswith(">>> ")]
    return _calls_of([{"call": c} for c in calls], spec["name"], spec["signature"]) or typical_calls(spec)


# Plain inputs for an annotation, when the model suggests none that fit the signature.
TYPICAL = {"str": ["'hello world'", "''"], "int": ["7", "0"], "float": ["2.5", "0.0"], "bool": ["True", "False"],
           "bytes": ["b'hi'", "b''"], "list": ["[3, 1, 2]", "[]"], "dict": ["{'a': 1}", "{}"]}


def typical_calls(spec: SkillSpec) -> list[str]:
    """Two calls with plain arguments of the annotated types ([] when a type is not a plain one)."""
    node = ast.parse(f"def {spec['signature']}: pass").body[0]
    assert isinstance(node, ast.FunctionDef)
    kinds = []
    for arg in node.args.args:
        base = arg.annotation.value if isinstance(arg.annotation, ast.Subscript) else arg.annotation
        if not isinstance(base, ast.Name) or base.id not in TYPICAL:
            return []
        kinds.append(base.id)
    return [f"{spec['name']}({', '.join(TYPICAL[k][i] for k in kinds)})" for i in range(2)] if kinds else []


def _calls_of(raw: object, name: str, signature: str) -> list[str]:
    """Well-formed calls of ``name`` with literal arguments, matching the signature's arity."""
    wanted, calls = len(parameters(signature)), []
    for item in raw if isinstance(raw, list) else []:
        call = str(item.get("call", "") if isinstance(item, dict) else item).strip()
        try:
            node = ast.parse(call, mode="eval").body
            if not isinstance(node, ast.Call) or len(node.args) + len(node.keywords) != wanted:
                continue
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                ast.literal_eval(arg)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        call = name + call[call.index("("):]
        if call not in calls:
            calls.append(call)
    return calls[:MAX_PROBES]


def confirmed_spec(spec: SkillSpec, confirmed: list[Example], corrected: list[Example],
                   rejected: list | None = None) -> SkillSpec:
    """The spec with the user's answers as tests: confirmed and corrected results are evidence;
    a result the user called wrong (with no correct value) becomes a check that it changes."""
    answered = confirmed + corrected
    if not answered and not rejected:
        return spec
    tests = tests_from_examples(spec["name"], answered, prefix="confirmed") if answered else ""
    for i, seen in enumerate(rejected or [], 1):
        message = f"{seen.call} returned {seen.result}, which the user says is wrong"
        tests += (f"\ndef test_rejected_{i}():\n    got = {seen.call}\n"
                  f"    assert repr(got) != {seen.result!r}, {message!r}\n")
    if not answered:
        tests = f"from {spec['name']} import {spec['name']}\n" + tests
    if spec["tests"]:
        tests = spec["tests"].rstrip() + "\n\n\n" + tests
    return {**spec, "examples": spec["examples"] + answered, "tests": tests, "probes": [],
            "evidence": {**spec["evidence"], "confirmed": spec["evidence"]["confirmed"] + len(answered)}}
