"""The interactive prompt. One ``cmd_*`` method per command; its docstring is its help text.

``Terminal`` is the one terminal boundary: everything the REPL prints or asks goes through it,
so a whole session can be driven by prompt_toolkit's pipe input in tests. It reads lines from a
line source: the prompt at a terminal, or a file or pipe when stdin is not one (scripted runs).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import os
import re
import shlex
import sqlite3
import sys
import tokenize
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import get_app, get_app_session
from prompt_toolkit.completion import Completer, Completion, WordCompleter
from prompt_toolkit.filters import Condition, emacs_insert_mode, vi_insert_mode
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import DummyOutput, Output
from prompt_toolkit.output.plain_text import PlainTextOutput

from agent import changes
from agent.analysis import headline
from agent.checks import AUTOMATIC_MARK, Observed, describe_evidence
from agent.core import AutonomousAgent, DirectiveResult
from agent.errors import AgentError, disk_full, no_space
from agent.library import skill_document
from agent.literals import LiteralRefused, read_word, reads_as_written, short, text_problem
from agent.nodes import Event
from agent.rank import rank
from agent.signals import Terminated
from agent.spec import MAX_LINE_CHARS
from agent.views import skill_view, skills_table, table, two_columns
from safety.approvals import ApprovalRequest, Decision
from safety.paths import InvalidSkillName
from safety.sandbox import Sandbox

PROMPT = "Agent> "
HISTORY_ROWS = 20  # directives :history lists
TOO_LONG = f"skipped a line of more than {MAX_LINE_CHARS:,} characters (the most one line may have)"
NOT_UTF8 = "skipped a line that is not valid UTF-8"
SKIP_CHUNK = 1 << 16  # the rest of an over-long line is read past in pieces of this size
PIPE_COLUMNS = 100  # the width tables and help fit in at a file or pipe without $COLUMNS
insert_mode = emacs_insert_mode | vi_insert_mode


class BadLine(Exception):
    """A line that was read but cannot run (too long, not UTF-8); str(err) is the one-line refusal."""


def refusal(line: str) -> str | None:
    """Why ``line`` cannot run, or None when it can. Undecodable bytes arrive as lone surrogates."""
    if len(line) > MAX_LINE_CHARS:
        return TOO_LONG
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return NOT_UTF8
    return None


class LineSource(Protocol):
    def read(self, message: str, completer: Completer | None) -> str:
        """The next line, without its end; EOFError at the end, BadLine for one that cannot run."""
        ...


class PromptLines:
    """Lines typed (or pasted) at a terminal, or sent through a prompt_toolkit Input, with history.

    prompt_toolkit handles a line one key at a time, copying the whole line on each insert (a piped
    100,000-character line took 32 s and 4.8 GB), so characters read together are inserted at once
    and the line is bounded: a paste that would pass ``MAX_LINE_CHARS`` ends the prompt at once,
    characters past it are dropped and Enter refuses the line. A refused line is not kept in history.
    """

    def __init__(self, history: Path | None, input: Input | None, output: Output | None) -> None:
        self.overflowed = False
        self.session: PromptSession = PromptSession(
            history=FileHistory(str(history)) if history else None, input=input, output=output,
            key_bindings=self._bounds())

    def read(self, message: str, completer: Completer | None) -> str:
        self.overflowed = False
        return self.session.prompt(message, completer=completer)

    def _bounds(self) -> KeyBindings:
        bindings = KeyBindings()
        refused = Condition(lambda: self.overflowed or refusal(get_app().current_buffer.text) is not None)

        @bindings.add(Keys.BracketedPaste)
        def _paste(event: KeyPressEvent) -> None:
            if len(event.current_buffer.text) + len(event.data) > MAX_LINE_CHARS:
                event.app.exit(exception=BadLine(TOO_LONG))
                return
            event.current_buffer.insert_text(event.data.replace("\r\n", "\n").replace("\r", "\n"))

        @bindings.add(Keys.Any, filter=insert_mode)
        def _insert(event: KeyPressEvent) -> None:
            """A character, with the characters already read after it, in one insert."""
            queue = event.app.key_processor.input_queue
            pieces = [event.data * event.arg]
            while queue and len(queue[0].key) == 1:  # a character; Enter and the like are Keys names
                pieces.append(queue.popleft().data)
            text = "".join(pieces)
            if self.overflowed or len(event.current_buffer.text) + len(text) > MAX_LINE_CHARS:
                self.overflowed = True
                return
            event.current_buffer.insert_text(text)

        @bindings.add("enter", filter=refused)
        def _refuse(event: KeyPressEvent) -> None:
            event.app.exit(exception=BadLine(TOO_LONG if self.overflowed else
                                             refusal(event.current_buffer.text) or TOO_LONG))

        return bindings


class StreamLines:
    """Lines from a file or pipe (stdin that is not a terminal), read as bytes: a line is read up to
    a bound (the rest is skipped in pieces, so a huge line costs no memory) and decoded strictly."""

    MAX_BYTES = 4 * MAX_LINE_CHARS  # UTF-8 takes at most 4 bytes a character

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def read(self, message: str, completer: Completer | None) -> str:
        raw = self.stream.readline(self.MAX_BYTES + 1)
        if not raw:
            raise EOFError
        if len(raw) > self.MAX_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = self.stream.readline(SKIP_CHUNK)
            raise BadLine(TOO_LONG)
        try:
            line = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            raise BadLine(NOT_UTF8) from None
        if len(line) > MAX_LINE_CHARS:
            raise BadLine(TOO_LONG)
        return line


class PlainLines(PlainTextOutput):
    """Plain text for a file or pipe, with LF line ends: prompt_toolkit's printing writes "\r\n"
    for each "\n", which only a terminal wants."""

    def write(self, data: str) -> None:
        super().write(data.replace("\r\n", "\n"))


def plain_lines(output: Output | None) -> Output | None:
    """The output to print on: ``output`` (None: the terminal's), LF-ended where it is a file or pipe."""
    if output is None and sys.stdout is not None and not sys.stdout.isatty():
        return PlainLines(sys.stdout)
    if isinstance(output, PlainTextOutput) and not isinstance(output, PlainLines):
        return PlainLines(output.stdout)
    return output


class Terminal:
    """Printing and asking, on a prompt_toolkit input/output pair (real terminal by default), or
    with lines from ``stream`` (bytes) when stdin is a file or pipe. A file or pipe gets plain
    text with LF line ends."""

    def __init__(self, history: Path | None = None, *, input: Input | None = None,
                 output: Output | None = None, stream: BinaryIO | None = None) -> None:
        self.output = output = plain_lines(output)
        self.lines: LineSource = StreamLines(stream) if stream is not None else PromptLines(history, input, output)
        self.streaming = False

    @property
    def width(self) -> int:
        """Columns to fit text in: the terminal's; for a file or pipe, $COLUMNS, else 100."""
        output = self.output or get_app_session().output
        if not isinstance(output, PlainTextOutput | DummyOutput):
            with contextlib.suppress(OSError):
                return max(output.get_size().columns, 20)
        columns = os.environ.get("COLUMNS", "")
        return int(columns) if columns.isdigit() and 20 <= int(columns) <= 1000 else PIPE_COLUMNS

    @property
    def interactive(self) -> bool:
        """Whether lines come from the prompt (a person), rather than from a file or pipe."""
        return isinstance(self.lines, PromptLines)

    def say(self, text: str = "", style: str = "") -> None:
        self.end_stream()
        print_formatted_text(FormattedText([(style, text)]), output=self.output)

    def write(self, fragments: StyleAndTextTuples) -> None:
        """Styled text in one write; the fragments carry their own line ends. Colours show at a
        terminal (none with NO_COLOR); a file or pipe gets the same text without styles."""
        self.end_stream()
        output = self.output or get_app_session().output
        if isinstance(output, PlainTextOutput | DummyOutput):  # styles would be dropped: skip them at once
            fragments = [("", "".join([fragment[1] for fragment in fragments]))]
        print_formatted_text(FormattedText(fragments), end="", output=output)

    def warn(self, text: str) -> None:
        self.say(text, "ansiyellow")

    def error(self, text: str) -> None:
        self.say(f"error: {text}", "ansired")

    def stream(self, piece: str) -> None:
        """Show model tokens as they arrive (dimmed); ``end_stream`` closes the line."""
        self.streaming = True
        print_formatted_text(FormattedText([("ansibrightblack", piece)]), end="", output=self.output)

    def end_stream(self, *_: object) -> None:
        if self.streaming:
            self.streaming = False
            print_formatted_text("", output=self.output)

    def prompt(self, message: str = PROMPT, completer: Completer | None = None) -> str:
        """The next line; EOFError at the end, BadLine for a line that cannot run. A line read
        from a file or pipe is echoed after the prompt, so the output reads as a transcript."""
        self.end_stream()
        try:
            line = self.lines.read(message, completer)
        except Terminated:
            if self.interactive:  # the signal came at the prompt: what follows starts a line of its own
                with contextlib.suppress(OSError):
                    print_formatted_text("", output=self.output)
            raise
        if not self.interactive:
            self.say(message + line)
        return line

    def ask_approval(self, request: ApprovalRequest) -> Decision:
        """Ask about one tier-2 need. Anything but o/a (or Ctrl+C / Ctrl+D) denies."""
        self.warn(f"The skill asks for {request.need}: {request}. Allowing grants {request.grants}.")
        try:
            answer = self.prompt("Allow? [o]nce / [a]lways for this skill / [d]eny: ").strip().lower()
        except BadLine as err:
            self.error(str(err))
            answer = "d"
        except Terminated:
            raise
        except (EOFError, KeyboardInterrupt):
            answer = "d"
        return {"o": Decision.ONCE, "once": Decision.ONCE, "a": Decision.ALWAYS,
                "always": Decision.ALWAYS}.get(answer, Decision.DENY)

    def yes_no(self, question: str) -> bool:
        """A yes/no question; only y or yes is yes (Enter, Ctrl+C, Ctrl+D and anything else: no)."""
        try:
            return self.prompt(f"{question} [y/N]: ").strip().lower() in ("y", "yes")
        except BadLine as err:
            self.error(str(err))
        except Terminated:
            raise
        except (EOFError, KeyboardInterrupt):
            pass
        return False

    def ask_replace(self, skill: str, why: str) -> bool:
        """A new version passed its own tests but not the current version's: replace it anyway?"""
        self.warn(f"The new {skill} passed its own tests, but {why}")
        return self.yes_no(f"Replace the current {skill} with it (its tests are no longer required)?")

    def confirm_examples(self, skill: str, observed: list[Observed]) -> list[bool | str | None]:
        """The user as the oracle: for each call, is the result right? y / n / the correct value."""
        self.warn(f"{skill} passed its automatic checks, but nothing says what it should return. "
                  "Are these right?")
        answers: list[bool | str | None] = []
        for seen in observed:
            self.say(f"  {seen.call}  →  {seen.result}")
            try:
                answer = self.value_answer()
            except Terminated:
                raise
            except (EOFError, KeyboardInterrupt):
                answers.append(None)
                break
            answers.append({"y": True, "yes": True, "n": False, "no": False, "": None}.get(answer.lower(), answer))
        return answers

    def value_answer(self) -> str:
        """One answer to "is this right?": asked again while it is a value past a limit or an
        expression (``10**400``), which would otherwise be read as something else."""
        while True:
            try:
                answer = self.prompt("  [y]es / [n]o / type the correct value / Enter to skip: ").strip()
            except BadLine as err:
                self.error(str(err))
                return ""
            if answer.lower() in ("y", "yes", "n", "no", ""):
                return answer
            try:
                read_word(answer)
            except LiteralRefused as err:
                self.error(f"{err}; type it again")
                continue
            return answer


class CommandCompleter(Completer):
    """Completes command names, then skill names where a command takes one."""

    def __init__(self, repl: Repl) -> None:
        self.repl = repl

    def get_completions(self, document, complete_event) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        if " " not in text:
            yield from WordCompleter([f":{c}" for c in self.repl.commands()], sentence=True) \
                .get_completions(document, complete_event)
            return
        command = words[0].lstrip(":")
        wanted = {"show": 1, "test": 1, "memory": 1, "approvals": 1, "examples": 1, "versions": 1, "improve": 1,
                  "rollback": 1, "forget": 1, "run": 1}.get(command)
        if wanted is None or len(words) - (0 if text.endswith(" ") else 1) != wanted:
            return
        prefix = "" if text.endswith(" ") else words[-1]
        options = (["raw"] if command == "memory" else ["revoke"] if command == "approvals"
                   else self.repl.skill_names())
        for option in options:
            if option.startswith(prefix):
                yield Completion(option, start_position=-len(prefix))


class Repl:
    """The commands. ``handle`` runs one line; ``loop`` reads lines until :quit or EOF.

    A ``cmd_*`` method returns False when the command failed (None is success): that is what the
    exit status of ``-c`` and scripted runs is made of.
    """

    def __init__(self, agent: AutonomousAgent, terminal: Terminal) -> None:
        self.agent, self.term = agent, terminal
        self.completer = CommandCompleter(self)
        self.running = True

    def commands(self) -> list[str]:
        return sorted(name[4:] for name in dir(self) if name.startswith("cmd_"))

    def skill_names(self) -> list[str]:
        return sorted(s["name"] for s in self.agent.memory.read()["skills"])

    def loop(self) -> bool:
        """Run lines until :quit or EOF; False if any failed or was refused."""
        ok = True
        while self.running:
            try:
                line = self.term.prompt(completer=self.completer)
            except Terminated:
                raise
            except KeyboardInterrupt:
                continue  # Ctrl+C at the prompt clears the line, like Python's REPL
            except EOFError:
                break
            except BadLine as err:
                self.term.error(str(err))
                ok = False
                continue
            ok = self.handle(line) and ok
        return ok

    def handle(self, line: str) -> bool:
        """Run one input line; False when it failed. User errors print one line, never a traceback."""
        refused = refusal(line)
        if refused is not None:
            self.term.error(refused)
            return False
        line = line.strip()
        if not line:
            return True
        if not line.startswith(":"):
            self.term.error(f"unknown input {line[:40]!r}: commands start with ':' (try :help)")
            return False
        command, _, argument = line[1:].partition(" ")
        method = getattr(self, f"cmd_{command.lower()}", None)
        if method is None:
            self.term.error(f"unknown command :{command[:40]} (try :help)")
            return False
        try:
            return method(argument.strip()) is not False
        except KeyboardInterrupt as err:  # Ctrl+C during :test, :history <n>, ...: back to the prompt
            self.interrupted(err)
        except AgentError as err:
            self.term.error(str(err))
        except InvalidSkillName as err:
            self.term.error(str(err).splitlines()[0] if str(err) else "invalid skill name")
        except (OSError, sqlite3.Error) as err:  # a full disk, a file we may not write: one line, REPL alive
            self.term.error(str(disk_full(self.agent.workspace)) if no_space(err, self.agent.workspace) else
                            f"{getattr(err, 'strerror', None) or err}"
                            + (f": {err.filename}" if getattr(err, "filename", None) else ""))
        return False

    def interrupted(self, err: KeyboardInterrupt, detail: str = "") -> None:
        """Ctrl+C cancelled a command: say so (``detail``: what became of its work), back to the
        prompt. A signal that ends the run (``Terminated``) goes on ending it, with ``detail``."""
        if isinstance(err, Terminated):
            err.detail = err.detail or detail  # the innermost command knows best
            raise err
        self.term.warn(f"Interrupted: {detail}" if detail else "Interrupted.")

    # -- commands ------------------------------------------------------------------------------

    def cmd_directive(self, goal: str) -> bool:
        """:directive <goal>  plan, write and test a new skill, e.g. :directive Create a JSON validator skill"""
        if not goal:
            self.term.error("a directive needs a goal, e.g. :directive Create a JSON validator skill")
            return False
        try:
            result = self.agent.run(goal, confirm=self.term.confirm_examples, replace=self.term.ask_replace)
        except KeyboardInterrupt as err:
            self.interrupted(err, "the directive is recorded as interrupted; :resume continues it.")
            return False
        self.show_result(result)
        # Only a working skill succeeds. An untested one fails too: nothing checked what it returns,
        # so a script must not build on it (the issue asks for non-zero unless the directive ends working).
        return result.status == "working"

    def cmd_resume(self, argument: str) -> bool:
        """:resume [id|all]  continue the latest pending, interrupted or cut-off directive (or one, or all)"""
        waiting = self.agent.resumable()
        if not waiting:
            self.term.say("  Nothing to resume: no directive is pending, interrupted or cut off.")
            return True
        chosen: list[str | None] = [d["id"] for d in waiting] if argument == "all" else [argument or None]
        ok = True
        for directive_id in chosen:
            try:
                result = self.agent.resume(directive_id, confirm=self.term.confirm_examples,
                                           replace=self.term.ask_replace)
            except KeyboardInterrupt as err:
                self.interrupted(err, "the directive is recorded as interrupted; :resume continues it.")
                return False
            except AgentError as err:  # e.g. another agent took it meanwhile: go on with the rest
                self.term.error(str(err))
                ok = False
                continue
            self.show_result(result)
            ok = ok and result.status == "working"
        return ok

    def cmd_history(self, argument: str) -> bool:
        """:history [n|id]  recent directives (outcome, iterations, seconds, tokens), or replay one"""
        runs = self.agent.memory.history.recent_runs(HISTORY_ROWS)
        if not argument:
            if not runs:
                self.term.say("  No directives yet.")
                return True
            rows = [("#", "started", "outcome", "iter", "seconds", "tokens", "goal")] + [
                (str(n), run["started"][:19].replace("T", " "), run["outcome"] or "running",
                 str(run["iterations"]), f"{run['seconds']:.1f}", str(run["tokens"]), run["goal"][:60])
                for n, run in enumerate(runs, start=1)]
            self.table(rows)
            self.term.say("  :history <#> replays one.")
            return True
        number = int(argument) if argument.isascii() and argument.isdigit() and len(argument) < 6 else 0
        run = runs[number - 1] if 0 < number <= len(runs) else self.agent.memory.history.find_run(argument)
        if run is None:
            self.term.error(f"no directive {argument!r} in the history (:history lists them)")
            return False
        for line, style in replay(run, self.agent.memory.history.events(run["directive_id"])):
            self.term.say(line, style)
        return True

    def table(self, rows: list[tuple[str, ...]]) -> None:
        """Rows as aligned columns, the first in bold, printed in one write (fast for 10,000 rows)."""
        header, *body = rows
        self.term.write(table([list(column) for column in zip(*body, strict=True)] or [[] for _ in header],
                              header=header))

    def show_result(self, result: DirectiveResult) -> None:
        took = f"({result.iterations}/{result.max_iterations} iterations, {result.seconds:.1f} s)"
        if result.status == "working":
            self.term.say(f"  ✅ {result.message} {took}", "ansigreen")
        elif result.status == "untested":
            self.term.say(f"  ⚠ {result.message} {took}", "ansiyellow")
        elif result.status == "pending":
            self.term.error(result.message)
            self.term.warn("The directive stays pending: :resume continues it once the model is back.")
        else:
            self.term.say(f"  ❌ {result.message} ({result.reason})", "ansired")

    def cmd_skills(self, query: str) -> None:
        """:skills [query]  the skills as a table; with a query, the ones that match it, best match first"""
        skills = self.agent.memory.read()["skills"]
        if not skills:
            self.term.say("No skills yet. Try :directive Create a skill `add(a: int, b: int) -> int`")
            return
        if not query:
            self.show_skills(sorted(skills, key=lambda s: s["name"]))
            return
        found = rank(query, [skill_document(s) for s in skills])  # the ranker retrieval uses, every status
        if not found:
            self.term.say(f"  No skill matches {query[:60]!r} (by name, signature or description).")
            return
        self.show_skills([skills[i] for i in found])

    def show_skills(self, skills: list[dict]) -> None:
        """The table, a damaged skill's status shown as ``damaged``, and one line on each of those."""
        damaged = {s["name"]: why for s in skills if (why := changes.damage(self.agent.library, s["name"], s))}
        self.term.write(skills_table([dict(s, status="damaged") if s["name"] in damaged else s for s in skills],
                                     self.term.width))
        for name, why in damaged.items():
            self.term.error(f"{name} is damaged: {why}")

    def cmd_show(self, name: str) -> bool | None:
        """:show <skill>  a skill's record (status, evidence, imports, users, versions), its code and tests"""
        source = self.agent.library.source(name) if name else None
        if source is None:
            damaged = changes.damage(self.agent.library, name, self.agent.memory.get_skill(name)) if name else None
            self.term.error(f"{name} is damaged: {damaged}" if damaged else
                            f"no saved skill named {name!r} (see :skills)")
            return False
        skills = self.agent.memory.read()["skills"]
        skill = next((s for s in skills if s["name"] == name), None) or {"name": name}
        dependents = sorted(s["name"] for s in skills if name in (s.get("dependencies") or ()))
        damaged = changes.damage(self.agent.library, name, skill if "status" in skill else None)
        if damaged:
            self.term.error(f"{name} is damaged: {damaged}")
        self.term.write(skill_view(skill, module_path=self.agent.library.module_path(name), source=source,
                                   test_path=self.agent.library.test_path(name), tests=self.agent.library.tests(name),
                                   automatic_mark=AUTOMATIC_MARK, dependents=dependents))

    def cmd_test(self, name: str) -> bool:
        """:test <skill>  re-run a saved skill's doctests and tests in the sandbox"""
        if not name:
            self.term.error("usage: :test <skill>")
            return False
        report = self.agent.retest(name)
        status = (self.agent.memory.get_skill(name) or {}).get("status", "?")
        verdict = status if report["ok"] else f"failed ({report['category']})"
        self.term.say(f"  {name}: {verdict} · sandbox: {report['level'] or '-'} · {report['passed']} passed, "
                      f"{report['failed']} failed, {report['errors']} errors")
        return bool(report["ok"])

    def cmd_run(self, argument: str) -> bool:
        """:run <skill> <args>  call a skill in the sandbox and print its result, e.g. :run add 2 3"""
        if not argument.strip():
            self.term.error(RUN_USAGE)
            return False
        name, args, kwargs = parse_run(argument)
        usage = run_usage(self.agent.memory.get_skill(name), args, kwargs)
        if usage is not None:
            self.term.error(usage)
            return False
        self.term.say(self.agent.call_result(name, *args, **kwargs).text)  # the result's repr
        return True

    def cmd_examples(self, argument: str) -> bool:
        """:examples <skill> <call> == <value>  add examples to a skill (they become tests) and retest it"""
        name, _, text = argument.partition(" ")
        if not name or not text.strip():
            self.term.error("usage: :examples <skill> <call> == <value>, e.g. :examples slugify "
                            "slugify('A b') == 'a-b'")
            return False
        report = self.agent.add_examples(name, text)
        skill = self.agent.memory.get_skill(name) or {}
        evidence = describe_evidence(skill["evidence"]) if skill.get("evidence") else ""
        if report["ok"]:
            self.term.say(f"  {name}: {skill.get('status')} · {evidence}", "ansigreen")
        else:
            self.term.say(f"  {name}: failed · {headline(report['error'])}", "ansired")
        return bool(report["ok"])

    def cmd_improve(self, argument: str) -> bool:
        """:improve <skill> [what] [--rounds N]  lint, review, change, test: a round is kept if old+new tests pass"""
        words = argument.split()
        rounds = 1
        if "--rounds" in words:
            at = words.index("--rounds")
            value = words[at + 1] if at + 1 < len(words) else ""
            if not value.isdigit():
                self.term.error("usage: :improve <skill> [what] [--rounds N]")
                return False
            rounds = int(value)
            del words[at:at + 2]
        if not words:
            self.term.error("usage: :improve <skill> [what] [--rounds N], e.g. :improve slugify handle accents")
            return False
        name, what = words[0], " ".join(words[1:])

        def show(number: int, findings: list[str], review: str) -> None:
            self.term.say(f"  ROUND   {number}/{rounds} · ruff: " + (f"{len(findings)} finding"
                          f"{'s' if len(findings) != 1 else ''}" if findings else "clean"), "bold")
            for finding in findings[:5]:
                self.term.say(f"    {finding}")
            for line in review.splitlines():
                self.term.say(f"  REVIEW  {line}")
        try:
            done = self.agent.improve(name, what, rounds=rounds, on_round=show)
        except KeyboardInterrupt as err:
            self.interrupted(err, "the round is recorded as interrupted; the current version stays.")
            return False
        for result in done:
            self.term.say(f"  round {result.number}: {result.message}",
                          "ansigreen" if result.version else "ansired")
        return all(result.version for result in done) and len(done) == rounds

    def cmd_versions(self, name: str) -> bool | None:
        """:versions <skill>  a skill's kept versions: when, what made it, model, status (* = current)"""
        if not name:
            self.term.error("usage: :versions <skill>")
            return False
        kept = self.agent.versions(name)
        if not kept:
            self.term.say(f"  {name} has no saved version yet (no directive for it passed).")
            return None
        current = (self.agent.memory.get_skill(name) or {}).get("version")
        self.table([("", "version", "made", "by", "model", "status", "note")] + [
            ("*" if v["version"] == current else "", f"v{v['version']}", v["created_at"][:16].replace("T", " "),
             v["origin"], v.get("model") or "-", v["status"], " ".join((v.get("note") or "").split())[:60])
            for v in kept])
        return None

    def cmd_rollback(self, argument: str) -> bool:
        """:rollback <skill> [version]  make an earlier version current again (default: the previous one)"""
        name, _, number = argument.partition(" ")
        number = number.strip().lower().removeprefix("v")
        if not name or (number and not number.isdigit()):
            self.term.error("usage: :rollback <skill> [version], e.g. :rollback slugify 1")
            return False
        report = self.agent.rollback(name, int(number) if number else None)
        skill = self.agent.memory.get_skill(name) or {}
        self.term.say(f"  {name} is v{skill.get('version')} again: {skill.get('status')} · sandbox: "
                      f"{report['level'] or '-'} · {report['passed']} passed, {report['failed']} failed",
                      "ansigreen" if report["ok"] else "ansired")
        return bool(report["ok"])

    def cmd_forget(self, argument: str) -> bool | None:
        """:forget <skill> [--force]  delete a skill, its versions and grants (asks; --force: though others use it)"""
        words = argument.split()
        force = "--force" in words
        names = [w for w in words if w != "--force"]
        if len(names) != 1:
            self.term.error("usage: :forget <skill> [--force]")
            return False
        name = names[0]
        skill = self.agent.memory.get_skill(name)
        users = self.agent.memory.dependents(name)
        if skill is None and self.agent.library.source(name) is None:
            self.term.error(f"no skill named {name!r} (see :skills)")
            return False
        if users and not force:
            self.term.error(f"{name} is imported by {', '.join(users)}: forget those first, or "
                            f":forget {name} --force (they become broken_dependency)")
            return False
        count = len((skill or {}).get("versions") or []) or 1
        what = f"{name} ({count} version{'s' if count > 1 else ''}, its tests and grants)"
        if users:
            what += f"; {', '.join(users)} will break"
        if not self.term.yes_no(f"Forget {what}?"):
            self.term.say("  Kept.")
            return None
        self.agent.forget(name, force=force)
        self.term.say(f"  Forgot {name}.")
        return None

    def cmd_memory(self, argument: str) -> bool | None:
        """:memory [raw]  summary of memory (skills by status, recent failures, directives to resume)"""
        if argument == "raw":
            self.term.say(json.dumps(self.agent.memory.read(), indent=2))
            return None
        if argument:
            self.term.error("usage: :memory or :memory raw")
            return False
        summary = self.agent.memory.summary()
        counts = ", ".join(f"{n} {status}" for status, n in summary["skills"].items())
        self.term.say(f"Memory: {self.agent.memory.path}")
        self.term.say(f"  skills: {counts}")
        self.term.say(f"  failures logged: {summary['failures']}")
        for failure in summary["recent_failures"]:
            error = headline(failure["error"])[:80]  # failures kept before it was one line, too
            self.term.say(f"    {failure['timestamp'][:19]}  {failure['skill']}  {failure['category']}: {error}")
        waiting = self.agent.resumable()
        self.term.say(f"  directives to resume: {len(waiting)}" + (" (:resume)" if waiting else ""))
        for line in describe_resumable(waiting):
            self.term.say(f"  {line}")

    def cmd_status(self, _: str) -> None:
        """:status  model, sandbox level, workspace and limits"""
        settings, sandbox = self.agent.settings, self.agent.sandbox
        self.term.say(f"  model:     {self.model_label()}")
        self.term.say(f"  sandbox:   {sandbox.describe().removeprefix('sandbox: ')}"
                      + (f"  ⚠ {sandbox.warning}" if sandbox.warning else ""))
        note = unsandboxed_note(sandbox)
        if note:
            self.term.warn(f"             ⚠ {note}")
        self.term.say(f"  workspace: {self.agent.workspace}")
        self.term.say(f"  limits:    {settings.max_iter} iterations, {settings.timeout:g} s per test run, "
                      f"{settings.model_timeout:g} s per model call")
        self.term.say(f"  custom gate rules: {', '.join(settings.block) if settings.block else 'none'}"
                      + (" ([safety] block, tier 3)" if settings.block else ""))

    def model_label(self) -> str:
        try:
            model = self.agent.model
        except AgentError as err:
            return f"unavailable ({err})"
        return f"{model.name} ({'chat' if model.chat else 'completion'} prompts)"

    def cmd_approvals(self, argument: str) -> bool | None:
        """:approvals [revoke <skill> <need>]  list remembered grants, or revoke one"""
        try:
            words = shlex.split(argument)
        except ValueError as err:  # an unclosed quote
            self.term.error(f"{str(err).lower()}: usage: :approvals or :approvals revoke <skill> <need>")
            return False
        if words[:1] == ["revoke"]:
            if len(words) != 3:
                self.term.error("usage: :approvals revoke <skill> <need>")
                return False
            done = self.agent.approvals.revoke(words[1], words[2])
            self.term.say(f"  revoked {words[2]} for {words[1]}" if done else
                          f"  no grant of {words[2]} for {words[1]}")
            return bool(done)
        if words:
            self.term.error("usage: :approvals or :approvals revoke <skill> <need>")
            return False
        grants = self.agent.memory.all_grants()
        if not grants:
            self.term.say("  No grants remembered.")
        for skill, needs in sorted(grants.items()):
            for need, decision in sorted(needs.items()):
                self.term.say(f"  {skill}: {need} = {decision}")

    def cmd_help(self, _: str) -> None:
        """:help  this list"""
        rows = []
        for name in self.commands():
            usage, _, text = (getattr(self, f"cmd_{name}").__doc__ or "").strip().partition("  ")
            rows.append((usage, text.strip()))
        self.term.write([("", two_columns(rows, self.term.width))])
        self.term.say("  Ctrl+C cancels a running directive; Ctrl+D or :quit leaves.")

    def cmd_quit(self, _: str) -> None:
        """:quit  leave (Ctrl+D too)"""
        self.running = False



RUN_USAGE = ("usage: :run <skill> <arguments>, e.g. :run slugify \"Hello World\", :run add 2 3, "
             ":run add(2, 3), :run f [1, 2] key='x'")
SKILL_CALL = re.compile(r"([A-Za-z_]\w*)(.*)", re.S)
KEYWORD_TOKEN = re.compile(r"([A-Za-z_]\w*)=(.*)", re.S)


def _call_arguments(text: str) -> tuple[tuple, dict] | None:
    """The arguments of ``f(<text>)`` when it parses as a call whose arguments are all literals;
    None when it does not parse, or names something (``hello-world``, ``eval(1)``: words, then).
    Raises ``LiteralRefused`` for Python that is neither: an expression of literals alone
    (``1 if 1 else 2``, ``f"x"``, ``10**400``) or unpacking (``**{"a": 1}``), which would
    otherwise be split into words and passed on as something else."""
    if not reads_as_written(text):  # a comment or a backslash Python would drop: words, as written
        return None
    source = f"f({text}\n)"
    try:
        node = ast.parse(source, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    values = [*node.args, *(k.value for k in node.keywords)]
    if any(isinstance(part, ast.Name | ast.Attribute) for value in values for part in ast.walk(value)):
        return None
    for value in values:
        unpacked = isinstance(value, ast.Starred) or any(k.value is value and k.arg is None for k in node.keywords)
        written = short(ast.get_source_segment(source, value) or text)
        if unpacked:  # a Starred's text holds its *, a keyword's value not its **
            raise LiteralRefused(f"{'' if isinstance(value, ast.Starred) else '**'}{written}: "
                                 "unpacking is not taken: write the arguments themselves")
        try:
            ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise LiteralRefused(f"{written} is an expression, not a literal: write its value "
                                 "(or quote it to pass a string)") from None
    return (tuple(ast.literal_eval(a) for a in node.args),
            {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None})


def _with_commas(text: str) -> str | None:
    """``text`` with a comma between items that only whitespace separates outside brackets
    (``[1, 2] key='x'`` -> ``[1, 2], key='x'``); None when it does not tokenize."""
    pieces: list[str] = []
    depth, previous = 0, None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT):
                continue
            if (previous is not None and depth == 0 and tok.start > previous.end
                    and previous.string not in (",", "=") and tok.string not in (",", "=")):
                pieces.append(",")
            pieces.append(" " + tok.string if previous is not None and tok.start > previous.end else tok.string)
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            previous = tok
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    return "".join(pieces)


_QUOTES = "'\""
_PAIRS = {"(": ")", "[": "]", "{": "}"}


def _words(text: str, brackets: bool = True) -> list[str]:
    """``text`` split at whitespace outside quotes and brackets, each word as written: a quote
    runs to the same quote not escaped by a backslash (as in Python); outside quotes a backslash
    is a character like any other, and so is a closing bracket nothing opened. A bracket that
    never closes is a character too: the rest is split at whitespace alone. Raises AgentError
    for an unclosed quote."""
    words: list[str] = []
    word: list[str] = []
    closing: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in _QUOTES:
            end = index + 1
            while end < len(text) and text[end] != char:
                end += 2 if text[end] == "\\" else 1
            if end >= len(text):
                raise AgentError(f"no closing quotation: {RUN_USAGE}")
            word.append(text[index:end + 1])
            index = end + 1
            continue
        if brackets and char in _PAIRS:
            closing.append(_PAIRS[char])
        elif closing and char == closing[-1]:
            closing.pop()
        elif char.isspace() and not closing:
            if word:
                words.append("".join(word))
                word = []
            index += 1
            continue
        word.append(char)
        index += 1
    if closing:  # a bracket never closed: in the word it opened, brackets are no brackets
        return [*words, *_words("".join(word), brackets=False)]
    if word:
        words.append("".join(word))
    return words


def _word_value(word: str) -> object:
    """A word as a literal when it is one (``3``, ``[1, 2]``, ``'a b'``, ``None``), else, when it
    holds no quote, as the string it is (``Hello``, ``C:\\Users``, ``\\d+``). Raises
    ``LiteralRefused`` for a word past a limit, an expression of literals (``10**400``), and a word
    with quotes that is no literal (``a"b"c``, ``"C:\\Users"``), which no reading keeps as written."""
    literal, value = read_word(word)
    if literal:
        return value
    if any(quote in word for quote in _QUOTES):
        raise LiteralRefused(f"{short(word)} has quotes but is not a Python literal: quote the whole value "
                             "as a Python string, or write it without quotes")
    return word


def parse_run(argument: str) -> tuple[str, tuple, dict]:
    """``:run``'s argument as (skill, args, kwargs). The arguments are read as Python call
    arguments (``add(2, 3)``, ``add 2, 3``, ``f [1, 2] key='x'``, ``add 2 3``), else split
    into words (see ``_words``), each a literal if it is one, else, when it holds no quote, the
    string it is (``slugify Hello``, ``f C:\\Users``). A value is kept as written or refused:
    raises AgentError (the usage line) for a line that is none of these, and ``LiteralRefused``
    (one line) for an argument past one of ``agent.literals``' limits, an unquoted expression of
    literals (``10**400``, ``1 if 1 else 2``), unpacking (``**{"a": 1}``), or a word with quotes
    that is no literal (``a"b"c``): none is ever passed on as something else."""
    match = SKILL_CALL.fullmatch(argument.strip())
    if not match:
        raise AgentError(RUN_USAGE)
    name, rest = match.group(1), match.group(2)
    if rest.startswith("(") and rest.rstrip().endswith(")"):  # add(2, 3): the call itself
        problem = text_problem(rest.strip()[1:-1])
        if problem is not None:
            raise LiteralRefused(f"an argument {problem}")
        found = _call_arguments(rest.strip()[1:-1])
        if found is None:
            raise AgentError(f"{name}{rest.strip()[:60]} is not a call with Python literal arguments: {RUN_USAGE}")
        return name, *found
    if rest and not rest[0].isspace():
        raise AgentError(RUN_USAGE)
    rest = rest.strip()
    if not rest:
        return name, (), {}
    problem = text_problem(rest)  # before any parse: Python's own stops at 200 brackets
    if problem is not None:
        raise LiteralRefused(f"an argument {problem}")
    # items only whitespace separates are separate arguments ('a' 'b' is two, not 'ab')
    commas = _with_commas(rest)
    found = _call_arguments(commas) if commas is not None else None
    if found is None:
        found = _call_arguments(rest)
    if found is not None:
        return name, *found
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for word in _words(rest):
        keyword_word = KEYWORD_TOKEN.fullmatch(word)
        if keyword_word:
            kwargs[keyword_word.group(1)] = _word_value(keyword_word.group(2))
        elif kwargs:
            raise AgentError(f"positional argument {word[:40]!r} after a keyword argument: {RUN_USAGE}")
        else:
            args.append(_word_value(word))
    return name, tuple(args), kwargs


def skill_signature(signature: str, name: str) -> inspect.Signature | None:
    """The parameters of a recorded signature (``add(a: int, b: int = 0) -> int``), read with
    ``ast`` (nothing in it runs); None when it does not parse as ``name``'s."""
    try:
        node = ast.parse(f"def {signature}: pass").body[0]
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(node, ast.FunctionDef) or node.name != name:
        return None
    a, P = node.args, inspect.Parameter
    positional = [*a.posonlyargs, *a.args]
    required = len(positional) - len(a.defaults)
    parameters = [P(arg.arg, P.POSITIONAL_ONLY if i < len(a.posonlyargs) else P.POSITIONAL_OR_KEYWORD,
                    default=P.empty if i < required else None) for i, arg in enumerate(positional)]
    if a.vararg:
        parameters.append(P(a.vararg.arg, P.VAR_POSITIONAL))
    parameters += [P(arg.arg, P.KEYWORD_ONLY, default=P.empty if default is None else None)
                   for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg:
        parameters.append(P(a.kwarg.arg, P.VAR_KEYWORD))
    try:
        return inspect.Signature(parameters)
    except ValueError:
        return None


def run_usage(skill: dict | None, args: tuple, kwargs: dict) -> str | None:
    """The usage line when ``args`` and ``kwargs`` do not fit the skill's recorded signature
    (missing or too many arguments), else None (also when the signature cannot be read)."""
    if skill is None or not skill.get("signature"):
        return None
    signature = skill_signature(skill["signature"], skill["name"])
    if signature is None:
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        return f"{skill['name']}: {err}; usage: :run {skill['signature']}"
    return None


def unsandboxed_note(sandbox: Sandbox) -> str | None:
    """At the rlimits level (no sandbox works): whether generated code is refused there, or the
    user opted in to running it anyway. None at a real sandbox level."""
    if sandbox.level != "rlimits":
        return None
    if sandbox.allow_unsandboxed:
        return ("generated code runs with only rlimits (opted in with --allow-unsandboxed): "
                "it can read your files and reach the network")
    return ("generated code is refused at this level; --allow-unsandboxed (or [safety] allow_unsandboxed = true) "
            "runs it with only rlimits")


def print_event(term: Terminal, event: Event) -> None:
    """One progress line: phase, what happened, iteration n/N, tokens, seconds."""
    details = []
    if event.iteration:
        details.append(f"iteration {event.iteration}/{event.max_iterations}")
    if event.tokens:
        details.append(f"{event.tokens} tokens")
    if event.seconds >= 0.05:
        details.append(f"{event.seconds:.1f} s")
    suffix = f"  ({', '.join(details)})" if details else ""
    term.say(f"  {event.phase.ljust(7)} {event.message}{suffix}")


def describe_resumable(waiting: list[dict], limit: int = 5) -> list[str]:
    """One line per directive that can be resumed (the latest ``limit``), with its id."""
    lines = [f"  [{'cut off' if d.get('reason') == 'cut_off' else d['status']}] {d['id']}  {d['goal'][:70]}"
             for d in waiting[-limit:]]
    if len(waiting) > limit:
        lines.insert(0, f"  ... and {len(waiting) - limit} older")
    return lines


def resumable_notice(waiting: list[dict]) -> str | None:
    """The start-up line that offers what was left unfinished (None when nothing was)."""
    if not waiting:
        return None
    counts = Counter("cut off" if d.get("reason") == "cut_off" else d["status"] for d in waiting)
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    return (f"{len(waiting)} directive{'s' if len(waiting) > 1 else ''} can be resumed ({parts}): "
            ":resume continues the latest, :resume all every one")


def replay(run: dict, events: Iterable[dict]) -> Iterator[tuple[str, str]]:
    """A directive's audit trail as terminal lines (text, style), in the order it happened."""
    yield (f"Directive {run['directive_id']} · {run['goal']}", "bold")
    yield (f"  {run['outcome'] or 'running'} · {run['iterations']} iterations · {run['seconds']:.1f} s · "
           f"{run['tokens']} tokens · model {run['model'] or '?'} · sandbox {run['level'] or '-'}", "")
    running = False
    for event in events:
        clock, kind = event["timestamp"][11:19], event["kind"]
        if kind == "start" and running:
            yield ("          (the agent stopped here: killed or crashed, so the directive was cut off)", "ansiyellow")
        running = kind != "end" and (running or kind == "start")
        if kind == "start":
            yield (f"{clock}  START   {'resumed' if event['resumed'] else 'new'} · cap "
                   f"{event['max_iterations']} iterations", "bold")
        elif kind == "event":
            yield (f"{clock}  {event['phase'].ljust(7)} {event['message']}", "")
        elif kind == "model_call":
            yield (f"{clock}  MODEL   {event['phase']} · {event['model']} · temperature {event['temperature']} · "
                   f"{event['tokens_in']} in / {event['tokens_out']} out · {event['seconds']:.1f} s", "ansicyan")
            prompt = event["prompt"]
            text = prompt if isinstance(prompt, str) else "\n".join(
                f"[{m.get('role')}] {m.get('content')}" for m in prompt or [])
            yield from _block("prompt", text)
            yield from _block("reply", event["reply"])
        elif kind == "test_run":
            verdict = (f"blocked: {event['reason']}" if event["blocked"] else
                       f"sandbox {event['level']} · {event['passed']} passed, {event['failed']} failed, "
                       f"{event['errors']} errors · {event['seconds']:.2f} s")
            yield (f"{clock}  RUN     {event['skill']} · gate tier {event['tier']} · {verdict}", "ansicyan")
            for finding in event["findings"]:
                yield (f"          gate: {finding}", "ansiyellow")
            yield from _block("code", event["code"])
            if event["output"]:
                yield from _block("output", event["output"])
        elif kind == "end":
            yield (f"{clock}  END     {event['status']} ({event['reason']}): {event['message']}", "bold")


def _block(title: str, text: str) -> Iterator[tuple[str, str]]:
    yield (f"          ── {title} ──", "ansibrightblack")
    yield ("\n".join(f"          {line}" for line in text.rstrip().splitlines()) or "          (empty)", "")
