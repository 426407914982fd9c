"""Crash-consistent skill changes: a fault table.

Every durable write step of every skill change, typed at the REPL as a user would (a new version
by a directive, :improve, :rollback, :forget, :examples), is faulted in turn: the process is
SIGKILLed there, or the disk is full there (``agent.faults``: the n-th step, not a random time).
For each row, after the next start: memory and files agree (every kept file verifies, nothing
unnamed is left, ``skills/`` is the current version's), nothing kept before is lost, the change
happened whole or not at all, and what the start repaired is one line. A full disk also leaves
the REPL alive after one line, and a killed directive resumes without keeping its version twice.
"""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from prompt_toolkit.output.plain_text import PlainTextOutput

from agent import changes, faults
from agent.core import AutonomousAgent
from agent.repl import Repl, Terminal
from tests.conftest import FakeModel
from tests.test_loop import GOOD, PLAN

GOAL = "Create a skill that adds two numbers"
V2 = GOOD.replace("return a + b", "return b + a")
V3 = GOOD.replace("return a + b", "return sum((a, b))")
SKILL = "add_numbers"
# change -> (the REPL lines, the model's replies)
CHANGES = {
    "directive": ([f":directive {GOAL}"], [PLAN, V3]),
    "improve": ([f":improve {SKILL} {SKILL}(5, 5) == 10"], ["Fine as it is.", V3]),
    "rollback": ([f":rollback {SKILL} 1"], []),
    "forget": ([f":forget {SKILL}", "y"], []),
    "examples": ([f":examples {SKILL} {SKILL}(5, 5) == 10"], []),
}
_built: dict[str, Path] = {}


@pytest.fixture
def template(tmp_path_factory) -> Path:
    """A workspace where add_numbers has two kept versions (v2 current), built once."""
    if "ws" not in _built:
        ws = tmp_path_factory.mktemp("template") / "ws"
        agent = AutonomousAgent(workspace=ws, model=FakeModel([PLAN, GOOD, PLAN, V2]))
        assert agent.run(GOAL).status == "working"
        assert agent.run(GOAL).status == "working"
        assert agent.memory.get_skill(SKILL)["version"] == 2
        _built["ws"] = ws
    return _built["ws"]


def copy(template: Path, tmp_path: Path, label: str) -> Path:
    target = tmp_path / label
    shutil.copytree(template, target, symlinks=True)
    return target


def session(agent: AutonomousAgent, lines: list[str]) -> str:
    """Run ``lines`` at the REPL as a scripted session does; what it printed."""
    buffer = io.StringIO()
    script = io.BytesIO("".join(line + "\n" for line in lines).encode())
    Repl(agent, Terminal(stream=script, output=PlainTextOutput(buffer))).loop()
    return buffer.getvalue().replace("\r", "")


def state(agent: AutonomousAgent) -> tuple:
    """What a change may alter, as the user sees it: the skill's versions, current version and
    status, and the current version's code and tests."""
    skill = agent.memory.get_skill(SKILL)
    if skill is None:
        return (None,)
    return ([v["version"] for v in skill["versions"]], skill["version"], skill["status"],
            agent.library.source(SKILL), agent.library.tests(SKILL))


def assert_consistent(agent: AutonomousAgent, kept_before: dict[str, str]) -> None:
    """Memory and files agree, and every file kept before the change is still there (unless the
    skill was forgotten whole)."""
    ws = agent.workspace
    assert not list((ws / "history" / "changes").glob("*")), "a change is still journaled after a start"
    skill = agent.memory.get_skill(SKILL)
    if skill is None:
        assert not (ws / "skills" / f"{SKILL}.py").exists()
        assert not (ws / "skills" / "tests" / f"test_{SKILL}.py").exists()
        assert not (ws / "versions" / SKILL).exists()
        return
    assert changes.damage(agent.library, SKILL, skill) is None
    named = set()
    for record in skill["versions"]:
        assert "sha256" in record
        assert isinstance(changes.kept_files(agent.library, SKILL, record), tuple), record
        named |= {record["path"], record["test_path"]}
    assert set(agent.library.kept_names(SKILL)) == named, "a kept file no record names"
    for path, text in kept_before.items():
        if path in named:
            assert (ws / path).read_text() == text, f"{path} changed"
    assert {p for p in kept_before if p.endswith(("v1.py", "v2.py"))} <= named, "a kept version was lost"


def kept(ws: Path) -> dict[str, str]:
    return {str(p.relative_to(ws)): p.read_text() for p in (ws / "versions" / SKILL).iterdir()}


def steps(template: Path, tmp_path: Path, change: str, monkeypatch) -> tuple[list[str], tuple, tuple]:
    """Run the change once, unfaulted, listing its write steps; (steps, state before, state after)."""
    ws = copy(template, tmp_path, f"{change}-steps")
    log = tmp_path / f"{change}.steps"
    lines, replies = CHANGES[change]
    agent = AutonomousAgent(workspace=ws, model=FakeModel(list(replies)))
    before = state(agent)
    monkeypatch.setenv("AGENT_FAULT_LOG", str(log))
    faults.reset()
    out = session(agent, lines)
    monkeypatch.delenv("AGENT_FAULT_LOG")
    del agent
    gc.collect()
    after = state(AutonomousAgent(workspace=ws, model=FakeModel()))
    assert before != after, out
    assert "error" not in out.lower(), out
    return log.read_text().splitlines(), before, after


def killed_at(ws: Path, change: str, step: int) -> None:
    """Run the change in a forked child that SIGKILLs itself at write step ``step``."""
    lines, replies = CHANGES[change]
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            os.environ["AGENT_FAULT"] = f"{step}:kill"
            agent = AutonomousAgent(workspace=ws, model=FakeModel(list(replies)))
            faults.reset()
            session(agent, lines)
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed at step {step}: {status}"


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_kill_at_every_write_step_leaves_memory_and_files_agreeing(change, template, tmp_path, monkeypatch):
    labels, before, after = steps(template, tmp_path, change, monkeypatch)
    assert len(labels) >= 4, labels
    kept_before = kept(template)
    failures = []
    for number, label in enumerate(labels, start=1):
        ws = copy(template, tmp_path, f"{change}-kill-{number}")
        killed_at(ws, change, number)
        agent = AutonomousAgent(workspace=ws, model=FakeModel([PLAN, V3, V3, V3]))  # the next start
        try:
            assert_consistent(agent, kept_before)
            now = state(agent)
            resumable = [d for d in agent.resumable() if d["goal"] == GOAL or d["goal"].startswith("improve")]
            if now != after and resumable:  # a directive cut off: resuming it ends it, keeping one version
                agent.resume(resumable[-1]["id"])
                assert_consistent(agent, kept_before)
                now = state(agent)
                assert now[:2] == after[:2], f"versions after resuming: {now[:3]}"
            else:
                assert now in (before, after), f"half a change: {now[:3]}"
            assert all("\n" not in note for note in agent.notices)
            if now not in (before,) and any(SKILL in note and "cut off" in note for note in agent.notices):
                assert sum(SKILL in note for note in agent.notices) == 1, agent.notices
        except AssertionError as err:
            failures.append(f"step {number} ({label}): {err}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_full_disk_at_every_write_step_is_one_line_and_nothing_half_done(change, template, tmp_path,
                                                                            monkeypatch):
    labels, before, after = steps(template, tmp_path, change, monkeypatch)
    kept_before = kept(template)
    lines, replies = CHANGES[change]
    failures = []
    for number, label in enumerate(labels, start=1):
        ws = copy(template, tmp_path, f"{change}-full-{number}")
        agent = AutonomousAgent(workspace=ws, model=FakeModel(list(replies)))
        monkeypatch.setenv("AGENT_FAULT", f"{number}:enospc")
        faults.reset()
        out = session(agent, [*lines, ":skills"])
        monkeypatch.delenv("AGENT_FAULT")
        del agent  # it ends here: the next start has the workspace to itself
        gc.collect()
        try:
            assert "Traceback" not in out, out
            assert out.count("no space left on the disk: free space in") == 1, out
            assert out.split("no space left on the disk")[-1].split(":skills\n")[1].strip(), "the REPL did not go on"
            agent = AutonomousAgent(workspace=ws, model=FakeModel())  # the next start
            assert_consistent(agent, kept_before)
            assert state(agent) in (before, after), f"half a change: {state(agent)[:3]}"
        except AssertionError as err:
            failures.append(f"step {number} ({label}): {err}")
    assert not failures, "\n".join(failures)


FULL_DISK = """
import json, os, sys
sys.path.insert(0, {root!r})
from agent.core import AutonomousAgent
from tests.conftest import FakeModel
from tests.test_faults import GOAL, PLAN, GOOD, V2, V3, session, state
ws = os.path.join({mount!r}, "ws")
agent = AutonomousAgent(workspace=ws, model=FakeModel([PLAN, GOOD, PLAN, V2, PLAN, V3]))
assert agent.run(GOAL).status == agent.run(GOAL).status == "working"
filler = os.path.join({mount!r}, "filler")
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
try:  # the disk is full from here on (but for {free} bytes)
    while True:
        os.write(fd, b"x" * 4096)
except OSError:
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - {free}))
    os.close(fd)
print(session(agent, [":rollback add_numbers 1", ":examples add_numbers add_numbers(5, 5) == 10",
                      ":forget add_numbers", "y", ":directive " + GOAL, ":skills"]))
before = state(agent)
del agent
os.unlink(filler)
again = AutonomousAgent(workspace=ws, model=FakeModel())
print("STATE", json.dumps([state(again)[:3] == before[:3], again.notices]))
"""


@pytest.mark.parametrize("free", [0, 64 * 1024], ids=["full", "64KiB-left"])
def test_a_really_full_disk_is_one_line_per_command_and_changes_nothing(tmp_path, free):
    """A small tmpfs in a private mount namespace, filled up (or all but 64 KiB, where SQLite says
    "disk I/O error"): every command that writes says so in one line, nothing is half-written, and
    the REPL goes on."""
    mount = tmp_path / "small"
    mount.mkdir()
    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK.format(root=root, mount=str(mount), free=free))
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) here for a private mount namespace")
    command = [unshare, "--mount", "--propagation", "private", "sh", "-c",
               f"mount -t tmpfs -o size=24m tmpfs {mount} && exec {sys.executable} {script}"]
    probe = subprocess.run([*command[:4], "true"], capture_output=True, text=True)  # noqa: S603
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=root)  # noqa: S603
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in out + done.stderr, out
    full = [line for line in out.splitlines() if "no space left on the disk: free space in" in line]
    assert len(full) >= (4 if not free else 1), out  # :rollback, :examples, :forget, :directive (or fewer)
    assert "Agent> :skills\n" in out and out.split("Agent> :skills\n")[1].split("\n")[0].strip(), out
    same, notices = json.loads(out.split("STATE ", 1)[1])
    assert same, "the skill changed while the disk was full"
    assert all("\n" not in note for note in notices)
