"""``AutonomousAgent``: the library API. One agent = one workspace, one model, one sandbox."""

from __future__ import annotations

import contextlib
import fcntl
import json
import keyword
import os
import sqlite3
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import safety
from agent import changes, checks, improve, planner, versions
from agent.analysis import headline, report_from_outcome
from agent.checks import Observed
from agent.config import Settings, load_settings
from agent.errors import (
    AgentError,
    CallRefused,
    ModelUnavailable,
    SkillCallError,
    SkillDamaged,
    disk_full,
    no_space,
)
from agent.library import SkillLibrary
from agent.literals import MAX_CHARS, LiteralRefused, arguments_problem, read_result, read_word
from agent.llm import load_model
from agent.llm.base import Completion, Model, Request, TokenCallback
from agent.llm.common import Deadline
from agent.memory import Memory, now
from agent.memory.files import temp_debris, try_lock
from agent.nodes import Deps, Event
from agent.spec import MAX_GOAL_CHARS, leading_literal, new_evidence, parse_examples, tests_from_examples
from agent.state import LoopState, SkillSpec, TestReport
from safety.approvals import ApprovalRequest, Approvals, Decision
from safety.paths import InvalidSkillName, safe_rmtree, validate_skill_name
from safety.sandbox import Sandbox, SandboxDidNotStart


@dataclass(frozen=True)
class CallResult:
    """What a skill call returned: ``value`` (a Python literal, or ``text`` itself when the result's
    repr is not a literal), ``text`` (its repr) and whether it read back as a literal."""

    value: object
    text: str
    literal: bool


@dataclass(frozen=True)
class DirectiveResult:
    """How one directive ended. ``reason`` is data: passed, iteration_cap, no_progress, no_plan,
    blocked, model_unavailable or interrupted."""

    goal: str
    directive_id: str
    skill: str | None
    status: str  # working | untested | failed | blocked | pending | interrupted | crashed
    iterations: int
    max_iterations: int
    reason: str
    path: Path | None  # the saved module, for a working skill
    message: str  # one line for the user
    tokens: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The directive produced a skill that passed its checks (``working`` or ``untested``)."""
        return self.status in ("working", "untested")


# Whether a version that fails the current version's tests replaces it anyway: (skill, why) -> bool.
Replace = Callable[[str, str], bool]

# The user as the oracle: (skill, observed calls) -> one answer per call: True (right), False
# (wrong, correct value unknown), a string (the correct value, as a Python literal) or None (skip).
Confirm = Callable[[str, list[Observed]], Iterable[bool | str | None]]


def spec_literal(text: str) -> str | None:
    """A user's answer as the repr of a Python literal (``hello`` is read as the string 'hello');
    None for an answer that is no value: one past a limit (a 5,000-digit int, a list nested 3,000
    deep) or an expression of literals (``10**400``), never read as a string or cut short."""
    text = text.strip()
    if not text:
        return None
    try:
        literal, value = read_word(text)
    except LiteralRefused:
        return None
    if literal:
        return repr(value)
    value = leading_literal(text)
    return value if value is not None else repr(text)


def _seen(observed: list[Observed], call: str) -> str:
    return next((o.result for o in observed if o.call == call), "?")


OUTPUT_KEPT = 4000  # characters of a test run's output kept in the audit trail
CALLABLE = ("working", "untested")  # the statuses a skill can be called in
CALL_RESULT_CHARS = 8_000  # the longest repr a call brings back (the sandbox keeps 64 kB of output)
CALL_ARGUMENT_CHARS = MAX_CHARS  # the longest repr of a call's arguments


def _repr(value: object) -> str:
    try:
        return repr(value)
    except (ValueError, RecursionError, MemoryError):  # an int with no repr, a list nested too deeply
        return "..."


def call_text(name: str, args: tuple, kwargs: dict, limit: int = 80) -> str:
    """``name(1, 'x', key=2)``, cut short to ``limit`` characters, for messages."""
    text = ", ".join([_repr(a) for a in args] + [f"{k}={_repr(v)}" for k, v in kwargs.items()])
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{name}({text})"


def read_literal(text: str) -> object:
    """A call's result from its repr: the value when the repr is a Python literal, else the repr;
    ``LiteralRefused`` (one line, the limit) for a literal past the limits."""
    return read_result(text)


class _Run:
    """One directive's life: the loop's invocations, its progress, its audit trail, how it ended."""

    def __init__(self, agent: AutonomousAgent, goal: str, directive_id: str, skill: str | None,
                 max_iterations: int) -> None:
        self.agent, self.goal, self.directive_id = agent, goal, directive_id
        self.skill, self.iteration, self.tokens, self.saved = skill, 0, 0, False
        self.max_iterations, self.level = max_iterations, ""
        self.started = time.monotonic()

    def audit(self, kind: str, **data: object) -> None:
        self.agent.memory.history.add_event(self.directive_id, now(), kind, data)

    def emit(self, event: Event) -> None:
        self.iteration = max(self.iteration, event.iteration)
        if event.phase == "SAVE":
            self.saved = True
        self.audit("event", phase=event.phase, message=event.message, iteration=event.iteration,
                   tokens=event.tokens, seconds=round(event.seconds, 3))
        if self.agent.on_event:
            self.agent.on_event(event)

    def execute(self, name: str, module_source: str, test_source: str,
                extra_tests: dict[str, str] | None = None) -> safety.SafetyOutcome:
        """The agent's one safety path, with the code, the gates' findings and the result audited."""
        outcome = self.agent.execute(name, module_source, test_source, extra_tests)
        run = outcome.run
        if run is not None:
            self.level = run.level
        self.audit("test_run", skill=name, code=module_source, tests=test_source, tier=int(outcome.verdict.tier),
                   findings=[f"{f.filename}:{f.line} {f.rule}: {f.message}" for f in outcome.verdict.findings],
                   blocked=outcome.blocked, reason=outcome.reason, granted=sorted(outcome.granted),
                   level=run.level if run else "", passed=run.passed if run else 0,
                   failed=run.failed if run else 0, errors=run.errors if run else 0,
                   seconds=round(run.seconds, 3) if run else 0.0,
                   output=run.output[-OUTPUT_KEPT:] if run else "")
        return outcome

    def on_call(self, phase: str, request: Request, completion: Completion) -> None:
        self.audit("model_call", phase=phase, model=completion.model, temperature=request.temperature,
                   prompt=request.prompt if request.prompt is not None else request.messages,
                   reply=completion.text, tokens_in=completion.tokens_in, tokens_out=completion.tokens_out,
                   seconds=round(completion.seconds, 3))
        self.agent._log_call(self.directive_id, phase, request, completion)

    def config(self, max_iterations: int | None = None) -> dict:
        from agent.graph import recursion_limit
        return {"configurable": {"thread_id": self.directive_id},
                "recursion_limit": recursion_limit(max_iterations or self.max_iterations)}

    def loop(self, state: LoopState | None) -> LoopState:
        """Run the graph from ``state`` (a fresh directive, or one resumed with a spec), or with
        None from the directive's last checkpoint (each completed node is one)."""
        from agent.graph import build_graph  # LangGraph costs half a second to import: not at start

        agent = self.agent
        deps = Deps(model=agent.model, execute=self.execute, memory=agent.memory, library=agent.library,
                    emit=self.emit, on_token=agent.on_token, on_call=self.on_call,
                    past_fixes=agent.settings.past_fixes)
        final = build_graph(deps, checkpointer=agent.checkpointer).invoke(
            state, config=self.config(state["max_iterations"] if state else None), durability="sync")
        self.tokens = final.get("tokens", self.tokens)
        if final.get("spec"):
            self.skill = final["spec"]["name"]
        return final

    def save_evidence(self, spec: SkillSpec, final: LoopState) -> None:
        """Keep confirmed examples as tests of the saved skill, and its status with them."""
        agent = self.agent
        evidence = {**spec["evidence"], "property_cases": agent.memory.get_skill(spec["name"])["evidence"][
            "property_cases"]}
        versions.amend(agent.memory, agent.library, spec["name"], checks.test_module(spec, with_holdout=True),
                       status=checks.status_of(evidence), evidence=evidence, probes=[])

    def end(self, status: str, reason: str, message: str, skill: str | None = None,
            path: Path | None = None, error: str | None = None) -> DirectiveResult:
        skill = skill or self.skill
        recorded = "done" if status in ("working", "untested") else status  # a directive is done
        memory, seconds = self.agent.memory, round(time.monotonic() - self.started, 2)
        memory.finish_directive(self.directive_id, status=recorded, reason=reason, skill=skill,
                                iterations=self.iteration, error=error)
        self.audit("end", status=status, reason=reason, message=message, skill=skill,
                   iterations=self.iteration, tokens=self.tokens, seconds=seconds)
        memory.history.end_run(self.directive_id, ended=now(), outcome=status, reason=reason, skill=skill,
                               iterations=self.iteration, tokens=self.tokens,
                               seconds=seconds, level=self.level or None)
        if recorded not in ("pending", "interrupted"):  # nothing left to resume
            self.agent.forget_checkpoints(self.directive_id)
        return DirectiveResult(self.goal, self.directive_id, skill, status, self.iteration,
                               self.max_iterations, reason, path, message, self.tokens, seconds)


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
        self.on_event, self.on_token, self.on_call, self.on_notice = on_event, on_token, on_call, on_notice
        self.memory = Memory(self.workspace)
        self.library = SkillLibrary(self.workspace)
        self.calls_log = self.workspace / "history" / "model_calls.jsonl"
        self.calls_log.parent.mkdir(exist_ok=True)
        # a corrupted memory.json stops us here, before any work; one-line notices say what a
        # start repaired (a restored memory.json, debris of killed runs, directives cut off)
        self.notices = self._clean_start()
        for notice in self.notices:
            if on_notice:
                on_notice(notice)
        self.approvals = Approvals(self.memory, self.workspace / "history" / "approvals.log",
                                   ask=approve, auto_approve=self.settings.yes)
        self._model: Model | None = (None if isinstance(model, str) or model is None
                                     else Deadline(model, self.settings.model_timeout))
        self._sandbox: Sandbox | None = None
        self._checkpointer = None

    def _clean_start(self) -> list[str]:
        """Recover memory.json; then, unless another agent is using this workspace now, remove
        what killed runs left (run directories, temp files) and finish or undo skill changes a
        kill cut off (``agent.changes``). Every agent holds a shared lock on history/agent.lock
        for its life; getting it exclusively first proves nobody else is here. Links are never
        followed."""
        lock = self.workspace / "history" / "agent.lock"
        fd = try_lock(lock)
        if fd is None:  # another agent lives: its runs are not debris, its changes not cut off
            fd = try_lock(lock, shared=True, wait=True)  # waits out another agent's clean start
            assert fd is not None
            weakref.finalize(self, os.close, fd)
            return self.memory.recover()
        removed, notes = 0, []
        try:
            exec_dir = self.workspace / "exec"
            if exec_dir.is_dir() and not exec_dir.is_symlink():
                for entry in exec_dir.iterdir():  # safe_rmtree unlinks a link or file, never follows it
                    removed += 1
                    note = safe_rmtree(entry)
                    if note:
                        notes.append(note)
            for path in temp_debris(self.workspace, self.library.skills_dir, self.library.skills_dir / "tests",
                                    self.workspace / "history"):
                if path.name.startswith(".memory.json."):
                    continue  # Memory.recover removes those, under memory's lock
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
            recovered = self.memory.recover() + changes.recover(self.memory, self.library)
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)
            weakref.finalize(self, os.close, fd)
        if removed:
            notes.insert(0, f"removed {removed} leftover{'s' if removed > 1 else ''} of killed runs "
                            "(run directories, temp files)")
        return notes + recovered

    # -- lazily built, once per agent ----------------------------------------------------------

    @property
    def model(self) -> Model:
        """The model, loaded on first use (raises ModelUnavailable with a one-line fix)."""
        if self._model is None:
            model = load_model(self.settings.model, ollama_host=self.settings.ollama_host,
                               on_notice=self.on_notice, timeout=self.settings.model_timeout)
            self._model = Deadline(model, self.settings.model_timeout)
        return self._model

    @property
    def sandbox(self) -> Sandbox:
        """The runtime sandbox, probed once. At the rlimits level (no sandbox works) generated code
        is refused unless ``settings.allow_unsandboxed``."""
        if self._sandbox is None:
            self._sandbox = Sandbox.probe(self.workspace, force_level=self.settings.sandbox,
                                          allow_unsandboxed=self.settings.allow_unsandboxed)
            self._sandbox.warm = self.settings.warm_sandbox
        return self._sandbox

    def execute(self, name: str, module_source: str, test_source: str,
                extra_tests: dict[str, str] | None = None) -> safety.SafetyOutcome:
        """The one path generated code takes: gates, approvals, then the sandbox. The saved skills
        the code imports (directly or not) are gated with it: what they need, this run needs."""
        return safety.run_generated(name=name, module_source=module_source, test_source=test_source,
                                    workspace=self.workspace, sandbox=self.sandbox,
                                    approvals=self.approvals, timeout=self.settings.timeout,
                                    skills_dir=self.library.skills_dir, extra_block=self.settings.block,
                                    extra_tests=extra_tests,
                                    dependencies=self.library.closure(module_source, test_source,
                                                                      *(extra_tests or {}).values(), exclude=name))

    # -- directives ----------------------------------------------------------------------------

    def run(self, goal: str, skill_name: str | None = None, *,
            confirm: Confirm | None = None, replace: bool | Replace = False) -> DirectiveResult:
        """Run one directive to its end; the directive is always recorded as ended.

        ``confirm`` (the user as the oracle) is shown the actual results of a skill that passed
        with no expected values behind it, and answers per call (see ``Confirm``); without it the
        skill stays ``untested``. KeyboardInterrupt records ``interrupted`` and propagates; a
        model the user must fix leaves the directive ``pending``; any other error ends it
        ``crashed`` with the error, never stuck ``running``. ``resume`` continues the first two.

        For a skill that exists, what passes becomes its next version only if it also passes the
        current version's tests; if not, ``replace`` (True, or asked with the name and the reason)
        decides whether it replaces the current version anyway (else: ``failed``, ``incompatible``).
        """
        goal = " ".join(goal.split())
        if not goal:
            raise AgentError("a directive needs a goal, e.g. :directive Create a JSON validator skill")
        if len(goal) > MAX_GOAL_CHARS:
            raise AgentError(f"a goal is at most {MAX_GOAL_CHARS:,} characters (this one has {len(goal):,}); "
                             "say what the skill does, with a few examples")
        if skill_name is not None:
            validate_skill_name(skill_name)
        self._check_storage()
        directive_id = self.memory.add_directive(goal, self.settings.max_iter, skill=skill_name)
        run = _Run(self, goal, directive_id, skill_name, self.settings.max_iter)
        return self._drive(run, {"goal": goal, "skill_name": skill_name, "directive_id": directive_id,
                                 "max_iterations": self.settings.max_iter}, confirm, replace=replace)

    def run_spec(self, spec: SkillSpec, goal: str | None = None, *, confirm: Confirm | None = None,
                 replace: bool | Replace = False) -> DirectiveResult:
        """Run the loop from a spec made elsewhere (a benchmark problem's, a caller's own plan):
        the plan node keeps a spec it is given, so nothing of it is lost to planning. The spec's
        examples, tests and held-back examples count as the evidence ``spec["evidence"]`` says.
        ``goal`` is what the directive is recorded as (default: the signature). Otherwise as ``run``."""
        try:
            validate_skill_name(spec["name"])
            if not spec["signature"].startswith(f"{spec['name']}("):
                raise ValueError
            checks.parameters(spec["signature"])
        except (InvalidSkillName, KeyError, ValueError, SyntaxError):
            raise AgentError("a spec needs a valid skill name and a signature `name(args) -> type` "
                             "that starts with it") from None
        spec = {"examples": [], "tests": "", "holdout": [], "probes": [], "description": "", **spec,
                "evidence": {**new_evidence(), **(spec.get("evidence") or {})}}  # type: ignore[typeddict-item]
        goal = " ".join((goal or spec["signature"]).split())
        if len(goal) > MAX_GOAL_CHARS:
            raise AgentError(f"a goal is at most {MAX_GOAL_CHARS:,} characters (this one has {len(goal):,})")
        self._check_storage()
        directive_id = self.memory.add_directive(goal, self.settings.max_iter, skill=spec["name"])
        run = _Run(self, goal, directive_id, spec["name"], self.settings.max_iter)
        return self._drive(run, {"goal": goal, "skill_name": spec["name"], "directive_id": directive_id,
                                 "max_iterations": self.settings.max_iter, "spec": spec, "iteration": 0,
                                 "best_code": "", "best_passed": -1, "previous_failure": "", "tokens": 0},
                           confirm, replace=replace)

    def resumable(self) -> list[dict]:
        """Directives ``resume`` can continue (pending, interrupted, cut off), oldest first."""
        return self.memory.resumable_directives()

    def resume(self, directive_id: str | None = None, *, confirm: Confirm | None = None,
               replace: bool | Replace = False) -> DirectiveResult:
        """Continue a directive that did not end: the most recent one, or ``directive_id`` (a
        unique prefix will do). It goes on from its last completed step (plan, write, test,
        analyze), so a plan or a tested version is not made again. A directive another agent is
        running, or one that ended meanwhile, is a one-line ``AgentError``."""
        self._check_storage()
        waiting = self.resumable()
        if not waiting:
            raise AgentError("nothing to resume: no directive is pending, interrupted or cut off")
        if directive_id is None:
            directive = waiting[-1]
        else:
            matches = [d for d in waiting if d["id"].startswith(directive_id.strip())]
            if len(matches) != 1:
                ids = ", ".join(d["id"] for d in waiting[-5:])
                raise AgentError(f"{'no' if not matches else 'more than one'} resumable directive matches "
                                 f"{directive_id!r} (resumable: {ids})")
            directive = matches[0]
        run = _Run(self, directive["goal"], directive["id"], directive["skill"], directive["max_iterations"])
        return self._drive(run, {"goal": directive["goal"], "skill_name": directive["skill"],
                                 "directive_id": directive["id"], "max_iterations": directive["max_iterations"]},
                           confirm, resume=True, replace=replace)

    def checkpointed(self, directive_id: str) -> LoopState | None:
        """The loop state a directive's last completed step left, or None."""
        from agent.graph import build_graph

        graph = build_graph(None, checkpointer=self.checkpointer)  # type: ignore[arg-type]
        with self._checkpoint_errors():
            snapshot = graph.get_state({"configurable": {"thread_id": directive_id}})
        return dict(snapshot.values) if snapshot.values else None  # type: ignore[return-value]

    def _drive(self, run: _Run, fresh: LoopState, confirm: Confirm | None, *,
               resume: bool = False, replace: bool | Replace = False) -> DirectiveResult:
        """Run a directive's loop to its recorded end: from ``fresh``, or (``resume``) from its last
        checkpoint when it has one. Starting it takes its liveness lock first: a directive another
        agent runs, or one that ended, raises ``AgentError`` and is left as it is."""
        memory = self.memory
        memory.start_directive(run.directive_id)
        try:
            memory.history.start_run(run.directive_id, run.goal, now(), model=self._model_name())
            saved = self.checkpointed(run.directive_id) if resume else None
            run.audit("start", goal=run.goal, resumed=resume, from_checkpoint=saved is not None,
                      max_iterations=run.max_iterations)
            if saved is not None:
                run.iteration, run.tokens = saved.get("iteration", 0), saved.get("tokens", 0)
                where = (f"from the last completed step (iteration {run.iteration})" if saved.get("spec")
                         else "from the start: it stopped while planning")
                run.emit(Event("RESUME", where, run.iteration, run.max_iterations, run.tokens))
            with self.sandbox.session():   # one warm sandbox for the directive's test runs
                final = run.loop(None if saved is not None else fresh)
                if final.get("reason") == "incompatible" and (
                        replace(final["spec"]["name"], final["incompatible"]) if callable(replace) else replace):
                    final = self._replace(run, final)
            if final.get("reason") == "passed" and confirm is not None:
                final = self._ask_the_user(run, final, confirm)
            result = self._finish(final, run)
            if result.ok and result.skill:
                try:
                    self.retest_dependents(result.skill)
                except SandboxDidNotStart as err:  # the directive has ended; the rest keep their status
                    if self.on_notice:
                        self.on_notice(f"the skills importing {result.skill} were not retested: {err}")
            return result
        except ModelUnavailable as err:
            return run.end("pending", "model_unavailable", str(err))
        except SandboxDidNotStart as err:  # the machine, not the code: nothing counted, resumable
            return run.end("pending", "sandbox_unavailable", f"{err} (:resume continues the directive)")
        except KeyboardInterrupt:
            run.end("interrupted", "interrupted", "interrupted by the user")
            raise
        except Exception as err:  # noqa: BLE001 - a bug must not leave the directive running
            if no_space(err, self.workspace):
                return self._disk_full(run)
            self._log_crash(run.directive_id)
            error = f"{type(err).__name__}: {err}"
            return run.end("crashed", "crashed", f"the directive crashed ({error}); details in "
                           "history/crashes.log", error=error)

    @contextlib.contextmanager
    def _checkpoint_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            if no_space(err, self.workspace):
                raise disk_full(self.workspace / "history") from None
            raise AgentError(f"{self.workspace / 'history' / 'checkpoints.sqlite'}: {err}; move it away "
                             "(a new one is made; unfinished directives then start over)") from None

    def _check_storage(self) -> None:
        """Fail in one line, before a directive is recorded, when its history cannot be kept."""
        self.memory.history.check()
        with self._checkpoint_errors():
            self.checkpointer.setup()

    def _model_name(self) -> str | None:
        return self._model.name if self._model is not None else None

    @property
    def checkpointer(self):
        """LangGraph's SQLite checkpointer (history/checkpoints.sqlite), one per agent."""
        if self._checkpointer is None:
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(self.workspace / "history" / "checkpoints.sqlite", check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            self._checkpointer = SqliteSaver(conn)
            weakref.finalize(self, conn.close)
        return self._checkpointer

    def forget_checkpoints(self, directive_id: str) -> None:
        """Drop a directive's checkpoints once it ended for good (there is nothing to resume)."""
        if self._checkpointer is not None or (self.workspace / "history" / "checkpoints.sqlite").exists():
            with contextlib.suppress(sqlite3.Error):  # a broken file keeps them: nothing to lose
                self.checkpointer.delete_thread(directive_id)

    def _ask_the_user(self, run: _Run, final: LoopState, confirm: Confirm) -> LoopState:
        """Show the probes' actual results; confirmed and corrected values become tests. A
        correction (or a "no") sends the loop on from the current code."""
        spec = final["spec"]
        assert spec is not None
        if checks.status_of(spec["evidence"]) == "working" or not spec["probes"]:
            return final
        observed = self.observe(spec["name"], final["code"], spec["probes"])
        if not observed:
            return final
        answers = list(confirm(spec["name"], observed)) + [None] * len(observed)
        confirmed, corrected, rejected = [], [], []
        for seen, answer in zip(observed, answers, strict=False):
            if answer is True and not seen.raised:
                confirmed.append({"call": seen.call, "result": seen.result})
            elif isinstance(answer, str) and (value := spec_literal(answer)) is not None:
                (confirmed if value == seen.result and not seen.raised else corrected).append(
                    {"call": seen.call, "result": value})
            elif answer is False or isinstance(answer, str):
                rejected.append(seen)
        spec = planner.confirmed_spec(spec, confirmed, corrected, rejected)
        if not corrected and not rejected:
            run.save_evidence(spec, final)
            return {**final, "spec": spec}
        wrong = corrected[0] if corrected else None
        error = (f"{wrong['call']} returned {_seen(observed, wrong['call'])}, expected {wrong['result']} "
                 "(the user's answer)" if wrong else
                 f"{rejected[0].call} returned {rejected[0].result}, which the user says is wrong")
        report: TestReport = {"ok": False, "passed": 0, "failed": 1, "errors": 0, "category": "failed_assertion",
                              "error": error, "level": "", "seconds": 0.0}
        # the answer sends the loop on within the directive's one cap: no count shown passes it
        cap = final["max_iterations"]
        stop = final["iteration"] >= cap
        run.emit(Event("ANALYZE", f"user: {error} → {'stop (iteration_cap)' if stop else 'retry'}",
                       final["iteration"], cap))
        if stop:
            return {**final, "spec": spec, "report": report, "reason": "iteration_cap"}
        return run.loop({**final, "spec": spec, "report": report, "reason": None, "fresh_code": True})

    def _replace(self, run: _Run, final: LoopState) -> LoopState:
        """The user chose a version that fails the current one's tests: keep it, without them."""
        spec = final["spec"]
        assert spec is not None
        before = (self.memory.get_skill(spec["name"]) or {}).get("version")
        number = versions.keep_passing(self.memory, self.library, final, model=self._model_name(), origin="replace",
                                       note=f"replaced v{before}: {final['incompatible']}", compatible=False)
        run.saved = True
        run.emit(Event("SAVE", f"{self.library.module_path(spec['name'])} v{number}  (replaces v{before}, "
                               "as you asked)", run.iteration, run.max_iterations))
        return {**final, "reason": "passed"}

    def observe(self, name: str, code: str, calls: list[str]) -> list[Observed]:
        """Run ``calls`` against ``code`` in the sandbox (through the gates and approvals) and read
        their results; none when the calls could not run (a gate or a denied approval). A sandbox
        that could not start raises ``SandboxDidNotStart``: no results is not what the code did."""
        outcome = self.execute(name, code, checks.probe_tests(name, calls))
        return [] if outcome.run is None else checks.read_probes(outcome.run.output, calls)

    def call(self, name: str, /, *args: object, **kwargs: object) -> object:
        """The value a saved skill returns, called in the sandbox: see ``call_result``."""
        return self.call_result(name, *args, **kwargs).value

    def call_result(self, name: str, /, *args: object, **kwargs: object) -> CallResult:
        """Call a saved skill in the sandbox and return its result: ``agent.call("slugify",
        "Hello World")``. The run takes the one safety path tests take (gates, approvals, the
        sandbox, its timeout). Arguments must be Python literals (str, int, float, bool, None,
        bytes, complex, and lists, tuples, dicts and sets of them); they reach the skill as equal
        values. The result comes back as a value when its repr is a Python literal, else as that
        repr (a string), and at most ``CALL_RESULT_CHARS`` characters of it.

        One-line errors: ``SkillCallError`` when the skill raised (its type and message);
        ``CallRefused`` when it did not run (a gate, a need not approved, no sandbox);
        ``SandboxDidNotStart`` (an ``AgentError``) when the sandbox could not start, tried twice;
        ``AgentError`` for an unknown skill, one whose status is not working or untested, bad
        arguments, a run that timed out or ended without returning, a result too long.
        """
        try:
            validate_skill_name(name)
        except InvalidSkillName as err:
            raise AgentError(str(err).splitlines()[0]) from None
        skill, source = self.memory.get_skill(name), self.library.source(name)
        if skill is None or source is None:
            raise AgentError(f"no saved skill named {name!r} (see :skills)")
        if skill["status"] not in CALLABLE:
            why = ("a skill it imports no longer passes" if skill["status"] == "broken_dependency"
                   else "no version of it passed its tests")
            raise AgentError(f"{name} is {skill['status']} ({why}), so it cannot be called: only working and "
                             f"untested skills can; :test {name} retests it")
        self.check_intact(name, skill)
        for key in kwargs:
            if not key.isidentifier() or keyword.iskeyword(key):
                raise AgentError(f"{key!r} is not a parameter name")
        # checked before any repr: an int past 4,300 digits has none, a list nested 100,001 deep
        # would raise RecursionError
        problem = arguments_problem(args, kwargs)
        if problem is not None:
            raise AgentError(f"cannot call {call_text(name, args, kwargs)}: {problem}")
        shown = call_text(name, args, kwargs)
        packed = repr((tuple(args), dict(kwargs)))
        if len(packed) > CALL_ARGUMENT_CHARS:
            raise AgentError(f"cannot call {shown}: the arguments are {len(packed):,} characters as Python "
                             f"literals (at most {CALL_ARGUMENT_CHARS:,})")
        # The arguments travel as data, read back by literal_eval (which runs no code), so a string
        # argument such as "eval(x)" or "__init__" is not mistaken for code by the gates.
        setup = ("import ast as _ast\n"
                 f"_ARGS, _KWARGS = _ast.literal_eval(bytes.fromhex({packed.encode().hex()!r}).decode())")
        tests = checks.probe_tests(name, [f"{name}(*_ARGS, **_KWARGS)"], limit=CALL_RESULT_CHARS, setup=setup)
        outcome = self.execute(name, source, tests)
        if outcome.run is None:
            denied = tuple(sorted(outcome.verdict.needs - outcome.granted)) if (outcome.reason or "").startswith(
                "not approved") else ()
            raise CallRefused(f"{name} did not run: {outcome.reason or 'blocked by the safety gates'}", denied)
        seen = checks.read_probes(outcome.run.output, [shown])[0]
        if seen.size < 0:
            if outcome.run.timed_out:
                raise AgentError(f"{shown} did not finish: the sandbox stopped it after {self.settings.timeout:g} s "
                                 "(--timeout sets the limit)")
            why = headline(report_from_outcome(outcome)["error"]) or "the run ended without a result"
            raise AgentError(f"{shown} did not return: {why}")
        if seen.raised:
            exception, _, message = seen.result.removeprefix("raised ").partition(": ")
            first = (message.strip().splitlines() or [""])[0]
            raise SkillCallError(shown, exception, first[:200] + ("..." if len(first) > 200 else ""))
        if not seen.whole:
            raise AgentError(f"{shown} returned a value too long to bring back: its repr has {seen.size:,} "
                             f"characters (at most {CALL_RESULT_CHARS:,})")
        try:
            value = read_literal(seen.result)
        except LiteralRefused as err:
            raise AgentError(f"{shown} returned {err}") from None
        return CallResult(value, seen.result, value is not seen.result)

    def _finish(self, final: LoopState, run: _Run) -> DirectiveResult:
        """The directive's result from the loop's final state (the save node recorded a passing skill)."""
        spec, reason = final.get("spec"), final.get("reason") or "no_plan"
        if spec is None:
            return run.end("failed", "no_plan", "no usable plan: no function signature could be had; name one, "
                           "e.g. `is_valid_json(text: str) -> bool`, and give examples")
        name, report = spec["name"], final.get("report")
        if reason == "passed":  # kept, and the user had their say: what fixed its failures is known
            self.memory.record_fixes(run.directive_id, final["code"])
            skill = self.memory.get_skill(name) or {}
            status = skill.get("status", "working")
            evidence = checks.describe_evidence(spec["evidence"])
            message = f"{name} is {status} ({evidence})"
            if status == "untested":
                message += (f"; no expected value has checked what it does. Add one with :examples "
                            f"{name} {name}(...) == <value>")
            return run.end(status, reason, message, name, self.workspace / self.library.module_path(name))
        existing = self.memory.get_skill(name)
        if reason == "incompatible":
            current = (existing or {}).get("version", 1)
            return run.end("failed", reason, f"{name}: kept v{current}; the new version passed its own tests but "
                           f"{final.get('incompatible', 'fails the current version')}. To replace v{current} "
                           "anyway, answer y when asked (REPL) or pass replace=True", name)
        if run.saved or not existing or existing.get("status") not in ("working", "untested", "broken_dependency"):
            self.memory.upsert_skill(name, status="failed", description=spec["description"],
                                     signature=spec["signature"], iterations=final.get("iteration", 0),
                                     sandbox_level=(report or {}).get("level") or None)
        status = "blocked" if reason == "blocked" else "failed"
        why = {"iteration_cap": f"no working version after {final.get('iteration', 0)} iterations",
               "no_progress": "the same failure twice in a row with the same code",
               "blocked": (report or {}).get("error", "blocked by the safety gates")}[reason]
        return run.end(status, reason, f"{name} {status}: {why}", name)

    def _disk_full(self, run: _Run) -> DirectiveResult:
        """The disk filled up mid-directive: what it saved is whole (see ``agent.changes``); it is
        recorded ``interrupted`` to resume, or, when even that cannot be written, left to the next
        start, which finds it cut off."""
        message = str(disk_full(self.workspace, f"directive {run.directive_id} can be resumed with :resume"))
        try:
            return run.end("interrupted", "disk_full", message)
        except Exception as again:  # noqa: BLE001 - the record itself could not be written
            if not no_space(again, self.workspace):
                raise
            return DirectiveResult(run.goal, run.directive_id, run.skill, "interrupted", run.iteration,
                                   run.max_iterations, "disk_full", None, message, run.tokens,
                                   round(time.monotonic() - run.started, 2))

    def _log_crash(self, directive_id: str) -> None:
        with contextlib.suppress(OSError), open(self.workspace / "history" / "crashes.log", "a",
                                                encoding="utf-8") as log:
            log.write(f"--- {now()} directive {directive_id}\n{traceback.format_exc()}\n")

    def _log_call(self, directive_id: str | None, phase: str, request: Request, completion: Completion) -> None:
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

    def retest(self, name: str, *, because_of: str | None = None) -> TestReport:
        """Re-run a saved skill's doctests and tests (with those its version inherited) in the
        sandbox, and record the result: a pass keeps the status its evidence earns (``working`` or
        ``untested``); a failure is ``broken_dependency`` when a skill it imports changed
        (``because_of``) or no longer passes, else ``failed``. A sandbox that could not start
        (``SandboxDidNotStart``, raised) is no run: the status and last test stay as they were."""
        source, tests = self.library.source(name), self.library.tests(name)
        skill = self.memory.get_skill(name)
        if source is None or tests is None or skill is None:
            raise AgentError(f"no saved skill named {name!r} (see :skills)")
        self.check_intact(name, skill)
        extra = versions.inherited_tests(self.library, name, versions.current(skill), skill)
        report = report_from_outcome(self.execute(name, source, tests, extra))
        evidence = skill.get("evidence")
        # a skill from before evidence was recorded keeps its status; a failed one earns no more
        passing = checks.status_of(evidence) if evidence else (
            skill["status"] if skill["status"] in ("working", "untested") else "untested")
        failing = "broken_dependency" if because_of or self._broken_dependencies(skill) else "failed"
        self.memory.upsert_skill(name, status=passing if report["ok"] else failing, last_tested=now(),
                                 sandbox_level=report["level"] or None)
        return report

    def check_intact(self, name: str, skill: dict | None = None) -> None:
        """Raise ``SkillDamaged`` (one line, with the repair) when a skill's files, or those of a
        skill it imports, are not what their records keep: such files are never run."""
        skill = skill or self.memory.get_skill(name)
        problem = changes.damage(self.library, name, skill)
        if problem:
            raise SkillDamaged(f"{name} is damaged: {problem}")
        # what it imports, by its files and by its record (a dependency whose file is gone is not
        # found in the files, and must not be run around either)
        found = [*self.library.closure(self.library.source(name) or "", exclude=name),
                 *((skill or {}).get("dependencies") or [])]
        for dep in dict.fromkeys(d for d in found if d != name):
            problem = changes.damage(self.library, dep, self.memory.get_skill(dep))
            if problem:
                raise SkillDamaged(f"{name} imports {dep}, which is damaged: {problem}")

    def _broken_dependencies(self, skill: dict) -> list[str]:
        """The skills ``skill`` imports that are gone or no longer pass."""
        return [dep for dep in skill.get("dependencies") or []
                if (self.memory.get_skill(dep) or {}).get("status") not in ("working", "untested")
                or self.library.source(dep) is None]

    def retest_dependents(self, name: str) -> list[tuple[str, TestReport]]:
        """``name`` changed: retest every skill that imports it (directly or not), nearest first;
        one that fails now is ``broken_dependency``, one that passes again earns its status back."""
        results = []
        for dependent in self.memory.dependents(name):
            if self.library.source(dependent) is None:
                continue
            report = self.retest(dependent, because_of=name)
            results.append((dependent, report))
            status = (self.memory.get_skill(dependent) or {}).get("status", "?")
            if self.on_event:
                self.on_event(Event("RETEST", f"{dependent} (imports {name}): {status}"
                                    + ("" if report["ok"] else f": {report['error'].splitlines()[0][:120]}"
                                       if report["error"] else "")))
        return results

    def improve(self, name: str, what: str = "", *, rounds: int = 1,
                on_round: Callable[[int, list[str], str], None] | None = None) -> list[improve.Round]:
        """Review → change → test, ``rounds`` times: lint the current code with ruff, ask the model
        for a review, then run the loop from the skill's own spec and tests (plus examples in
        ``what``), showing it the code, the findings and the review. Each round that passes the
        current version's tests, and its own, is kept as the next version; a round that keeps
        nothing stops the rounds, and the old version stays. ``on_round`` sees each round's
        number, lint findings and review before the change."""
        what = " ".join(what.split())
        if not 1 <= rounds <= 20:
            raise AgentError("--rounds is 1 to 20")
        done: list[improve.Round] = []
        for number in range(1, rounds + 1):
            skill, code, tests = self.memory.get_skill(name), self.library.source(name), self.library.tests(name)
            if skill is None or code is None or tests is None or not skill.get("signature"):
                raise AgentError(f"no saved skill named {name!r} to improve (see :skills)")
            goal = f"improve {name}: {what or improve.DEFAULT_GOAL}"
            if len(goal) > MAX_GOAL_CHARS:
                raise AgentError(f"say what to improve in at most {MAX_GOAL_CHARS - 20:,} characters")
            self._check_storage()
            findings = improve.lint(code, f"{name}.py")
            review = self._review(name, code, what, findings)
            if on_round:
                on_round(number, findings, review)
            notes = "\n".join([f"ruff: {f}" for f in findings] + ([] if review == "none" else review.splitlines()))
            directive_id = self.memory.add_directive(goal, self.settings.max_iter, skill=name)
            run = _Run(self, goal, directive_id, name, self.settings.max_iter)
            spec = improve.improvement_spec(skill, tests, what)
            before = skill.get("version")
            result = self._drive(run, improve.start_state(goal, directive_id, self.settings.max_iter, spec, code,
                                                          notes or "none"), None)
            after = (self.memory.get_skill(name) or {}).get("version")
            kept = after if result.ok and after != before else None
            message = (f"kept v{kept} ({result.status})" if kept else
                       f"kept v{before or 1}: {result.message}")
            done.append(improve.Round(number, findings, review, result.status, kept, message))
            if kept is None:
                break
        return done

    def _review(self, name: str, code: str, what: str, findings: list[str]) -> str:
        """The model's review of ``code`` (a few lines; "none" when it sees nothing to change)."""
        model = self.model
        request = improve.review_request(model, name, code, what, findings)
        completion = model.generate(request)
        self._log_call(None, "review", request, completion)
        return improve.clean_review(completion.text, model.chat)

    def versions(self, name: str) -> list[dict]:
        """A skill's kept versions, oldest first (a skill saved before versions is version 1)."""
        skill = versions.ensure_versioned(self.memory, self.library, validate_skill_name(name))
        if skill is None:
            raise AgentError(f"no skill named {name!r} (see :skills)")
        return skill.get("versions") or []

    def rollback(self, name: str, version: int | None = None) -> TestReport:
        """Make an earlier version current again (default: the one before the current), retest it
        and the skills that import it. Its status is earned again by that retest."""
        kept = self.versions(name)
        current = (self.memory.get_skill(name) or {}).get("version")
        if version is None:
            earlier = [v["version"] for v in kept if current is None or v["version"] < current]
            if not earlier:
                raise AgentError(f"{name} has no version before v{current} (see :versions {name})")
            version = earlier[-1]
        if version == current and not changes.damage(self.library, name, self.memory.get_skill(name)):
            raise AgentError(f"v{version} is already {name}'s current version")
        try:  # to the current version: its kept files back in skills/ (a repair)
            versions.restore(self.memory, self.library, name, version)
        except LookupError:
            numbers = ", ".join(f"v{v['version']}" for v in kept)
            raise AgentError(f"{name} has no version {version} (kept: {numbers})") from None
        except ValueError as err:
            raise SkillDamaged(f"cannot roll {name} back to v{version}: {err}; nothing was changed") from None
        report = self.retest(name)
        self.retest_dependents(name)
        return report

    def forget(self, name: str, *, force: bool = False) -> list[str]:
        """Delete a skill: its files, every version, its memory entry and grants. Refused while
        other skills import it, unless ``force`` (they are retested: ``broken_dependency``).
        Returns the dependents that were affected."""
        validate_skill_name(name)
        if self.memory.get_skill(name) is None and self.library.source(name) is None:
            raise AgentError(f"no skill named {name!r} (see :skills)")
        users = self.memory.dependents(name)
        if users and not force:
            raise AgentError(f"{name} is imported by {', '.join(users)}: forget those first, or use "
                             f":forget {name} --force (they become broken_dependency)")
        with changes.change(self.memory, self.library, name, "forget"):  # the record first: the commit
            self.memory.remove_skill(name)
            self.library.remove(name)
        self.retest_dependents(name)
        return users

    def add_examples(self, name: str, text: str) -> TestReport:
        """Add the user's examples (``name(...) == value``, several allowed) to a saved skill's tests
        and retest it: they are evidence, so a pass makes it ``working``; a failure, ``failed``."""
        tests, skill = self.library.tests(name), self.memory.get_skill(name)
        if tests is None or skill is None:
            raise AgentError(f"no saved skill named {name!r} (see :skills)")
        examples = parse_examples(text, name)
        if not examples:
            raise AgentError(f"no example found: write it as {name}(<arguments>) == <expected value>")
        added = tests_from_examples(name, examples, prefix="user_added",
                                    start=tests.count("def test_user_added_") + 1).split("\n", 2)[2]
        evidence = {**new_evidence(), **(skill.get("evidence") or {})}
        evidence["user_examples"] += len(examples)
        try:
            versions.amend(self.memory, self.library, name, tests.rstrip() + "\n\n\n" + added, evidence=evidence)
        except ValueError as err:
            raise SkillDamaged(f"{name} is damaged: {err}; nothing was changed") from None
        report = self.retest(name)
        self.retest_dependents(name)
        return report
