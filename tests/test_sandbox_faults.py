"""Fault table: the sandbox's own failures are never the code's.

Part 1, run cgroups owned by proof: two agents on one machine, one of them in a pid namespace of
its own (``unshare --pid --fork --mount-proc``, as a container or a CI runner would put it). One
agent's sweep never touches the other's live run cgroups; a leftover whose owner provably ended
is swept; one whose owner cannot be known is left alone.

Part 2, "the sandbox could not start" is not "the code failed": a launcher that cannot start
(it is handed a cgroup that does not exist, or the run's real cgroup is removed under it, as a
sweeping agent did) is started again once, then raises ``SandboxDidNotStart``; a working skill
stays working and a directive stays pending with no failed iteration, and resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import safety.cgroup
import safety.sandbox
from agent.core import AutonomousAgent
from agent.errors import AgentError
from safety.cgroup import PREFIX, RunCgroup, available
from safety.sandbox import RunResult, Sandbox, available_levels
from tests.conftest import FakeModel
from tests.test_loop import GOOD, PLAN

ROOT = Path(__file__).resolve().parent.parent
SandboxDidNotStart = getattr(safety.sandbox, "SandboxDidNotStart", AgentError)
MISSING_CGROUP = f"/sys/fs/cgroup/pids/{PREFIX}0-gone/cgroup.procs"

# -- part 1: two agents, one cgroup hierarchy ---------------------------------------------------

# Another agent: makes (and so sweeps first) a run cgroup, says where it is, then holds it until
# told to end ("hold"), removes it at once ("sweep"), is killed holding it ("die"), or makes and
# removes one after another (each creation a sweep) until told to end ("churn").
OTHER_AGENT = """
import json, os, select, signal, sys
sys.path.insert(0, {root!r})
from safety.cgroup import RunCgroup
run = RunCgroup.create(1 << 28, 16)
print(json.dumps(sorted(str(p) for p in set(run.dirs.values()))), flush=True)
mode = sys.argv[1]
while mode == "churn" and not select.select([sys.stdin], [], [], 0)[0]:   # make and sweep until told
    RunCgroup.create(1 << 28, 16).remove()
if mode == "die":   # killed (pid 1 of its namespace ignores its own SIGKILL: it exits at once)
    os.kill(os.getpid(), signal.SIGKILL) if os.getpid() != 1 else os._exit(137)
if mode == "hold":
    sys.stdin.readline()
run.remove()
"""


def _unshare_refused() -> str | None:
    if os.geteuid() != 0:
        return "run cgroups are made only as root"
    if not available():
        return "no cgroup hierarchy we may create run cgroups in"
    if not shutil.which("unshare"):
        return "no unshare(1) here"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],  # noqa: S607
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"the kernel refuses a new pid namespace: {probe.stderr.strip()[:200]}"
    return None


REFUSED = _unshare_refused()
needs_pidns = pytest.mark.skipif(REFUSED is not None, reason=REFUSED or "")


class OtherAgent:
    """Another agent process, in a pid namespace of its own (``pidns``) or in ours."""

    def __init__(self, mode: str, *, pidns: bool) -> None:
        cmd = [sys.executable, "-c", OTHER_AGENT.format(root=str(ROOT)), mode]
        if pidns:
            cmd = ["unshare", "--pid", "--fork", "--mount-proc", *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.dirs = [Path(p) for p in json.loads(line)]

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        self.proc.communicate(timeout=30)


def sweep_now() -> None:
    """What every agent does before it makes a run cgroup: sweep. (Make one, remove it.)"""
    made = RunCgroup.create(1 << 28, 16)
    assert made is not None
    made.remove()


def lock_files(name: str) -> list[Path]:
    return [d / f"{name}.lock" for d in getattr(safety.cgroup, "LOCK_DIRS", ()) if (d / f"{name}.lock").exists()]


@needs_pidns
@pytest.mark.parametrize("pidns", [True, False], ids=["other_pid_namespace", "same_pid_namespace"])
def test_another_agent_s_sweep_leaves_our_live_run_cgroup(pidns: bool) -> None:
    ours = RunCgroup.create(1 << 28, 16)
    assert ours is not None
    try:
        OtherAgent("sweep", pidns=pidns).end()
        assert all(d.is_dir() for d in ours.dirs.values()), "another agent removed our live run's cgroup"
    finally:
        ours.remove()
    assert not any(d.exists() for d in ours.dirs.values())


@needs_pidns
@pytest.mark.parametrize("pidns", [True, False], ids=["other_pid_namespace", "same_pid_namespace"])
def test_our_sweep_leaves_another_agent_s_live_run_cgroup(pidns: bool) -> None:
    other = OtherAgent("hold", pidns=pidns)
    try:
        sweep_now()
        assert all(d.is_dir() for d in other.dirs), "we removed another agent's live run cgroup"
    finally:
        other.end()
    assert not any(d.exists() for d in other.dirs)


@needs_pidns
@pytest.mark.parametrize("pidns", [True, False], ids=["other_pid_namespace", "same_pid_namespace"])
def test_a_dead_agent_s_leftover_is_swept(pidns: bool) -> None:
    other = OtherAgent("die", pidns=pidns)
    other.proc.communicate(timeout=30)
    assert all(d.is_dir() for d in other.dirs)   # it died holding it
    sweep_now()
    assert not any(d.exists() for d in other.dirs), "a dead agent's run cgroup was left"
    assert lock_files(other.dirs[0].name) == []


@needs_pidns
def test_a_dead_agent_s_leftover_elsewhere_in_the_hierarchy_is_swept_by_its_lock_file() -> None:
    """Agents started in different cgroups (a job, a service, a container each) make their runs'
    cgroups under different parents: a sweep that sees the lock file of a dead owner but not its
    cgroup removes the cgroup where the lock file records it, not only the lock file."""
    probe = RunCgroup.create(1 << 28, 16)
    assert probe is not None
    parents = sorted({d.parent for d in set(probe.dirs.values())})
    probe.remove()
    elsewhere = [p / f"elsewhere-{os.urandom(4).hex()}" for p in parents]  # not one of our parents
    name = f"{PREFIX}999999998-{os.urandom(8).hex()}"
    lock = safety.cgroup.OwnerLock.take(name)
    assert lock is not None
    for d in elsewhere:
        (d / name).mkdir(parents=True)
    lock.record([d / name for d in elsewhere])
    lock.release(forget=False)  # as when its owner died: the kernel drops a dead owner's lock
    try:
        sweep_now()
        assert not any((d / name).exists() for d in elsewhere), "a dead agent's cgroup elsewhere was left"
        assert lock_files(name) == []
    finally:
        for d in elsewhere:
            if (d / name).exists():
                (d / name).rmdir()
            d.rmdir()


@needs_pidns
def test_a_run_cgroup_whose_owner_cannot_be_known_is_left_alone() -> None:
    """No lock file to see (an agent with a private /run and /tmp, or an older version): leaving
    it leaks a cgroup; removing it could kill a live run. The pid in its name proves nothing."""
    probe = RunCgroup.create(1 << 28, 16)
    assert probe is not None
    parents = {d.parent for d in set(probe.dirs.values())}
    probe.remove()
    unknown = [p / f"{PREFIX}999999999-{os.urandom(4).hex()}" for p in parents]
    for d in unknown:
        d.mkdir()
    try:
        sweep_now()
        assert all(d.is_dir() for d in unknown), "a run cgroup of an unknown owner was swept"
    finally:
        for d in unknown:
            if d.exists():
                d.rmdir()


@needs_pidns
def test_two_agents_in_different_pid_namespaces_run_sandboxes_at_once(workspace: Path) -> None:
    """The measured failure: while another agent (own pid namespace) makes and sweeps run cgroups
    over and over, every one of our sandboxed runs starts and runs, and its live run cgroup stays."""
    box = Sandbox.probe(workspace)
    if box.level == "rlimits":
        pytest.skip("no sandbox works here")
    churn, held = OtherAgent("churn", pidns=True), OtherAgent("hold", pidns=False)
    try:
        results = [box.run_python(["-c", f"print({i})"], cwd=workspace) for i in range(8)]
        assert [r.stdout.strip() for r in results] == [str(i) for i in range(8)], [r.stderr for r in results]
        assert all(d.is_dir() for d in held.dirs)
    finally:
        churn.end()
        held.end()


# -- part 2: a sandbox that cannot start --------------------------------------------------------

class LaunchFault:
    """Launches fail while ``failing(n)`` (n counts launches from 1): ``launcher``, the launcher is
    handed a cgroup that does not exist (what it met when another agent had swept its cgroup);
    ``cgroup_removed`` (root), the run's real cgroup is removed between its creation and the launch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kind: str, failing) -> None:
        self.launches, self.failing = 0, failing
        if kind == "launcher":
            original = Sandbox._config

            def config(box, *args, **kwargs):
                cfg = original(box, *args, **kwargs)
                if self._fails():
                    cfg["cgroups"] = [*cfg["cgroups"], MISSING_CGROUP]
                return cfg
            monkeypatch.setattr(Sandbox, "_config", config)
        else:
            if os.geteuid() != 0 or not available():
                pytest.skip("run cgroups are made only as root")
            create = RunCgroup.create.__func__

            def removed(cls, memory, pids):
                made = create(cls, memory, pids)
                if made is not None and self._fails():
                    for d in set(made.dirs.values()):
                        d.rmdir()
                return made
            monkeypatch.setattr(RunCgroup, "create", classmethod(removed))

    def _fails(self) -> bool:
        self.launches += 1
        return bool(self.failing(self.launches))


FAULTS = ["launcher", "cgroup_removed"]
ONCE, ALWAYS = (lambda n: n == 1), (lambda n: True)


@pytest.fixture
def agent(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> AutonomousAgent:
    """An agent with a working skill (made by a directive), every run cold (one launch a run)."""
    if available_levels()[0] == "rlimits":
        pytest.skip("no sandbox works on this machine: generated code is refused")
    monkeypatch.setenv("AGENT_WARM_SANDBOX", "off")
    agent = AutonomousAgent(workspace=workspace, model=FakeModel([PLAN, GOOD]))
    assert agent.run("Create a skill that adds two numbers").status == "working"
    return agent


@pytest.mark.parametrize("kind", FAULTS)
def test_a_start_that_fails_once_is_made_again(agent: AutonomousAgent, monkeypatch, kind: str) -> None:
    fault = LaunchFault(monkeypatch, kind, ONCE)
    report = agent.retest("add_numbers")
    assert report["ok"], report["error"]
    assert agent.memory.get_skill("add_numbers")["status"] == "working" and fault.launches == 2


@pytest.mark.parametrize("kind", FAULTS)
def test_a_retest_that_cannot_start_leaves_a_working_skill_working(agent: AutonomousAgent, monkeypatch,
                                                                    kind: str) -> None:
    before = agent.memory.get_skill("add_numbers")
    LaunchFault(monkeypatch, kind, ALWAYS)
    with pytest.raises(SandboxDidNotStart, match="sandbox could not start") as caught:
        agent.retest("add_numbers")
    assert "\n" not in str(caught.value)
    after = agent.memory.get_skill("add_numbers")
    assert (after["status"], after.get("last_tested")) == ("working", before.get("last_tested"))


@pytest.mark.parametrize("kind", FAULTS)
def test_a_call_that_cannot_start_says_so(agent: AutonomousAgent, monkeypatch, kind: str) -> None:
    LaunchFault(monkeypatch, kind, ALWAYS)
    with pytest.raises(SandboxDidNotStart, match="sandbox could not start"):
        agent.call("add_numbers", 2, 3)


@pytest.mark.parametrize("kind", FAULTS)
def test_probes_that_cannot_start_are_not_no_results(agent: AutonomousAgent, monkeypatch, kind: str) -> None:
    code = agent.library.source("add_numbers")
    LaunchFault(monkeypatch, kind, ALWAYS)
    with pytest.raises(SandboxDidNotStart, match="sandbox could not start"):
        agent.observe("add_numbers", code, ["add_numbers(1, 1)"])


@pytest.mark.parametrize("kind", FAULTS)
def test_a_directive_whose_sandbox_cannot_start_stays_pending_and_resumes(workspace: Path, monkeypatch,
                                                                           kind: str) -> None:
    if available_levels()[0] == "rlimits":
        pytest.skip("no sandbox works on this machine: generated code is refused")
    monkeypatch.setenv("AGENT_WARM_SANDBOX", "off")
    fault = LaunchFault(monkeypatch, kind, ALWAYS)
    agent = AutonomousAgent(workspace=workspace, model=FakeModel([PLAN, GOOD]))
    result = agent.run("Create a skill that adds two numbers")
    assert (result.status, result.reason) == ("pending", "sandbox_unavailable"), result.message
    assert "sandbox could not start" in result.message and "\n" not in result.message
    doc = agent.memory.read()
    assert doc["failures"] == [] and agent.memory.get_skill("add_numbers") is None
    fault.failing = lambda n: False   # the machine is back: the same version is tested, no new write
    resumed = agent.resume()
    assert (resumed.status, resumed.iterations) == ("working", 1), resumed.message


def test_bwrap_out_of_namespaces_past_every_retry_is_not_a_result(workspace: Path) -> None:
    class Busy(Sandbox):
        def _run_once(self, args, **kwargs):
            return RunResult(1, "", "bwrap: Creating new namespace failed: Resource temporarily unavailable",
                             False, "bwrap", 0.01, False)

    busy = Busy(workspace.resolve(), "bwrap")
    with pytest.raises(SandboxDidNotStart, match="Creating new namespace failed"):
        busy.run_python(["-c", "print('ran')"], cwd=workspace)


def test_the_launcher_s_own_failure_is_told_from_the_code_s(workspace: Path, monkeypatch) -> None:
    """Code that exits 126 and prints the launcher's words is a failed run, not a failed start:
    the launcher's failure comes on a pipe the code never holds."""
    box = Sandbox.probe(workspace)
    if box.level == "rlimits":
        pytest.skip("no sandbox works here")
    fake = "import sys; sys.stderr.write('sandbox launcher: join failed\\n'); sys.exit(126)"
    result = box.run_python(["-c", fake], cwd=workspace)
    assert result.returncode == 126
    LaunchFault(monkeypatch, "launcher", ALWAYS)
    with pytest.raises(SandboxDidNotStart, match="No such file or directory"):
        box.run_python(["-c", "print('ran')"], cwd=workspace)


def test_no_run_cgroup_or_lock_is_left_by_failed_starts(workspace: Path, monkeypatch) -> None:
    if os.geteuid() != 0 or not available():
        pytest.skip("run cgroups are made only as root")
    box = Sandbox.probe(workspace)
    LaunchFault(monkeypatch, "launcher", ALWAYS)
    with pytest.raises(SandboxDidNotStart):
        box.run_python(["-c", "print('ran')"], cwd=workspace)
    mine = f"{PREFIX}{os.getpid()}-"
    left = [e for e in safety.cgroup.leftovers() if e.name.startswith(mine)]
    left += [e for d in getattr(safety.cgroup, "LOCK_DIRS", ()) if d.is_dir() for e in d.iterdir()
             if e.name.startswith(mine)]
    assert left == []
