"""Input the REPL must survive: huge lines, bytes that are not UTF-8, commands from a file or pipe,
exit codes, and bad settings on the command line (one line each, never a traceback)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from agent.spec import MAX_GOAL_CHARS, MAX_LINE_CHARS
from autonomous_agent import main
from tests.llm_servers import ollama_server  # noqa: F401  (fixture)
from tests.test_loop import GOOD, PLAN

MODEL = "ollama:qwen2.5-coder:7b"  # OLLAMA_HOST points at a closed port unless a test starts a server
ROOT = Path(__file__).resolve().parents[1]
TOO_LONG = f"error: skipped a line of more than {MAX_LINE_CHARS:,} characters"
NOT_UTF8 = "error: skipped a line that is not valid UTF-8"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"  # how a terminal brackets a paste


def typed(workspace: Path, data: str | bytes, *extra: str) -> tuple[int, str]:
    """Send ``data`` through a prompt_toolkit pipe (as a terminal would); the exit code and output.
    A writer thread, since a line over the pipe's buffer would block before the REPL reads it."""
    buffer = io.StringIO()
    with create_pipe_input() as pipe:
        def write() -> None:
            pipe.send_bytes(data) if isinstance(data, bytes) else pipe.send_text(data)
            pipe.close()

        threading.Thread(target=write, daemon=True).start()
        code = main(["--workspace", str(workspace), "--model", MODEL, *extra], input=pipe,
                    output=PlainTextOutput(buffer))
    return code, buffer.getvalue().replace("\r\n", "\n")


def scripted(workspace: Path, data: bytes, monkeypatch: pytest.MonkeyPatch, *extra: str) -> tuple[int, str]:
    """Run main() with ``data`` as a stdin that is not a terminal (a file or pipe)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    buffer = io.StringIO()
    code = main(["--workspace", str(workspace), "--model", MODEL, *extra], output=PlainTextOutput(buffer))
    return code, buffer.getvalue().replace("\r\n", "\n")


def errors(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error:")]


# ---- huge lines ------------------------------------------------------------------------------------

def test_a_pasted_1mb_line_is_refused_in_one_line_and_the_next_command_runs(workspace):
    code, out = typed(workspace, f"{PASTE_START}:directive {'a' * 1_000_000}{PASTE_END}\r:skills\r:quit\r")
    assert code == 0 and "Traceback" not in out
    assert errors(out) == [f"{TOO_LONG} (the most one line may have)"]
    assert "No skills yet" in out
    assert not (workspace / "memory.json").exists() or "aaaa" not in (workspace / "memory.json").read_text()
    assert "aaaa" not in (workspace / "history" / "repl_history").read_text()


def test_a_typed_100k_line_is_refused_and_the_next_command_runs(workspace):
    code, out = typed(workspace, f":directive {'b' * 100_000}\r:skills\r:quit\r")
    assert errors(out) == [f"{TOO_LONG} (the most one line may have)"]
    assert "No skills yet" in out and "bbbb" not in (workspace / "history" / "repl_history").read_text()


def test_a_line_at_the_limit_is_read_but_a_goal_that_long_is_not_a_goal(workspace):
    goal = "c" * (MAX_LINE_CHARS - len(":directive "))
    code, out = typed(workspace, f"{PASTE_START}:directive {goal}{PASTE_END}\r:skills\r")
    assert errors(out) == [f"error: a goal is at most {MAX_GOAL_CHARS:,} characters (this one has "
                           f"{len(goal):,}); say what the skill does, with a few examples"]
    assert "No skills yet" in out and "Traceback" not in out


def test_the_goal_limit_is_the_one_memory_keeps():
    schema = json.loads((ROOT / "agent" / "memory" / "memory.schema.json").read_text())
    assert schema["$defs"]["directive"]["properties"]["goal"]["maxLength"] == MAX_GOAL_CHARS


def test_a_huge_line_from_a_pipe_is_skipped_unread(workspace, monkeypatch):
    data = b":directive " + b"d" * 5_000_000 + b"\n:skills\n"
    code, out = scripted(workspace, data, monkeypatch)
    assert code == 1 and errors(out) == [f"{TOO_LONG} (the most one line may have)"]
    assert "Agent> :skills\nNo skills yet" in out


def test_a_huge_c_line_is_refused(workspace):
    code, out = typed(workspace, "", "-c", ":directive " + "e" * 1_000_000, "-c", ":skills")
    assert code == 1 and errors(out) == [f"{TOO_LONG} (the most one line may have)"] and "No skills yet" in out


# ---- bytes that are not UTF-8 -----------------------------------------------------------------------

def test_invalid_utf8_at_the_prompt_is_skipped_with_one_line(workspace):
    code, out = typed(workspace, b":show \xff\xfe\r:skills\r:quit\r")
    assert code == 0 and "Traceback" not in out
    assert errors(out) == [NOT_UTF8] and "No skills yet" in out
    assert "\\udcff" not in (workspace / "history" / "repl_history").read_text()


def test_invalid_utf8_from_a_pipe_is_skipped_with_one_line(workspace, monkeypatch):
    code, out = scripted(workspace, b":skills\n:show \xc3\x28\n\xff\n:help\n", monkeypatch)
    assert code == 1 and errors(out) == [NOT_UTF8, NOT_UTF8]
    assert "No skills yet" in out and ":directive <goal>" in out


# ---- commands from a file or pipe -------------------------------------------------------------------

def test_a_file_of_commands_runs_each_line_as_typed(workspace, monkeypatch):
    code, out = scripted(workspace, b":skills\r\n:status\n\n:memory\n:quit\n:skills\n", monkeypatch)
    assert code == 0, out
    assert "Agent> :skills\nNo skills yet" in out and "12 iterations" in out and "directives to resume: 0" in out
    assert out.count("No skills yet") == 1  # nothing after :quit runs
    assert "Type :help" not in out and "Warning: Input is not a terminal" not in out


def test_a_failing_line_from_a_pipe_makes_the_exit_status_1(workspace, monkeypatch):
    code, out = scripted(workspace, b":frobnicate\n:skills\n", monkeypatch)
    assert code == 1 and errors(out) == ["error: unknown command :frobnicate (try :help)"] and "No skills" in out


def test_a_question_is_answered_by_the_next_line_of_the_pipe(workspace, ollama_server, monkeypatch):  # noqa: F811
    server = ollama_server(tags=["qwen2.5-coder:7b"])
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    net_plan = json.dumps({
        "name": "url_host", "signature": "url_host(url: str) -> str", "description": "Resolve a host.",
        "examples": [], "tests": "from url_host import url_host\n\ndef test_it():\n    assert url_host('x') == 'x'\n"})
    server.enqueue(net_plan, "```python\nimport socket\n\ndef url_host(url: str) -> str:\n    return url\n```")
    code, out = scripted(workspace, b":directive Resolve a host name\na\n:approvals\n", monkeypatch)
    assert code == 0, out
    assert "Allow? [o]nce / [a]lways for this skill / [d]eny: a" in out
    assert "✅ url_host is working" in out and "url_host: network = always" in out


def doubler_server(ollama_server, monkeypatch) -> None:  # noqa: F811
    """A scripted server whose model plans ``double`` with no examples and writes it right."""
    server = ollama_server(tags=["qwen2.5-coder:7b"])
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    plan = json.dumps({"name": "double", "signature": "double(n: int) -> int", "description": "Double n.",
                       "examples": []})
    server.enqueue(plan, "I cannot write tests.", "```python\ndef double(n: int) -> int:\n    return n * 2\n```")


def test_examples_are_confirmed_from_the_pipe(workspace, ollama_server, monkeypatch):  # noqa: F811
    doubler_server(ollama_server, monkeypatch)
    code, out = scripted(workspace, b":directive Make a doubler\ny\n0\n", monkeypatch)
    assert code == 0, out
    assert "double(7)  \u2192  14" in out and "✅ double is working (2 confirmed examples" in out


def test_the_real_cli_reads_a_pipe(tmp_path, isolated_env):
    """The whole process, as a user runs it: `printf ... | python autonomous_agent.py`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "OPENAI_", "PYTEST_"))}
    done = subprocess.run([sys.executable, str(ROOT / "autonomous_agent.py"),  # noqa: S603
                           "--workspace", str(tmp_path / "ws"), "--model", MODEL],
                          input=b":skills\n\xff\n:quit\n", capture_output=True, cwd=tmp_path, env=env, timeout=120)
    out = done.stdout.decode().replace("\r\n", "\n")
    assert done.returncode == 1, out + done.stderr.decode()
    assert "Agent> :skills\nNo skills yet" in out and NOT_UTF8 in out and "Traceback" not in done.stderr.decode()


# ---- exit codes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("lines, code", [
    ([":skills"], 0),
    ([":skills", ":help", ":status"], 0),
    ([":frobnicate"], 1),
    (["hello"], 1),
    ([":show nothing_here"], 1),
    ([":memory everything"], 1),
    ([":approvals revoke \"unclosed"], 1),
    ([":directive Create a skill that adds two numbers"], 1),  # the model is unreachable: pending
    ([":frobnicate", ":skills"], 1),  # every line runs; one failed
    ([":skills", ":quit", ":frobnicate"], 0),  # :quit ends the run: nothing after it runs
])
def test_c_exit_codes(workspace, lines, code):
    status, out = typed(workspace, "", *(arg for line in lines for arg in ("-c", line)))
    assert status == code, out
    assert "Traceback" not in out and len(errors(out)) == code


def test_an_untested_directive_exits_1(workspace, ollama_server, monkeypatch):  # noqa: F811
    doubler_server(ollama_server, monkeypatch)
    code, out = scripted(workspace, b":directive Make a doubler\n\n\n", monkeypatch)
    assert code == 1 and "⚠ double is untested" in out


def test_a_working_directive_exits_0(workspace, ollama_server, monkeypatch):  # noqa: F811
    from tests.test_loop import WRONG

    server = ollama_server(tags=["qwen2.5-coder:7b"])
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    server.enqueue(PLAN, WRONG, GOOD)
    code, out = typed(workspace, "", "-c", ":directive Create a skill that adds two numbers")
    assert code == 0 and "✅ add_numbers is working" in out


def test_an_interactive_session_exits_0_whatever_failed(workspace):
    code, out = typed(workspace, ":frobnicate\r:directive Create a skill that adds two numbers\r")
    assert code == 0 and len(errors(out)) == 2


def test_help_documents_the_exit_codes():
    from agent.config import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "Exit status: 0 on success; 1 when a -c line or a line from a file or pipe failed" in text


# ---- bad settings on the command line: one line, exit 1 ---------------------------------------------

@pytest.mark.parametrize("args, toml, message", [
    (["--ollama-host", "http://[::1"], None, "invalid ollama_host 'http://[::1' from --ollama-host: not a URL"),
    (["--ollama-host", "http://127.0.0.1:70000"], None, "the port must be a number from 1 to 65535"),
    (["--ollama-host", ""], None, "invalid ollama_host '' from --ollama-host"),
    (["--model", ""], None, "invalid model '' from --model"),
    (["--model", "gpt4"], None, "invalid model 'gpt4' from --model: use one of: auto,"),
    (["--workspace", "a\0b"], None, "invalid workspace 'a\\x00b' from --workspace: it holds a control character"),
    (["--max-iter", "9" * 5000], None, "... (5,002 characters) from --max-iter"),
    (["--timeout", "nan"], None, "invalid timeout 'nan' from --timeout"),
    ([], "agent = 3\n", "agent must be a table ([agent])"),
    ([], "agent = [1]\n", "agent must be a table ([agent])"),
    ([], "max_iter = \xff\n", "is not valid TOML"),
    (["--config", "{dir}"], None, "cannot be read: Is a directory"),
])
def test_bad_settings_are_one_line_with_exit_1(workspace, tmp_path, capsys, args, toml, message):
    config = tmp_path / "agent.toml"
    if toml is not None:
        config.write_bytes(toml.encode("latin-1"))
        args = [*args, "--config", str(config)]
    args = [a.replace("{dir}", str(tmp_path)) for a in args]
    with create_pipe_input() as pipe:
        pipe.close()
        code = main(["--workspace", str(workspace), "--model", MODEL, *args], input=pipe,
                    output=PlainTextOutput(io.StringIO()))
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_workspace_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    with create_pipe_input() as pipe:
        code = main(["--workspace", str(tmp_path / "afile"), "--model", MODEL], input=pipe,
                    output=PlainTextOutput(io.StringIO()))
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: cannot use workspace") and len(err.strip().splitlines()) == 1


def test_argparse_usage_errors_keep_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--max-iter"])
    assert info.value.code == 2


def test_a_bad_openai_base_url_is_one_line(workspace, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://[::1")
    code, out = typed(workspace, "", "--model", "openai:some-model", "-c", ":directive add two numbers")
    assert code == 1 and "Traceback" not in out
    assert errors(out) == ["error: The OpenAI base URL 'http://[::1' is not a URL (Invalid port: ':1'); "
                           "set OPENAI_BASE_URL, e.g. http://127.0.0.1:8000/v1."]


def test_a_model_cache_that_cannot_be_written_is_one_line(tmp_path):
    from agent.errors import ModelUnavailable
    from agent.llm.embedded import GEMMA_PACKAGE, gemma_path

    pytest.importorskip(GEMMA_PACKAGE)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ModelUnavailable, match=r"^Cannot write the embedded model to .*afile.*; set AGENT_CACHE_DIR"):
        gemma_path(tmp_path / "afile")
