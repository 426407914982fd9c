"""The graph three ways: one node at a time, a whole run, and the drawn wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import nodes
from agent.graph import build_graph
from agent.library import SkillLibrary
from agent.memory import Memory
from agent.nodes import Deps
from safety import SafetyOutcome, TestRun
from safety.policy import Verdict
from tests.conftest import FakeModel
from tests.test_loop import GOOD, PLAN

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.mmd"


def passing(name: str, module: str, tests: str) -> SafetyOutcome:
    """A stand-in for the safety path in node-level tests: every run passes 3 checks."""
    run = TestRun(level="test", passed=3, failed=0, errors=0, returncode=0, timed_out=False,
                  output="3 passed", seconds=0.01)
    return SafetyOutcome(verdict=Verdict(findings=()), blocked=False, reason=None,
                         granted=frozenset(), run=run)


def make_deps(workspace: Path, model: FakeModel, execute=passing) -> Deps:
    events: list = []
    return Deps(model=model, execute=execute, memory=Memory(workspace), library=SkillLibrary(workspace),
                emit=events.append)


def test_plan_node_alone_produces_a_spec(workspace):
    model = FakeModel([PLAN])
    graph = build_graph(make_deps(workspace, model))
    update = graph.nodes["plan"].invoke({"goal": "add two numbers", "max_iterations": 3})
    assert update["spec"]["signature"] == "add_numbers(a: int, b: int) -> int"
    assert update["iteration"] == 0 and update["best_passed"] == -1


def test_write_node_alone_extracts_the_module(workspace):
    model = FakeModel([PLAN, GOOD])
    deps = make_deps(workspace, model)
    spec = nodes.plan({"goal": "add two numbers", "max_iterations": 3}, deps)["spec"]
    update = nodes.write({"goal": "add", "spec": spec, "max_iterations": 3}, deps)
    assert update["iteration"] == 1 and update["fresh_code"] is True
    assert update["code"].startswith("def add_numbers(a: int, b: int) -> int:")
    assert model.history[1].temperature == nodes.temperature(1)


def test_whole_run_with_a_stand_in_sandbox(workspace):
    model = FakeModel([PLAN, GOOD])
    final = build_graph(make_deps(workspace, model)).invoke(
        {"goal": "add two numbers", "max_iterations": 3, "directive_id": None})
    assert final["reason"] == "passed" and final["iteration"] == 1
    assert (workspace / "skills" / "add_numbers.py").read_text().startswith("def add_numbers")


def test_routers_raise_on_the_unexpected():
    assert nodes.route_after_analyze({"reason": None}) == "retry"
    assert nodes.route_after_analyze({"reason": "passed"}) == "done"
    assert nodes.route_after_analyze({"reason": "no_progress"}) == "stop"
    with pytest.raises(ValueError, match="unexpected reason"):
        nodes.route_after_analyze({"reason": "bogus"})  # type: ignore[typeddict-item]


def test_temperature_rises_across_retries_and_is_capped():
    schedule = [nodes.temperature(i) for i in range(1, 13)]
    assert schedule[0] == 0.0 and schedule == sorted(schedule) and max(schedule) == 1.0  # greedy first


def test_drawn_wiring_matches_the_snapshot(workspace):
    drawn = build_graph(make_deps(workspace, FakeModel())).get_graph().draw_mermaid()
    assert drawn == SNAPSHOT.read_text(), "graph wiring changed: review and update tests/snapshots/graph.mmd"
