"""SIGTERM, SIGHUP (and Ctrl+C in a scripted run) end the CLI as Ctrl+C ends a directive: recorded
``interrupted``, resumable, one line, exit 128 + the signal. The agent runs as a real process,
its model a local Ollama-speaking server that holds its reply, so the directive is running when
the signal comes; every wait is on an event (the request arrived, the prompt was printed)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.core import AutonomousAgent
from agent.signals import ending
from tests.conftest import FakeModel
from tests.llm_servers import Hold, ollama_server  # noqa: F401  (fixture)
from tests.test_loop import GOOD, PLAN
from tests.test_repl import MODEL, session

AGENT = Path(__file__).resolve().parents[1] / "autonomous_agent.py"
GOAL = ":directive Create a skill that adds two numbers"
WAIT = 120  # seconds an event may take at most (a start with the sandbox probe takes ~1 s)
INTERRUPTED = "the directive is recorded as interrupted; :resume continues it."


@pytest.fixture
def server(ollama_server, monkeypatch):  # noqa: F811
    server = ollama_server(tags=["qwen2.5-coder:7b"])
    monkeypatch.setenv("OLLAMA_HOST", server.url)  # the agent's process inherits it
    return server


def agent_process(workspace: Path, *args: str, env: dict[str, str] | None = None,
                  **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(AGENT), "--workspace", str(workspace), *args],  # noqa: S603
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            **popen)  # type: ignore[call-overload]


def directive_status(workspace: Path) -> str:
    return json.loads((workspace / "memory.json").read_text())["directives"][-1]["status"]


@pytest.mark.parametrize("mode, signum, status", [
    ("-c", signal.SIGTERM, 143),
    ("piped", signal.SIGTERM, 143),
    ("piped", signal.SIGHUP, 129),
    ("-c", signal.SIGINT, 130),  # Ctrl+C ends a scripted run (at a terminal it cancels the directive)
    ("piped", signal.SIGINT, 130),
])
def test_a_signal_mid_directive_ends_the_run_with_one_line(workspace, server, mode, signum, status):
    held = Hold()
    server.enqueue(held)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    if mode == "-c":
        agent = agent_process(workspace, "--model", MODEL, "-c", GOAL, "-c", ":memory", stdin=subprocess.DEVNULL,
                              **pipes)
    else:
        agent = agent_process(workspace, "--model", MODEL, stdin=subprocess.PIPE, **pipes)
        agent.stdin.write(f"{GOAL}\n:memory\n".encode())
        agent.stdin.close()
        agent.stdin = None  # communicate() must not flush it again
    assert held.arrived.wait(WAIT), "the directive never asked the model"
    agent.send_signal(signum)
    out, err = agent.communicate(timeout=WAIT)
    assert agent.returncode == status
    assert err.decode().splitlines() == [f"Stopped by {signal.Signals(signum).name}: {INTERRUPTED}"]
    assert "Memory:" not in out.decode()  # the run ended: the next line did not run
    assert b"Traceback" not in out + err and b"\r" not in out
    assert directive_status(workspace) == "interrupted"


def test_a_directive_stopped_by_sigterm_is_resumed(workspace, server):
    held = Hold()
    server.enqueue(held)
    agent = agent_process(workspace, "--model", MODEL, "-c", GOAL, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert held.arrived.wait(WAIT)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=WAIT) == 143
    server.enqueue(PLAN, GOOD)
    code, out = session(workspace, [], "--model", MODEL, "-c", ":resume")
    assert code == 0 and "✅ add_numbers is working" in out, out
    assert directive_status(workspace) == "done"


class Pty:
    """The agent at a terminal: a pseudo-terminal's master end, read as the agent prints."""

    def __init__(self, workspace: Path) -> None:
        self.master, slave = pty.openpty()
        self.agent = agent_process(workspace, "--model", MODEL, stdin=slave, stdout=slave, stderr=slave,
                                   start_new_session=True, env={"TERM": "dumb"})  # the prompt in plain text
        os.close(slave)
        self.seen = b""

    def read_until(self, text: bytes) -> bool:
        """Read what the agent prints until ``text`` shows (False if the agent ended first)."""
        deadline = time.monotonic() + WAIT
        while text not in self.seen and time.monotonic() < deadline:
            if select.select([self.master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the agent closed the terminal
                    break
                if not chunk:
                    break
                self.seen += chunk
        return text in self.seen

    def close(self) -> None:
        if self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait()
        os.close(self.master)


@pytest.mark.parametrize("at_prompt", [False, True])
def test_sigterm_at_a_terminal_ends_the_session(workspace, server, at_prompt):
    held = Hold()
    server.enqueue(held)
    terminal = Pty(workspace)
    try:
        assert terminal.read_until(b"Agent> "), terminal.seen
        if not at_prompt:
            os.write(terminal.master, f"{GOAL}\r".encode())
            assert held.arrived.wait(WAIT)
        terminal.agent.send_signal(signal.SIGTERM)
        assert terminal.agent.wait(timeout=WAIT) == 143
        line = f"Stopped by SIGTERM: {INTERRUPTED}" if not at_prompt else "Stopped by SIGTERM."
        assert terminal.read_until(line.encode() + b"\r\n")
        assert b"Traceback" not in terminal.seen
        assert terminal.seen.count(b"Stopped by") == 1
        if at_prompt:  # the line starts a line of its own, not after the prompt
            assert b"Agent> Stopped" not in terminal.seen
        else:
            assert directive_status(workspace) == "interrupted"
    finally:
        terminal.close()


def test_the_mcp_server_ends_cleanly_on_sigterm(workspace):
    server = agent_process(workspace, "mcp", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    server.stdin.write((json.dumps(hello) + "\n").encode())
    server.stdin.flush()
    assert json.loads(server.stdout.readline())["id"] == 1  # it serves
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=WAIT)  # stdin still open: the signal alone ends it
    assert server.returncode == 143
    lines = err.decode().splitlines()
    assert lines[-1] == "mcp: Stopped by SIGTERM." and "Traceback" not in err.decode(), err.decode()
    assert out == b""  # nothing but the protocol on stdout


def sentinel(signum: int, frame: object) -> None:  # a host program's own handler
    raise AssertionError("not called")


@pytest.fixture
def host_handlers():
    before = {s: signal.signal(s, sentinel) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_library_use_keeps_the_host_programs_handlers(workspace, host_handlers):
    seen = []
    agent = AutonomousAgent(workspace=workspace, model=FakeModel([PLAN, GOOD]),
                            on_event=lambda event: seen.append(signal.getsignal(signal.SIGTERM)))
    assert agent.run("Create a skill that adds two numbers").status == "working"
    assert seen and all(handler is sentinel for handler in seen)
    assert signal.getsignal(signal.SIGHUP) is sentinel


def test_the_cli_puts_the_previous_handlers_back(workspace, server, host_handlers):
    code, _ = session(workspace, [], "--model", MODEL, "-c", ":status")
    assert code == 0
    assert signal.getsignal(signal.SIGTERM) is sentinel and signal.getsignal(signal.SIGHUP) is sentinel


def test_a_signal_the_process_was_started_ignoring_stays_ignored():  # nohup ignores SIGHUP
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with ending():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)
