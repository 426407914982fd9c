"""Ollama backend, through the official ``ollama`` client (host from ``OLLAMA_HOST``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import ollama

from agent.errors import ModelUnavailable
from agent.llm.base import Completion, Request, TokenCallback
from agent.llm.common import Meter, as_prompt, estimate_tokens, one_line, unavailable

DEFAULT_HOST = "http://127.0.0.1:11434"
MIN_CTX = 4096
MAX_CTX = 32768
CONNECT_TIMEOUT_S = 3.0
# Generation on a CPU-only box (plus a cold model load) can take minutes; only connecting is fast.
READ_TIMEOUT_S = 600.0


def ollama_host(host: str | None = None) -> str:
    """The server URL: the argument, else ``OLLAMA_HOST``, else the local default."""
    chosen = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    return chosen if "://" in chosen else f"http://{chosen}"


def num_ctx_for(request: Request) -> int:
    """A context window big enough for prompt + reply: Ollama's default silently truncates.

    Estimated as chars/3 + max_tokens, rounded up to a power of two, within [4096, 32768].
    """
    needed = estimate_tokens(as_prompt(request)) + request.max_tokens
    size = MIN_CTX
    while size < needed and size < MAX_CTX:
        size *= 2
    return size


def same_tag(a: str, b: str) -> bool:
    """Ollama names without a tag mean ``:latest``."""
    def norm(t: str) -> str:
        return t if ":" in t.rsplit("/", 1)[-1] else f"{t}:latest"
    return norm(a) == norm(b)


def pulled_tags(client: ollama.Client) -> list[str]:
    """The model tags the server has pulled."""
    return [m.model for m in client.list().models if m.model]


def make_client(host: str, timeout: float | httpx.Timeout | None = None) -> ollama.Client:
    """An ``ollama.Client`` that fails fast when nothing listens but waits for slow generations."""
    return ollama.Client(host=host,
                         timeout=timeout or httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))


def as_unavailable(err: Exception, host: str, tag: str) -> ModelUnavailable:
    """Turn a client/transport error into the one-line message that says what to run."""
    if isinstance(err, (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)):
        return unavailable(f"No Ollama server answers at {host}; start it with `ollama serve` "
                           "(or point OLLAMA_HOST at a running one).")
    if isinstance(err, ollama.ResponseError):
        if err.status_code == 404 or "not found" in str(err.error).lower():
            return unavailable(f"Model {tag} is not pulled on the Ollama server at {host}; "
                               f"run `ollama pull {tag}`.")
        return unavailable(f"Ollama at {host} failed on {tag}: {one_line(err.error)} "
                           f"(HTTP {err.status_code}).")
    if isinstance(err, httpx.TimeoutException):
        return unavailable(f"Ollama at {host} did not answer in time ({type(err).__name__}); "
                           "check the server (`ollama ps`) or use a smaller model.")
    return unavailable(f"Lost the connection to Ollama at {host} ({type(err).__name__}); "
                       "check that `ollama serve` is still running.")


_TRANSPORT_ERRORS = (ConnectionError, ollama.ResponseError, httpx.TransportError)


class OllamaModel:
    """A model served by Ollama. Chat-capable: Ollama applies the model's own template."""

    chat = True

    def __init__(self, tag: str, *, host: str | None = None, client: Any = None,
                 read_timeout: float | None = None) -> None:
        self.tag = tag
        self.host = ollama_host(host)
        self.name = f"ollama:{tag}"
        timeout = httpx.Timeout(read_timeout or READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self._client = client if client is not None else make_client(self.host, timeout)

    def _options(self, request: Request) -> dict[str, Any]:
        options: dict[str, Any] = {"num_ctx": num_ctx_for(request),
                                   "temperature": request.temperature,
                                   "num_predict": request.max_tokens}
        if request.stop:
            options["stop"] = list(request.stop)
        return options

    def _stream(self, request: Request) -> Iterator[Any]:
        """Chat endpoint for messages, generate endpoint for a raw prompt."""
        extra: dict[str, Any] = {"options": self._options(request), "stream": True}
        if request.schema is not None:
            extra["format"] = request.schema  # structured outputs: the server constrains decoding
        if request.messages is not None:
            return self._client.chat(model=self.tag, messages=request.messages, **extra)
        return self._client.generate(model=self.tag, prompt=request.prompt, **extra)

    def generate(self, request: Request, on_token: TokenCallback | None = None) -> Completion:
        """Stream one reply; tokens in/out come from the server's final ``done`` chunk."""
        meter = Meter(self.name, on_token)
        last: Any = None
        try:
            for chunk in self._stream(request):
                piece = chunk.message.content if request.messages is not None else chunk.response
                meter.feed(piece)
                last = chunk
        except _TRANSPORT_ERRORS as err:
            raise as_unavailable(err, self.host, self.tag) from err
        except (ValueError, TypeError, KeyError, AttributeError) as err:  # bad JSON lines, wrong shapes
            raise unavailable(f"Ollama at {self.host} sent a malformed reply for {self.tag} "
                              f"({type(err).__name__}); check the server and its version.") from err
        if last is None or not getattr(last, "done", False):
            raise unavailable(f"Ollama at {self.host} ended the reply for {self.tag} before it was done "
                              "(no final chunk); check the server.")
        return meter.finish(
            request,
            tokens_in=getattr(last, "prompt_eval_count", None),
            tokens_out=getattr(last, "eval_count", None),
            num_ctx=num_ctx_for(request),
            done_reason=getattr(last, "done_reason", None),
        )
