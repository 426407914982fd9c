"""``AutonomousAgent``: the library API. One agent = one workspace, one model, one sandbox."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import safety
from agent.config import Settings, load_settings
from agent.errors import AgentError, ModelUnavailable
from agent.graph import build_graph, recursion_limit
from agent.library import SkillLibrary
from agent.llm import load_model
from agent.llm.base import Completion, Model, Request, TokenCallback
from agent.memory import Memory, now
from agent.nodes import Deps, Event
from agent.analysis import report_from_outcome
from agent.state import LoopState, TestReport
from safety.approvals import ApprovalRequest, Approvals, Decision
from safety.paths import validate_skill_name
from safety.sandbox import Sandbox


@dataclass(frozen=True)
class DirectiveResult:
    """How one directive ended. ``reason`` is data: passed, iteration_cap, no_progress, no_plan,
    blocked, model_unavailable or interrupted."""

    goal: str
    directive_id: str
    skill: str | None
    status: str  # working | failed | blocked | pending | interrupted
    iterations: int
    max_iterations: int
    reason: str
    path: Path | None  # the saved module, for a working skill
    message: str  # one line for the user
    tokens: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "working"


class AutonomousAgent:
    """Plan, write, test and keep Python skills in a workspace.

    ``model`` is a spec string ("auto", "embedded", "ollama:<tag>", "gguf:<path>", "openai:<name>")
    or any object implementing ``agent.llm.base.Model``. ``approve`` is asked about tier-2 needs
    (network, shell, ...); without it they are denied, unless ``auto_approve``. Tier 3 is never run.
    ``on_event`` gets each phase's progress, ``on_token`` streamed model text, ``on_call`` each
    finished model call, ``on_notice`` one-line notices (such as which model ``auto`` chose).
    """

    def __init__(self, workspace: str | Path | None = None, model: str | Model | None = None, *,
                 settings: Settings | None = None, max_iter: int | None = None,
                 timeout: float | None = None, approve: Callable[[ApprovalRequest], Decision] | None = None,
                 auto_approve: bool | None = None, sandbox: str | None = None,
                 on_event: Callable[[Event], None] | None = None, on_token: TokenCallback | None = None,
                 on_call: Callable[[Completion], None] | None = None,
                 on_notice: Callable[[str], None] | None = None) -> None:
        base = settings or load_settings()
        overrides = {k: v for k, v in {"workspace": Path(workspace) if workspace else None,
                                       "model": model if isinstance(model, str) else None,
                                       "max_iter": max_iter, "timeout": timeout, "yes": auto_approve,
                                       "sandbox": sandbox}.items() if v is not None}
        self.settings = replace(base, **overrides)
        self.workspace = self.settings.workspace.resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.memory = Memory(self.workspace)
        self.memory.read()  # a corrupted memory.json stops us here, before any work
        self.library = SkillLibrary(self.workspace)
        self.calls_log = self.workspace / "history" / "model_calls.jsonl"
        self.calls_log.parent.mkdir(exist_ok=True)
        self.approvals = Approvals(self.memory, self.workspace / "history" / "approvals.log",
                                   ask=approve, auto_approve=self.settings.yes)
        self.on_event, self.on_token, self.on_call, self.on_notice = on_event, on_token, on_call, on_notice
        self._model: Model | None = None if isinstance(model, str) or model is None else model
        self._sandbox: Sandbox | None = None

    # -- lazily built, once per agent ----------------------------------------------------------

    @property
    def model(self) -> Model:
        """The model, loaded on first use (raises ModelUnavailable with a one-line fix)."""
        if self._model is None:
            self._model = load_model(self.settings.model, ollama_host=self.settings.ollama_host,
                                     on_notice=self.on_notice)
        return self._model

    @property
    def sandbox(self) -> Sandbox:
        """The runtime sandbox, probed once."""
        if self._sandbox is None:
            self._sandbox = Sandbox.probe(self.workspace, force_level=self.settings.sandbox)
        return self._sandbox

    def execute(self, name: str, module_source: str, test_source: str) -> safety.SafetyOutcome:
        """The one path generated code takes: gates, approvals, then the sandbox."""
        return safety.run_generated(name=name, module_source=module_source, test_source=test_source,
                                    workspace=self.workspace, sandbox=self.sandbox,
                                    approvals=self.approvals, timeout=self.settings.timeout,
                                    skills_dir=self.library.skills_dir)

    # -- directives ----------------------------------------------------------------------------

    def run(self, goal: str, skill_name: str | None = None) -> DirectiveResult:
        """Run one directive to its end. KeyboardInterrupt records it as interrupted, then propagates."""
        goal = " ".join(goal.split())
        if not goal:
            raise AgentError("a directive needs a goal, e.g. :directive Create a JSON validator skill")
        if skill_name is not None:
            validate_skill_name(skill_name)
        directive_id = self.memory.add_directive(goal, self.settings.max_iter)
        progress = {"iteration": 0, "skill": skill_name}
        started = time.monotonic()

        def emit(event: Event) -> None:
            progress["iteration"] = max(progress["iteration"], event.iteration)
            if self.on_event:
                self.on_event(event)

        def end(status: str, reason: str, message: str, skill: str | None = None,
                path: Path | None = None, tokens: int = 0) -> DirectiveResult:
            skill = skill or progress["skill"]
            recorded = "done" if status == "working" else status  # a directive is done, a skill working
            self.memory.finish_directive(directive_id, status=recorded, reason=reason, skill=skill,
                                         iterations=progress["iteration"])
            return DirectiveResult(goal, directive_id, skill, status, progress["iteration"],
                                   self.settings.max_iter, reason, path, message, tokens,
                                   round(time.monotonic() - started, 2))

        try:
            deps = Deps(model=self.model, execute=self.execute, memory=self.memory,
                        library=self.library, emit=emit, on_token=self.on_token,
                        on_call=partial(self._log_call, directive_id))
            self.memory.start_directive(directive_id)
            state: LoopState = {"goal": goal, "skill_name": skill_name, "directive_id": directive_id,
                                "max_iterations": self.settings.max_iter}
            final = build_graph(deps).invoke(
                state, config={"recursion_limit": recursion_limit(self.settings.max_iter)})
        except ModelUnavailable as err:
            return end("pending", "model_unavailable", str(err))
        except KeyboardInterrupt:
            end("interrupted", "interrupted", "interrupted by the user")
            raise
        return self._finish(final, end, deps.tokens[0])

    def _finish(self, final: LoopState, end: Callable[..., DirectiveResult], tokens: int) -> DirectiveResult:
        spec, reason = final.get("spec"), final.get("reason") or "no_plan"
        if spec is None:
            return end("failed", "no_plan", "no usable plan: give an explicit signature and examples")
        name, report = spec["name"], final.get("report")
        fields = {"description": spec["description"], "signature": spec["signature"],
                  "iterations": final.get("iteration", 0),
                  "sandbox_level": (report or {}).get("level") or None}
        if reason == "passed":
            self.memory.upsert_skill(name, status="working", path=self.library.module_path(name),
                                     test_path=self.library.test_path(name), last_tested=now(), **fields)
            return end("working", reason, f"{name} is working", name, self.workspace / self.library.module_path(name),
                       tokens)
        existing = self.memory.get_skill(name)
        if not existing or existing.get("status") != "working":
            self.memory.upsert_skill(name, status="failed", **fields)
        status = "blocked" if reason == "blocked" else "failed"
        why = {"iteration_cap": f"no working version after {final.get('iteration', 0)} iterations",
               "no_progress": "the same failure twice in a row with the same code",
               "blocked": (report or {}).get("error", "blocked by the safety gates")}[reason]
        return end(status, reason, f"{name} {status}: {why}", name, tokens=tokens)

    def _log_call(self, directive_id: str, phase: str, request: Request, completion: Completion) -> None:
        """Append one model call's accounting to history/model_calls.jsonl."""
        record = {"timestamp": now(), "directive_id": directive_id, "phase": phase, "model": completion.model,
                  "temperature": request.temperature, "tokens_in": completion.tokens_in,
                  "tokens_out": completion.tokens_out, "seconds": round(completion.seconds, 3)}
        with open(self.calls_log, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if self.on_call:
            self.on_call(completion)

    def run_many(self, goals: Iterable[str]) -> list[DirectiveResult]:
        """Run directives one after another; skills made by earlier ones are reusable by later ones."""
        return [self.run(goal) for goal in goals]

    def retest(self, name: str) -> TestReport:
        """Re-run a saved skill's doctests and tests in the sandbox, and record the result."""
        source, tests = self.library.source(name), self.library.tests(name)
        if source is None or tests is None:
            raise AgentError(f"no saved skill named {name!r} (see :skills)")
        report = report_from_outcome(self.execute(name, source, tests))
        self.memory.upsert_skill(name, status="working" if report["ok"] else "failed", last_tested=now(),
                                 sandbox_level=report["level"] or None)
        return report
