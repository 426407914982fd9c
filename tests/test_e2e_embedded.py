"""End to end on the real embedded model (Gemma 3 270M via llama.cpp), the real loop and the real
sandbox, started the way a user starts it. Slow-ish (seconds), so marked; CI runs it."""

from __future__ import annotations

import io
import json

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from agent.memory import check
from autonomous_agent import main

pytestmark = pytest.mark.embedded

DIRECTIVE = ":directive Create a skill `to_upper(text: str) -> str` that converts text to upper case, " \
            "e.g. to_upper('abc') == 'ABC'"


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    """Assemble the GGUF into a temp cache (under a second), never into the real home."""
    monkeypatch.setenv("AGENT_CACHE_DIR", str(tmp_path / "model-cache"))


def test_directive_on_the_embedded_model_makes_a_working_skill(workspace, model_cache):
    buffer = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.close()
        code = main(["--workspace", str(workspace), "--model", "embedded", "-c", DIRECTIVE, "-c", ":skills"],
                    input=pipe, output=PlainTextOutput(buffer))
    out = buffer.getvalue()
    assert code == 0, out
    assert "model:   embedded:gemma3-270m (completion prompts)" in out
    assert "✅ to_upper is working" in out, out
    module = (workspace / "skills" / "to_upper.py").read_text()
    assert "def to_upper(text: str) -> str:" in module and ">>> to_upper('abc')" in module
    assert "got = to_upper('abc')\n    assert got == 'ABC'" in (
        workspace / "skills" / "tests" / "test_to_upper.py").read_text()
    memory = json.loads((workspace / "memory.json").read_text())
    check(memory)  # the file on disk validates against the schema
    assert memory["skills"][0]["status"] == "working"
    assert memory["directives"][0]["status"] == "done"


def test_a_goal_in_plain_words_gets_a_named_skill_an_honest_status_and_a_question(workspace, model_cache):
    """The seed's own example, with no signature and no examples: never ``no_plan``."""
    buffer = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text(":directive Create a JSON validator skill\r" + "y\r" * 3 + ":skills\r:quit\r")
        pipe.close()
        code = main(["--workspace", str(workspace), "--model", "embedded"], input=pipe,
                    output=PlainTextOutput(buffer))
    out = buffer.getvalue()
    assert code == 0 and "Traceback" not in out, out
    assert "no usable plan" not in out
    memory = json.loads((workspace / "memory.json").read_text())
    check(memory)
    assert memory["skills"], out
    skill = memory["skills"][0]
    assert "json" in skill["name"] and skill["signature"].startswith(skill["name"] + "(")
    directive = memory["directives"][0]
    assert directive["status"] in ("done", "failed") and directive["reason"] in ("passed", "iteration_cap",
                                                                                 "no_progress")
    if directive["reason"] == "passed":
        # it passed without expected values, so the user was asked; answering yes made it evidence
        assert "Are these right?" in out
        assert skill["status"] == "working" and skill["evidence"]["confirmed"] >= 1
        assert f"{skill['name']}  working" in out
