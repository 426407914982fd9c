"""Helpers every backend shares: the timing/accounting meter, request shaping, one-line errors."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from agent.errors import ModelUnavailable
from agent.llm.base import Completion, Model, Request, TokenCallback


def estimate_tokens(text: str) -> int:
    """A deliberately generous token estimate (≈ 3 characters a token), for sizing and fallbacks."""
    return math.ceil(len(text) / 3)


def as_messages(request: Request) -> list[dict[str, str]]:
    """The request as chat messages (a raw prompt becomes one user message)."""
    if request.messages is not None:
        return request.messages
    return [{"role": "user", "content": request.prompt or ""}]


def as_prompt(request: Request) -> str:
    """The request as one completion prompt (chat messages are joined by blank lines)."""
    if request.prompt is not None:
        return request.prompt
    return "\n\n".join(m["content"] for m in request.messages or [])


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Drop the first stop sequence and what follows (servers usually do; this makes it certain)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def one_line(message: str) -> str:
    """Collapse whitespace so an error message always prints as one line."""
    return " ".join(str(message).split())


def unavailable(message: str) -> ModelUnavailable:
    """A ModelUnavailable whose text is guaranteed to be one line."""
    return ModelUnavailable(one_line(message))


@dataclass
class Meter:
    """Times one generation, forwards streamed pieces to ``on_token`` and builds the Completion.

    Every backend feeds it the text pieces as they arrive and calls ``finish`` with the token
    counts it knows; the wall time is measured here, once, the same way for all of them.
    """

    model: str
    on_token: TokenCallback | None = None
    pieces: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def feed(self, piece: str | None) -> None:
        """Record one streamed piece of text and pass it on."""
        if not piece:
            return
        self.pieces.append(piece)
        if self.on_token is not None:
            self.on_token(piece)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def finish(self, request: Request, tokens_in: int | None, tokens_out: int | None,
               **extra: object) -> Completion:
        """The Completion, estimating any token count the backend could not report."""
        seconds = time.perf_counter() - self.started
        text = cut_at_stop(self.text, request.stop)
        if tokens_in is None or tokens_out is None:
            extra["estimated_tokens"] = True
        return Completion(
            text=text,
            tokens_in=tokens_in if tokens_in is not None else estimate_tokens(as_prompt(request)),
            tokens_out=tokens_out if tokens_out is not None else estimate_tokens(text),
            seconds=seconds,
            model=self.model,
            extra=dict(extra),
        )


class Deadline:
    """A model whose every call ends within ``seconds``, however slowly its tokens trickle in.

    Checked as each piece arrives (a server that stalls completely is cut off by the backend's own
    read timeout, which ``load_model`` sets to the same figure).
    """

    def __init__(self, model: Model, seconds: float) -> None:
        self.model, self.seconds = model, seconds
        self.name, self.chat = model.name, model.chat

    def generate(self, request: Request, on_token: TokenCallback | None = None) -> Completion:
        started = time.monotonic()

        def watch(piece: str) -> None:
            if time.monotonic() - started > self.seconds:
                raise unavailable(f"{self.name} gave no complete reply within {self.seconds:g} s "
                                  "(raise --model-timeout / AGENT_MODEL_TIMEOUT, or use a faster model)")
            if on_token is not None:
                on_token(piece)

        return self.model.generate(request, on_token=watch)
