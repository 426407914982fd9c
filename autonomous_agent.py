#!/usr/bin/env python3
"""A local, skill-learning coding agent.

    python autonomous_agent.py            # the interactive prompt (Agent> )
    python autonomous_agent.py < cmds.txt # run the lines of a file (or pipe) as if typed
    python autonomous_agent.py mcp        # serve the working skills as MCP tools over stdio
    python autonomous_agent.py bench humaneval --limit 20  # the loop against HumanEval (agent/bench.py)
    python autonomous_agent.py --help     # flags; each also has an environment variable; exit codes

As a library::

    from autonomous_agent import AutonomousAgent
    agent = AutonomousAgent(workspace="agent_workspace", model="ollama:qwen2.5-coder:7b")
    result = agent.run("Create a regex pattern matcher", skill_name="regex_matcher")
"""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import sys
from collections.abc import Sequence
from typing import BinaryIO

from prompt_toolkit.input import Input
from prompt_toolkit.output import Output

from agent.config import build_parser, load_settings
from agent.core import AutonomousAgent, DirectiveResult
from agent.errors import AgentError, start_error
from agent.signals import ENDING, Terminated, ending, heeded

__all__ = ["AutonomousAgent", "DirectiveResult", "main"]


def main(argv: Sequence[str] | None = None, *, input: Input | None = None,
         output: Output | None = None) -> int:
    """Run the CLI; returns the exit status. ``input``/``output`` let tests drive a whole session.

    Without ``input``, lines come from the terminal, or from stdin itself when it is a file or
    pipe. Exit status: 1 when a ``-c`` line or a line of a file or pipe failed (or the settings
    are bad), else 0; an interactive session exits 0. SIGTERM and SIGHUP (and Ctrl+C in a ``-c``
    or scripted run) end it as Ctrl+C ends a directive, recorded ``interrupted``, with one line
    and 128 + the signal's number: 143, 129 (130).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own flags: see agent/bench.py
        from agent.bench import main as bench

        return bench(argv[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.mode == "bench":
        parser.error("bench comes first: autonomous_agent.py bench humaneval [--model M] [--limit N] ...")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "commands", "resume", "mode")}
    if args.mode == "mcp":
        if args.commands or args.resume:
            parser.error("mcp serves tools over stdio: it takes no -c or --resume")
        return serve_mcp(flags, args.config)
    stream = None
    if input is None and (sys.stdin is None or not sys.stdin.isatty()):
        stream = sys.stdin.buffer if sys.stdin is not None else io.BytesIO()  # no stdin at all: EOF
    # SIGTERM and SIGHUP end the run as Ctrl+C ends a directive; in a scripted run Ctrl+C ends it too
    with ending(ENDING + ((signal.SIGINT,) if args.commands or stream is not None else ())):
        try:
            return run_repl(args, flags, input, output, stream)
        except Terminated as err:  # a running directive is recorded interrupted by now
            with contextlib.suppress(OSError, ValueError):  # a hung-up terminal, a closed stderr
                print(err.line(), file=sys.stderr, flush=True)
            return err.status


def run_repl(args: argparse.Namespace, flags: dict, input: Input | None, output: Output | None,
             stream: BinaryIO | None) -> int:
    """The REPL: its banner, then ``--resume``, the ``-c`` lines or the lines read (from ``stream``
    when stdin is a file or pipe); the exit status."""
    from agent.repl import (  # prompt_toolkit UI only when used
        Repl,
        Terminal,
        describe_resumable,
        print_event,
        resumable_notice,
        unsandboxed_note,
    )

    try:
        settings = load_settings(flags, config_path=args.config)
        history = settings.workspace / "history"
        history.mkdir(parents=True, exist_ok=True)
        term = Terminal(history / "repl_history", input=input, output=output, stream=stream)
        agent = AutonomousAgent(settings=settings, approve=term.ask_approval,
                                on_event=lambda event: print_event(term, event),
                                on_token=term.stream, on_call=term.end_stream, on_notice=term.warn)
    except (AgentError, OSError) as err:
        print(start_error(err), file=sys.stderr)
        return 1
    repl = Repl(agent, term)
    term.say(f"Autonomous agent · workspace {agent.workspace}")
    term.say(f"  model:   {repl.model_label()}")
    sandbox = agent.sandbox
    term.say(f"  {sandbox.describe()}")
    if sandbox.warning:
        term.warn(f"  ⚠ {sandbox.warning}")
    if unsandboxed_note(sandbox):
        term.warn(f"  ⚠ {unsandboxed_note(sandbox)}")
    waiting = agent.resumable()
    if waiting and not args.resume:
        term.warn(f"  {resumable_notice(waiting)}")
        for line in describe_resumable(waiting):
            term.say(f"  {line}")
    resumed = repl.handle(":resume all") if args.resume else True
    if args.commands:
        results = []
        for line in args.commands:
            results.append(repl.handle(line))
            if not repl.running:  # -c :quit ends the run, as it ends a session
                break
        return 0 if resumed and all(results) else 1
    if term.interactive:
        term.say("Type :help for commands, :quit to leave.")
    ok = repl.loop() and resumed
    return 0 if ok or term.interactive else 1


def serve_mcp(flags: dict, config: object) -> int:
    """``mcp``: the working skills as MCP tools over stdio. Nothing but the protocol on stdout."""
    try:
        settings = load_settings(flags, config_path=config)  # type: ignore[arg-type]
    except AgentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from agent.mcp_server import serve

    return serve(settings, heeded(ENDING))


if __name__ == "__main__":
    sys.exit(main())
