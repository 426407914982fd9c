"""The graph's state. Nodes return partial dicts; every field is overwritten (no reducers)."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

Category = Literal["syntax_error", "import_error", "failed_assertion", "timeout", "crash",
                   "no_code", "blocked", "model_error", "overfit", "held_back"]
Reason = Literal["passed", "iteration_cap", "no_progress", "blocked", "no_plan", "incompatible"]


class Example(TypedDict):
    call: str  # a Python expression calling the skill, e.g. "reverse_words('a b')"
    result: str  # the repr of its value, e.g. "'b a'"


class Evidence(TypedDict):
    """Where a skill's expected values came from. None of them came from the code-writing call."""

    user_examples: int  # examples the user wrote (directive or :examples), shown to the model
    plan_tests: int  # test functions a chat model wrote in the plan, before any code existed
    confirmed: int  # results the user confirmed or corrected when asked
    held_back: int  # user examples never shown to the model, checked once the rest pass
    property_cases: int  # model-independent hypothesis cases from the signature that passed


class SkillSpec(TypedDict):
    name: str  # snake_case, validated by safety.paths.validate_skill_name
    signature: str  # "name(arg: type, ...) -> type", no "def", no colon
    description: str  # one sentence, the first docstring line
    examples: list[Example]  # trusted examples: doctests in the docstring, shown to the model
    tests: str  # pytest source with trusted expected values ("" when there are none)
    holdout: list[Example]  # trusted examples kept out of every prompt, checked once the rest pass
    probes: list[str]  # calls whose results nobody vouched for (a small model's own): asked of the user
    evidence: Evidence  # counts of the trusted checks above
    preamble: NotRequired[str]  # module code before the function (imports, helpers it may use), kept verbatim


class TestReport(TypedDict):
    ok: bool  # every collected test and doctest passed, and there was at least one
    passed: int
    failed: int
    errors: int
    category: Category | None  # None when ok
    error: str  # the short, useful part of the output ("" when ok)
    level: str  # sandbox level it ran on ("" when it never ran)
    seconds: float


class LoopState(TypedDict, total=False):
    goal: str  # the user's directive, verbatim
    skill_name: str | None  # a name the caller asked for (plan must use it)
    directive_id: str  # memory's id for this directive
    max_iterations: int  # the cap; iteration never exceeds it
    spec: SkillSpec | None  # set by plan; None means planning failed
    iteration: int  # number of write attempts so far (1-based after the first write)
    code: str  # the module under test this iteration
    fresh_code: bool  # False when the model's reply had no usable code (code = best so far)
    best_code: str  # the version that passed the most checks so far ("" before any)
    best_passed: int  # how many checks best_code passed (-1 before any run)
    report: TestReport | None  # the latest test result
    failed_code: list[str]  # digests of every version that failed (write resamples on a repeat)
    previous_failure: str  # fingerprint (category, error, code) of the previous failure
    reason: Reason | None  # why the loop ended; None while it runs
    tokens: int  # model tokens (in + out) spent on this directive so far
    incompatible: str  # why a passing version was not kept: it fails the current version's tests
    base_code: str  # :improve: the current version, which the model changes
    notes: str  # :improve: the lint findings and the review, shown with the code
    origin: str  # what makes the version kept: "directive" (default) or "improve"
