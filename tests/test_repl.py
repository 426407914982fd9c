"""Whole REPL sessions, driven by prompt_toolkit's pipe input, against a local Ollama-speaking
server with the real ``ollama`` client: the path a user takes, end to end."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from autonomous_agent import main
from tests.llm_servers import RawReply, ollama_server  # noqa: F401  (fixture)
from tests.test_loop import GOOD, PLAN, WRONG

MODEL = "ollama:qwen2.5-coder:7b"


def session(workspace, lines: list[str], *extra: str) -> tuple[int, str]:
    """Type ``lines`` at the prompt (then EOF); return the exit code and everything printed."""
    buffer = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("".join(line + "\r" for line in lines))
        pipe.close()
        code = main(["--workspace", str(workspace), *extra], input=pipe, output=PlainTextOutput(buffer))
    return code, buffer.getvalue()


@pytest.fixture
def server(ollama_server, monkeypatch):  # noqa: F811
    server = ollama_server(tags=["qwen2.5-coder:7b"])
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    return server


def test_directive_makes_a_working_skill_listed_by_skills(workspace, server, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # :skills without cuts
    server.enqueue(PLAN, WRONG, GOOD)
    code, out = session(workspace, [":directive Create a skill that adds two numbers", ":skills", ":quit"],
                        "--model", MODEL)
    assert code == 0
    assert "model:   ollama:qwen2.5-coder:7b (chat prompts)" in out
    for phase in ("PLAN", "WRITE", "TEST", "ANALYZE"):
        assert f"  {phase}" in out
    assert "iteration 2/12" in out
    assert "✅ add_numbers is working" in out
    row = next(line for line in out.splitlines() if line.startswith("add_numbers "))
    assert "working" in row and "Add two integers." in row
    memory = json.loads((workspace / "memory.json").read_text())
    assert memory["skills"][0]["status"] == "working"
    assert (workspace / "skills" / "tests" / "test_add_numbers.py").is_file()
    assert list(workspace.glob("exec/*")) == []  # the sandbox's run directories were cleaned


def test_server_down_gives_one_line_and_the_repl_stays_up(workspace, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    code, out = session(workspace, [":directive Create a skill that adds two numbers", ":memory", ":quit"],
                        "--model", MODEL)
    assert code == 0
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors and "127.0.0.1:9" in errors[-1] and "ollama serve" in errors[-1]
    assert "Traceback" not in out
    assert "directives to resume: 1 (:resume)" in out  # :memory still ran afterwards


def test_model_not_pulled_names_the_pull_command(workspace, ollama_server, monkeypatch):  # noqa: F811
    server = ollama_server(tags=["llama3:8b"])
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    code, out = session(workspace, [":directive Create a skill that adds two numbers"], "--model", MODEL)
    assert code == 0
    assert "ollama pull qwen2.5-coder:7b" in out
    memory = json.loads((workspace / "memory.json").read_text())
    assert memory["directives"][0]["status"] == "pending"


@pytest.mark.parametrize("line, message", [
    (":frobnicate", "unknown command :frobnicate"),
    (":directive", "a directive needs a goal"),
    (":directive    ", "a directive needs a goal"),
    ("hello", "commands start with ':'"),
    (":show nothing_here", "no saved skill named 'nothing_here'"),
    (":show ../../etc/passwd", "error:"),
    (":test", "usage: :test <skill>"),
    (":memory everything", "usage: :memory"),
    (":approvals revoke onlyone", "usage: :approvals revoke"),
])
def test_bad_input_gets_one_line(workspace, server, line, message):
    code, out = session(workspace, [line, ":quit"], "--model", MODEL)
    assert code == 0 and message in out
    assert "Traceback" not in out


def test_help_memory_status_and_raw(workspace, server):
    code, out = session(workspace, [":help", ":memory", ":memory raw", ":status", ":approvals"], "--model", MODEL)
    assert code == 0 and "\r" not in out  # LF line ends at a file or pipe
    assert ":directive <goal>" in out and ":skills" in out and ":quit" in out
    assert "skills: 0 working, 0 untested, 0 failed" in out
    assert '"version":' in out
    assert "sandbox:" in out and "12 iterations, 15 s per test run" in out
    assert "custom gate rules: none" in out
    assert "No grants remembered." in out


@pytest.mark.parametrize("columns, width", [("80", 80), (None, 100), ("200", 200)])
def test_help_is_two_aligned_columns_within_the_width(workspace, server, monkeypatch, columns, width):
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    code, out = session(workspace, [":help", ":quit"], "--model", MODEL)
    assert code == 0
    lines = out.split("Agent> :help\n")[1].split("\n  Ctrl+C cancels")[0].splitlines()
    assert all(len(line) <= width for line in lines), lines
    at = lines[0].index("list remembered grants")  # where the description column starts
    usages = [line for line in lines if line[2] == ":"]
    assert len(usages) == 17 and all(line[at - 2:at] == "  " and line[at] != " " for line in usages)
    assert all(line[:at].strip() == "" and line[at] != " " for line in lines if line[2] != ":")  # wrapped
    improve = next(line for line in usages if line.startswith("  :improve"))
    assert improve[:at].rstrip() == "  :improve <skill> [what] [--rounds N]"  # the longest usage, then its text
    described = " ".join(line[at:] for line in lines)  # the descriptions, unwrapped
    assert "lint, review, change, test: a round is kept if old+new tests pass" in described
    assert (len(lines) > 17) == (width < 160)  # wrapped in a narrow column only


def test_custom_gate_rules_are_listed_and_block_a_skill(workspace, server, tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('[safety]\nblock = ["yaml", "re:requests\\\\.(get|post)"]\n')
    uses_yaml = GOOD.replace("```python\n", "```python\nimport yaml\n")
    server.enqueue(PLAN, uses_yaml)
    code, out = session(workspace, [":status", ":directive Create a skill that adds two numbers", ":quit"],
                        "--model", MODEL, "--config", str(config))
    assert code == 0 and "Traceback" not in out
    assert r"custom gate rules: yaml, re:requests\.(get|post) ([safety] block, tier 3)" in out
    assert "add_numbers blocked: blocked by gate custom_block" in out and "'yaml'" in out


@pytest.mark.parametrize("flags, note", [
    ((), "generated code is refused at this level; --allow-unsandboxed"),
    (("--allow-unsandboxed",), "generated code runs with only rlimits (opted in with --allow-unsandboxed)"),
])
def test_rlimits_level_says_whether_code_is_refused_or_opted_in(workspace, server, flags, note):
    code, out = session(workspace, [], "--model", MODEL, "--sandbox", "rlimits", *flags, "-c", ":status")
    assert code == 0 and "Traceback" not in out
    assert out.count(note) == 2  # the banner and :status


def test_no_unsandboxed_note_at_a_real_sandbox_level(workspace, server):
    code, out = session(workspace, [], "--model", MODEL, "-c", ":status")
    if "sandbox: rlimits" in out:
        pytest.skip("no sandbox level works on this machine")
    assert "--allow-unsandboxed" not in out


def test_history_file_is_kept_in_the_workspace(workspace, server):
    session(workspace, [":help", ":quit"], "--model", MODEL)
    assert ":help" in (workspace / "history" / "repl_history").read_text()


def test_one_shot_commands_and_flags_win_over_env(workspace, server, monkeypatch):
    monkeypatch.setenv("AGENT_MAX_ITER", "7")
    code, out = session(workspace, [], "--model", MODEL, "--max-iter", "3", "-c", ":status")
    assert code == 0 and "3 iterations" in out


def test_corrupted_memory_stops_with_one_line(workspace, server, capsys):
    (workspace / "memory.json").write_text("{not json")
    code, _ = session(workspace, [":quit"], "--model", MODEL)
    err = capsys.readouterr().err
    assert code == 1 and "memory.json" in err and len(err.strip().splitlines()) == 1
    assert (workspace / "memory.json").read_text() == "{not json"


def test_bad_flag_value_is_one_line(workspace, capsys):
    code, _ = session(workspace, [], "--max-iter", "zero")
    assert code == 1
    assert capsys.readouterr().err.strip() == "error: invalid max_iter 'zero' from --max-iter"


def test_completion_offers_commands_and_skill_names(workspace, server):
    from prompt_toolkit.document import Document

    from agent.core import AutonomousAgent
    from agent.repl import Repl, Terminal

    agent = AutonomousAgent(workspace=workspace, model=MODEL)
    agent.memory.upsert_skill("json_validator", status="working")
    with create_pipe_input() as pipe:
        repl = Repl(agent, Terminal(input=pipe, output=PlainTextOutput(io.StringIO())))

        def complete(text: str) -> list[str]:
            return [c.text for c in repl.completer.get_completions(Document(text), None)]

        assert ":directive" in complete(":di")
        assert complete(":show js") == ["json_validator"]
        assert complete(":memory ") == ["raw"]
        assert complete(":directive foo") == []


def test_ctrl_c_during_a_directive_returns_to_the_prompt(workspace):
    from agent.core import AutonomousAgent
    from agent.repl import Repl, Terminal
    from tests.conftest import FakeModel

    buffer = io.StringIO()
    agent = AutonomousAgent(workspace=workspace, model=FakeModel([PLAN, KeyboardInterrupt()]))
    with create_pipe_input() as pipe:
        pipe.send_text(":memory\r")
        pipe.close()
        repl = Repl(agent, Terminal(input=pipe, output=PlainTextOutput(buffer)))
        repl.handle(":directive Create a skill that adds two numbers")
        repl.loop()  # the REPL is still usable afterwards
    out = buffer.getvalue()
    assert "Interrupted: the directive is recorded as interrupted; :resume continues it." in out
    directive = agent.memory.read()["directives"][-1]
    assert f"[interrupted] {directive['id']}  Create a skill that adds two numbers" in out


def test_approval_is_asked_at_the_prompt_and_remembered(workspace, server):
    net_plan = json.dumps({
        "name": "url_host", "signature": "url_host(url: str) -> str", "description": "Resolve a host.",
        "examples": [], "tests": "from url_host import url_host\n\ndef test_it():\n    assert url_host('x') == 'x'\n"})
    net_code = "```python\nimport socket\n\ndef url_host(url: str) -> str:\n    return url\n```"
    server.enqueue(net_plan, net_code)
    code, out = session(workspace, [":directive Resolve a host name", "a", ":approvals"], "--model", MODEL)
    assert code == 0
    assert "network" in out and "url_host" in out and "Allow? [o]nce / [a]lways" in out
    assert "✅ url_host is working" in out
    assert "url_host: network = always" in out


def test_off_format_replies_still_make_a_working_skill(workspace, server):
    plan = ("Sure! Here is the plan:\n```json\n" + json.dumps({
        "name": "add_numbers", "signature": "add_numbers(a: int, b: int) -> int",
        "description": "Add two integers.", "examples": [{"call": "add_numbers(1, 2)", "result": "3"}]})
        + "\n```\nand the tests:\n```python\nfrom add_numbers import add_numbers\n\ndef test_add():\n"
        "    assert add_numbers(2, 2) == 4\n```\n")
    code_reply = ("```json\n{\"note\": \"module follows\"}\n```\n\n" + GOOD)
    server.enqueue(plan, code_reply)
    code, out = session(workspace, [":directive Create a skill that adds two numbers", ":quit"], "--model", MODEL)
    assert code == 0 and "✅ add_numbers is working" in out, out


def test_the_repl_asks_the_user_to_confirm_results(workspace, server):
    plan = json.dumps({"name": "double", "signature": "double(n: int) -> int", "description": "Double n.",
                       "examples": []})
    good = "```python\ndef double(n: int) -> int:\n    return n * 2\n```"
    server.enqueue(plan, "I cannot write tests.", good)
    code, out = session(workspace, [":directive Make a doubler", "y", "0", ":skills", ":quit"], "--model", MODEL)
    assert code == 0, out
    assert "Are these right?" in out and "double(7)  →  14" in out and "double(0)  →  0" in out
    assert "✅ double is working (2 confirmed examples" in out
    tests = (workspace / "skills" / "tests" / "test_double.py").read_text()
    assert "got = double(7)\n    assert got == 14" in tests and "got = double(0)\n    assert got == 0" in tests


@pytest.mark.parametrize("answer, error", [
    ("10**400", "error: 10**400 is an expression, not a literal"),  # was read as 10 (its first literal)
    ("1" * 5000, "has an int of 5,000 digits (at most 4,300); type it again"),  # was the string '111...'
    ("[" * 300 + "]" * 300, "is nested 300 deep (at most 100); type it again"),  # was the string '[[[...'
], ids=["10**400", "int-5000-digits", "nested-300"])
def test_an_answer_past_a_limit_is_asked_again(workspace, server, answer, error):
    plan = json.dumps({"name": "double", "signature": "double(n: int) -> int", "description": "Double n.",
                       "examples": []})
    good = "```python\ndef double(n: int) -> int:\n    return n * 2\n```"
    server.enqueue(plan, "I cannot write tests.", good)
    code, out = session(workspace, [":directive Make a doubler", "y", answer, "0", ":quit"], "--model", MODEL)
    assert code == 0, out
    assert error in out and "✅ double is working (2 confirmed examples" in out


def test_a_corrected_result_goes_on_within_the_iteration_cap(workspace, server):
    plan = json.dumps({"name": "double", "signature": "double(n: int) -> int", "description": "Double n.",
                       "examples": []})
    wrong = [f"```python\ndef double(n: int) -> int:\n    return n * 3{tail}\n```" for tail in ("", " + 1", " + 2")]
    server.enqueue(plan, "I cannot write tests.", *wrong)
    code, out = session(workspace, [":directive Make a doubler", "14", "", ":quit"], "--model", MODEL,
                        "--max-iter", "2")
    assert code == 0, out
    assert "double(7)  →  21" in out
    assert "user: double(7) returned 21, expected 14 (the user's answer) → retry  (iteration 1/2)" in out
    counts = re.findall(r"iteration (\d+)/(\d+)", out)
    assert counts and all(cap == "2" and int(n) <= 2 for n, cap in counts), counts
    assert "❌ double failed: no working version after 2 iterations (iteration_cap)" in out


def test_a_crash_is_one_meaningful_line_in_analyze_and_memory(workspace, server):
    crashes = ("```python\ndef add_numbers(a: int, b: int) -> int:\n    if b == 3 and a != 1:\n        return [][0]\n"
               "    if a == 3 and b != 1:\n        return {}[a]\n    return a + b\n```")
    server.enqueue(PLAN, crashes)
    from agent.memory import Memory

    Memory(workspace).record_failure(  # as failures were kept before: the output's first 500 characters
        skill="old_skill", error="004     >>> old_skill(1, 2)\nExpected:\n    3\nGot:\n    -1\n",
        category="failed_assertion", code_snippet="", iteration=1, directive_id=None)
    code, out = session(workspace, [":directive Create a skill that adds two numbers", ":memory"], "--model", MODEL,
                        "--max-iter", "1")
    assert code == 0 and "Traceback" not in out, out
    analyzed = re.search(r"ANALYZE crash: (add_numbers\(a=-?\d+, b=-?\d+\) raised \w+Error: .+) → stop", out)
    assert analyzed, out
    stored = json.loads((workspace / "memory.json").read_text())["failures"][-1]["error"]
    assert stored == analyzed.group(1)
    assert f"add_numbers  crash: {stored[:80]}" in out
    assert "old_skill  failed_assertion: old_skill(1, 2) returned -1, expected 3" in out
    assert ">>>" not in out.split("Memory:")[1]


def test_examples_command_adds_evidence_or_marks_failed(workspace, server):
    plan = json.dumps({"name": "double", "signature": "double(n: int) -> int", "description": "Double n.",
                       "examples": []})
    good = "```python\ndef double(n: int) -> int:\n    return n * 2\n```"
    server.enqueue(plan, "no tests", good)
    code, out = session(workspace, [":directive Make a doubler", "", "", ":examples double double(5) == 10",
                                    ":examples double double(2) == 5", ":examples double nothing here",
                                    ":quit"], "--model", MODEL)
    assert code == 0, out
    assert "⚠ double is untested" in out
    assert "double: working · 1 user example" in out
    assert "double: failed · double(2) returned 4, expected 5" in out
    assert "no example found" in out
    assert json.loads((workspace / "memory.json").read_text())["skills"][0]["status"] == "failed"


def test_a_malformed_server_reply_leaves_the_directive_pending_without_a_traceback(workspace, server):
    server.enqueue(RawReply((b'{"model": "x", "done": false, "message": {"role": "assistant", "content": "{"}}\n',
                             b"}}}garbage\n")))
    code, out = session(workspace, [":directive Create a skill that adds two numbers", ":quit"], "--model", MODEL)
    assert code == 0 and "Traceback" not in out
    assert "malformed reply" in out
    assert json.loads((workspace / "memory.json").read_text())["directives"][0]["status"] == "pending"


def test_a_hung_server_is_cut_off_at_the_model_deadline(workspace, server):
    server.enqueue(RawReply((b'{"model": "x", "done": false, "message": {"role": "assistant", "content": "{"}}\n',),
                            delay=4.0))
    started = time.monotonic()
    code, out = session(workspace, [":directive Create a skill that adds two numbers", ":quit"], "--model", MODEL,
                        "--model-timeout", "1")
    assert code == 0 and "Traceback" not in out
    assert time.monotonic() - started < 4.0
    assert "did not answer in time" in out
    assert json.loads((workspace / "memory.json").read_text())["directives"][0]["status"] == "pending"
