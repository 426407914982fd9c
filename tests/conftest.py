"""Shared fixtures: the scripted fake model, and isolation from the real home/env/network."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import pytest

from agent.llm.base import Completion, Request, TokenCallback


class FakeModel:
    """A scripted model: ``enqueue`` replies, read back what it was asked in ``history``.

    Replies are returned in order; running out is a test bug and raises. A reply may be an
    exception instance (KeyboardInterrupt too), which is raised instead (to script model failures).
    """

    def __init__(self, replies: list[str | BaseException] | None = None, *, chat: bool = True,
                 name: str = "fake:scripted") -> None:
        self.name = name
        self.chat = chat
        self.queue: deque[str | BaseException] = deque(replies or [])
        self.history: list[Request] = []

    def enqueue(self, *replies: str | BaseException) -> FakeModel:
        self.queue.extend(replies)
        return self

    def generate(self, request: Request, on_token: TokenCallback | None = None) -> Completion:
        self.history.append(request)
        if not self.queue:
            raise AssertionError(f"FakeModel ran out of replies after {len(self.history) - 1} calls")
        reply = self.queue.popleft()
        if isinstance(reply, BaseException):
            raise reply
        if on_token:
            for piece in reply.split(" "):
                on_token(piece + " ")
        text = request.prompt or "\n".join(m["content"] for m in request.messages or [])
        return Completion(text=reply, tokens_in=len(text.split()), tokens_out=len(reply.split()),
                          seconds=0.0, model=self.name)

    def prompts(self) -> list[str]:
        """Every prompt as flat text (chat messages joined), for assertions."""
        return [r.prompt or "\n".join(m["content"] for m in r.messages or []) for r in self.history]


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and every agent setting at a temp dir, so no test touches the real ones."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in list(os.environ):
        if var.startswith(("AGENT_", "OLLAMA_", "OPENAI_")):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)  # a file or pipe's width: 100 unless a test sets it
    # Nothing listens here: any test that forgets to set its own host fails fast, locally.
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    return home


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "agent_workspace"
    ws.mkdir()
    return ws
