"""The wiring of the loop. Reads top to bottom:

    START → plan ─┬→ write → run_tests → analyze ─┬→ save → END      (done)
                  │    ↑_________________________ │                   (retry)
                  └→ END (no plan)                └→ END              (stop: cap, no progress, blocked)
"""

from __future__ import annotations

from functools import partial

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agent import nodes
from agent.nodes import Deps
from agent.state import LoopState


def build_graph(deps: Deps, *, checkpointer: BaseCheckpointSaver | None = None):
    """Compile the plan → write → test → analyze loop around the injected dependencies."""
    graph = StateGraph(LoopState)
    graph.add_node("plan", partial(nodes.plan, deps=deps))
    graph.add_node("write", partial(nodes.write, deps=deps))
    graph.add_node("run_tests", partial(nodes.run_tests, deps=deps))
    graph.add_node("analyze", partial(nodes.analyze, deps=deps))
    graph.add_node("save", partial(nodes.save, deps=deps))

    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", nodes.route_after_plan, {"write": "write", "stop": END})
    graph.add_edge("write", "run_tests")
    graph.add_edge("run_tests", "analyze")
    graph.add_conditional_edges("analyze", nodes.route_after_analyze,
                                {"done": "save", "retry": "write", "stop": END})
    graph.add_edge("save", END)
    return graph.compile(checkpointer=checkpointer)


def recursion_limit(max_iterations: int) -> int:
    """LangGraph's step budget for one directive: 3 steps an iteration, plus plan and save."""
    return 3 * max_iterations + 5
