"""The one model interface the graph takes. Every backend (ollama, embedded, gguf, openai) and the
tests' scripted fake implement it; no node constructs a model.

A model is either *chat* capable (it has a chat template: it takes ``messages``) or a plain
*completion* model (a base model such as Gemma 3 270M: it takes a raw ``prompt`` and continues
it). The nodes pick the prompt style from ``Model.chat``, never from the backend's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

TokenCallback = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    """One generation request. Exactly one of ``messages`` / ``prompt`` is set."""

    messages: list[dict[str, str]] | None = None  # chat models: [{"role": ..., "content": ...}]
    prompt: str | None = None  # completion models: raw text to continue
    stop: tuple[str, ...] = ()  # stop sequences (not included in the returned text)
    temperature: float = 0.2
    max_tokens: int = 1024
    # The reply must be JSON matching this JSON Schema. Backends enforce it where they can
    # (Ollama ``format``, OpenAI ``response_format``, a llama.cpp grammar); callers still parse.
    schema: dict | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("Request needs exactly one of messages or prompt")


@dataclass(frozen=True)
class Completion:
    """What a model returned, with the accounting every call records."""

    text: str
    tokens_in: int
    tokens_out: int
    seconds: float
    model: str = ""
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    """A loaded model. ``generate`` streams tokens to ``on_token`` (if given) while it runs."""

    name: str  # e.g. "ollama:qwen2.5-coder:7b", "embedded:gemma3-270m"
    chat: bool  # True: takes Request.messages; False: takes Request.prompt

    def generate(self, request: Request, on_token: TokenCallback | None = None) -> Completion:
        """Run one request. Raises agent.errors.ModelUnavailable for anything the user must fix."""
        ...
