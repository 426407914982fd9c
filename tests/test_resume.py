"""Nothing lost, nothing stuck: resume from the last completed step, cut-off directives, clean
starts, a restored memory.json, and the audit trail of every directive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.errors import AgentError, MemoryCorrupted, ModelUnavailable
from agent.memory import Memory
from tests.conftest import FakeModel
from tests.llm_servers import RawReply, ollama_server  # noqa: F401  (fixture)
from tests.test_loop import GOOD, PLAN, WRONG, make_agent
from tests.test_repl import MODEL, session

GOAL = "Create a skill that adds two numbers"
ROOT = Path(__file__).resolve().parents[1]


def test_interrupted_directive_resumes_from_its_last_step_not_from_scratch(workspace):
    model = FakeModel([PLAN, WRONG, KeyboardInterrupt()])
    agent = make_agent(workspace, model)
    with pytest.raises(KeyboardInterrupt):
        agent.run(GOAL)
    (waiting,) = agent.resumable()
    assert (waiting["status"], waiting["reason"]) == ("interrupted", "interrupted")
    asked_before = len(model.history)

    model.enqueue(GOOD)
    result = agent.resume()
    assert (result.status, result.directive_id) == ("working", waiting["id"])
    assert result.iterations == 2  # the wrong version counted: iteration 1 was not done again
    after = model.prompts()[asked_before:]
    assert len(after) == 1 and "a - b" in after[0]  # no new plan; the failure was fed back
    assert agent.resumable() == []
    assert agent.memory.directive(waiting["id"])["status"] == "done"
    assert agent.checkpointed(waiting["id"]) is None  # ended for good: its checkpoints are gone


def test_resume_survives_a_new_agent_on_the_same_workspace(workspace):
    first = make_agent(workspace, FakeModel([PLAN, KeyboardInterrupt()]))
    with pytest.raises(KeyboardInterrupt):
        first.run(GOAL)
    model = FakeModel([GOOD])
    result = make_agent(workspace, model).resume()
    assert result.status == "working" and len(model.history) == 1  # the plan came from the checkpoint


def test_pending_directive_resumes_when_the_model_is_back(workspace):
    agent = make_agent(workspace, FakeModel([ModelUnavailable("the server is down")]))
    assert agent.run(GOAL, skill_name="adder").status == "pending"
    model = FakeModel([PLAN.replace("add_numbers", "adder"), GOOD.replace("add_numbers", "adder")])
    result = make_agent(workspace, model).resume()
    assert (result.status, result.skill) == ("working", "adder")
    assert "must be named adder" in model.prompts()[0]  # the name asked for was kept


def test_resume_errors_are_one_line(workspace):
    agent = make_agent(workspace, FakeModel())
    with pytest.raises(AgentError, match="nothing to resume"):
        agent.resume()
    agent.memory.add_directive("one", 3)
    with pytest.raises(AgentError, match="no resumable directive matches 'zzz'"):
        agent.resume("zzz")


def test_a_directive_whose_process_died_is_cut_off_and_resumable(workspace):
    """A child process starts the directive and is SIGKILLed; a new agent calls it cut off."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from agent.memory import Memory
        memory = Memory({str(workspace)!r})
        directive = memory.add_directive("Create a skill that adds two numbers", 12)
        memory.start_directive(directive)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)  # noqa: S603
    assert done.returncode == -signal.SIGKILL
    memory = Memory(workspace)
    (running,) = memory.read()["directives"]
    assert running["status"] == "running"
    assert [d["reason"] for d in memory.resumable_directives()] == ["cut_off"]
    notices: list[str] = []
    agent = make_agent(workspace, FakeModel([PLAN, GOOD]), on_notice=notices.append)
    assert notices == []  # nothing was repaired; resumable() offers it
    assert agent.memory.directive(running["id"])["reason"] == "cut_off"
    assert agent.resume().status == "working"


def test_a_live_directive_is_not_called_cut_off(workspace):
    runner = Memory(workspace)
    directive = runner.add_directive(GOAL, 12)
    runner.start_directive(directive)  # held by this process (another agent, same machine)
    other = Memory(workspace)
    assert other.recover() == [] and other.resumable_directives() == []
    assert other.directive_alive(directive)
    runner.finish_directive(directive, status="done", reason="passed", skill=None, iterations=1)
    assert not other.directive_alive(directive)
    assert not (runner.running_dir / f"{directive}.lock").exists()


def test_a_clean_start_removes_debris_of_killed_runs_but_never_follows_links(workspace, tmp_path):
    make_agent(workspace, FakeModel())  # creates the workspace layout
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("host file")
    run_dir = workspace / "exec" / "adder-1a2b3c4d"
    run_dir.mkdir(parents=True)
    (run_dir / "adder.py").write_text("x = 1")
    (run_dir / "link").symlink_to(outside)
    (workspace / "exec" / "evil-00000000").symlink_to(outside)
    (workspace / ".memory.json.a1b2c3.tmp").write_text("{")
    (workspace / ".memory.json.bak.123.tmp").write_text("{")
    (workspace / "skills" / ".adder.py.0a1b2c3d.tmp").write_text("x")
    (workspace / "notes.tmp").write_text("the user's own file")
    notices: list[str] = []
    make_agent(workspace, FakeModel(), on_notice=notices.append)
    assert notices == ["removed 3 leftovers of killed runs (run directories, temp files)"]  # + memory's 2
    assert list((workspace / "exec").iterdir()) == []
    assert (outside / "keep.txt").read_text() == "host file"
    assert (workspace / "notes.tmp").exists()
    assert [p.name for p in workspace.glob(".*.tmp")] == []


def test_debris_is_left_alone_while_another_agent_uses_the_workspace(workspace):
    first = make_agent(workspace, FakeModel())
    in_flight = workspace / "exec" / "adder-1a2b3c4d"
    in_flight.mkdir(parents=True)  # the first agent's run, now
    notices: list[str] = []
    make_agent(workspace, FakeModel(), on_notice=notices.append)
    assert notices == [] and in_flight.is_dir()
    del first


def test_missing_memory_with_a_backup_is_restored_with_a_notice(workspace):
    agent = make_agent(workspace, FakeModel([PLAN, GOOD]))
    agent.run(GOAL)
    agent.memory.upsert_skill("second")  # the backup now holds add_numbers
    os.unlink(workspace / "memory.json")
    notices: list[str] = []
    again = make_agent(workspace, FakeModel(), on_notice=notices.append)
    assert notices == ["memory.json was missing: restored it from memory.json.bak (1 skills, 1 directives)"]
    assert again.memory.get_skill("add_numbers")["status"] == "working"


def test_missing_memory_with_a_broken_backup_stops_in_one_line(workspace):
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "memory.json.bak").write_text("{not json")
    with pytest.raises(MemoryCorrupted) as info:
        make_agent(workspace, FakeModel())
    assert "\n" not in str(info.value) and "move" in str(info.value)
    assert (workspace / "memory.json.bak").read_text() == "{not json"
    assert not (workspace / "memory.json").exists()


def test_every_directive_leaves_an_audit_trail(workspace):
    agent = make_agent(workspace, FakeModel([PLAN, WRONG, GOOD]))
    result = agent.run(GOAL)
    (run,) = agent.memory.history.recent_runs()
    assert (run["directive_id"], run["outcome"], run["iterations"]) == (result.directive_id, "working", 2)
    assert run["seconds"] > 0 and run["tokens"] == result.tokens > 0 and run["level"]
    events = list(agent.memory.history.events(result.directive_id))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    calls = [e for e in events if e["kind"] == "model_call"]
    assert [c["phase"] for c in calls] == ["plan", "write", "write"]
    assert "a - b" in calls[1]["reply"] and calls[0]["prompt"]
    runs = [e for e in events if e["kind"] == "test_run"]
    assert "return a - b" in runs[0]["code"] and runs[0]["failed"] >= 1 and runs[0]["level"]
    assert runs[-1]["failed"] == 0 and runs[-1]["passed"] >= 2
    assert any(e["kind"] == "event" and e["phase"] == "ANALYZE" for e in events)
    json.dumps(events)  # all of it is plain data


def test_gate_findings_are_in_the_audit_trail(workspace):
    blocked = ("```python\nimport os\ndef add_numbers(a: int, b: int) -> int:\n    os.system('ls')\n"
               "    return a + b\n```")
    agent = make_agent(workspace, FakeModel([PLAN, blocked]))
    result = agent.run(GOAL)
    assert result.status == "blocked"
    (run,) = [e for e in agent.memory.history.events(result.directive_id) if e["kind"] == "test_run"]
    assert run["blocked"] and any("os.system" in finding for finding in run["findings"])


# -- the user's path: kill the agent mid-directive, start it again, :resume ----------------------

@pytest.fixture
def server(ollama_server, monkeypatch):  # noqa: F811
    server = ollama_server(tags=["qwen2.5-coder:7b"])
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    return server


def _kill_mid_directive(workspace: Path, server) -> None:
    """Start the agent in a process, let it plan and test one wrong version, SIGKILL it while it
    waits for the model's second version."""
    hang = RawReply(lines=(b'{"message": {"role": "assistant", "content": "x"}, "done": false}\n',), delay=60)
    server.enqueue(PLAN, WRONG, hang)
    asked = len(server.bodies("/api/chat")) + 3
    agent = subprocess.Popen(  # noqa: S603
        [sys.executable, str(ROOT / "autonomous_agent.py"), "--workspace", str(workspace), "--model", MODEL,
         "-c", f":directive {GOAL}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(server.bodies("/api/chat")) < asked:
            assert agent.poll() is None and time.monotonic() < deadline, "the agent never asked a third time"
            time.sleep(0.05)
    finally:
        agent.kill()
        agent.wait()


def test_killed_agent_offers_the_directive_and_resume_finishes_it(workspace, server):
    _kill_mid_directive(workspace, server)
    server.enqueue(GOOD)
    code, out = session(workspace, [":history", ":resume", ":history 1", ":quit"], "--model", MODEL)
    assert "1 directive can be resumed (1 cut off): :resume continues the latest" in out
    assert "[cut off]" in out and GOAL in out
    assert "RESUME" in out and "✅ add_numbers is working" in out
    assert "(2/12 iterations" in out  # iteration 1 (the wrong version) was not done again
    asked = server.bodies("/api/chat")
    assert len(asked) == 4 and "a - b" in json.dumps(asked[-1])  # no new plan; the failure fed back
    assert "START   resumed" in out and "END     working (passed)" in out
    assert "(the agent stopped here: killed or crashed, so the directive was cut off)" in out
    assert list(workspace.glob("exec/*")) == [] and list(workspace.glob("history/running/*")) == []


def test_resume_flag_continues_everything_at_start(workspace, server):
    _kill_mid_directive(workspace, server)
    server.enqueue(GOOD)
    code, out = session(workspace, [":quit"], "--model", MODEL, "--resume")
    assert "✅ add_numbers is working" in out and "can be resumed" not in out
    assert Memory(workspace).resumable_directives() == []


def test_ten_kills_leave_no_debris(workspace, server):
    for _ in range(10):
        _kill_mid_directive(workspace, server)
    server.enqueue(*([GOOD] * 10))
    code, out = session(workspace, [":resume all", ":quit"], "--model", MODEL)
    assert out.count("✅ add_numbers is working") == 10
    memory = Memory(workspace)
    assert memory.resumable_directives() == []
    assert {d["status"] for d in memory.read()["directives"]} == {"done"}
    leftovers = [p for p in workspace.rglob("*") if p.name.endswith(".tmp") or p.parent.name in ("exec", "running")]
    assert leftovers == []


def test_a_broken_history_file_is_one_line_and_the_rest_works(workspace):
    (workspace / "history").mkdir(parents=True)
    (workspace / "history" / "history.sqlite").write_text("garbage, not a database")
    code, out = session(workspace, [":history", ":skills", ":quit"], "--model", MODEL)
    assert "history.sqlite: file is not a database (the history and failure log could not be used)" in out
    assert "No skills yet" in out and "Traceback" not in out


def test_a_directive_another_agent_runs_is_left_alone(workspace):
    agent = make_agent(workspace, FakeModel([PLAN, KeyboardInterrupt()]))
    with pytest.raises(KeyboardInterrupt):
        agent.run(GOAL)
    (waiting,) = agent.resumable()
    other = Memory(workspace)
    other.start_directive(waiting["id"])  # another agent took it between our list and our start
    with pytest.raises(AgentError, match="running in another agent"):
        agent.memory.start_directive(waiting["id"])  # what resume does first, before any change
    with pytest.raises(AgentError, match="nothing to resume"):
        agent.resume(waiting["id"])
    assert agent.memory.directive(waiting["id"])["status"] == "running"  # not called crashed
    assert agent.checkpointed(waiting["id"]) is not None  # its checkpoints are still there
    other.finish_directive(waiting["id"], status="done", reason="passed", skill=None, iterations=1)
    with pytest.raises(AgentError, match="already ended"):
        agent.memory.start_directive(waiting["id"])


def test_a_broken_checkpoint_file_is_one_line(workspace, server):
    make_agent(workspace, FakeModel([ModelUnavailable("down")])).run(GOAL)
    for path in (workspace / "history").glob("checkpoints.sqlite*"):
        path.unlink()
    (workspace / "history" / "checkpoints.sqlite").write_text("garbage, not a database")
    code, out = session(workspace, [":resume", ":directive " + GOAL, ":history ²", ":skills", ":quit"],
                        "--model", MODEL)
    assert out.count("checkpoints.sqlite: file is not a database; move it away") == 2
    assert "no directive '²' in the history" in out and "No skills yet" in out and "Traceback" not in out
    assert len(Memory(workspace).read()["directives"]) == 1  # the refused directive was not recorded


def test_a_directive_stopped_while_planning_plans_again(workspace):
    model = FakeModel([KeyboardInterrupt()])
    agent = make_agent(workspace, model)
    with pytest.raises(KeyboardInterrupt):
        agent.run(GOAL)
    model.enqueue(PLAN, GOOD)
    assert agent.resume().status == "working"
    (resumed,) = [e for e in agent.events if e.phase == "RESUME"]
    assert resumed.message == "from the start: it stopped while planning"
