"""Any OpenAI-compatible server (vLLM, llama-server, LM Studio, OpenRouter) via ``openai``.

Base URL from ``OPENAI_BASE_URL`` (default a local server on port 8000), key from
``OPENAI_API_KEY`` (local servers ignore it, so a placeholder is used when it is unset).
"""

from __future__ import annotations

import os
from typing import Any

import openai

from agent.errors import ModelUnavailable
from agent.llm.base import Completion, Request, TokenCallback
from agent.llm.common import Meter, as_messages, one_line, unavailable

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
PLACEHOLDER_KEY = "not-needed"
# Connecting must fail fast on a dead server; a long generation must not be cut off.
TIMEOUT = openai.Timeout(600.0, connect=3.0)


def as_unavailable(err: Exception, base_url: str, model: str) -> ModelUnavailable:
    """Turn an ``openai`` error into the one-line message that says what to fix."""
    if isinstance(err, openai.APITimeoutError):
        return unavailable(f"The server at {base_url} did not answer in time; check it "
                           "(OPENAI_BASE_URL) or use a smaller model.")
    if isinstance(err, openai.APIConnectionError):
        return unavailable(f"No OpenAI-compatible server answers at {base_url}; start it or "
                           "set OPENAI_BASE_URL.")
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return unavailable(f"The server at {base_url} refused the API key (HTTP "
                           f"{err.status_code}); check OPENAI_API_KEY.")
    if isinstance(err, openai.NotFoundError):
        return unavailable(f"The server at {base_url} has no model {model!r} (HTTP 404); "
                           "check the name (GET /v1/models lists them).")
    if isinstance(err, openai.APIStatusError):
        return unavailable(f"The server at {base_url} failed on {model}: "
                           f"{one_line(err.message)} (HTTP {err.status_code}).")
    return unavailable(f"The server at {base_url} failed on {model}: {one_line(str(err))}")


def _rejects_stream_options(err: openai.BadRequestError) -> bool:
    """Some older servers reject ``stream_options``; they are retried without it."""
    return "stream_options" in str(err.message) or "include_usage" in str(err.message)


class OpenAICompatModel:
    """A chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    chat = True

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 client: Any = None, read_timeout: float | None = None) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self._usage_in_stream = True
        self._json_schema = True  # response_format json_schema, until the server refuses it
        try:
            self._client = client if client is not None else openai.OpenAI(
                base_url=self.base_url,
                api_key=api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_KEY,
                timeout=openai.Timeout(read_timeout, connect=3.0) if read_timeout else TIMEOUT,
                max_retries=0,
            )
        except Exception as err:  # noqa: BLE001 - here the client only parses its settings (a bad URL)
            raise unavailable(f"The OpenAI base URL {self.base_url!r} is not a URL ({err}); "
                              "set OPENAI_BASE_URL, e.g. http://127.0.0.1:8000/v1.") from None

    def _open_stream(self, request: Request) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.model, "messages": as_messages(request), "stream": True,
            "temperature": request.temperature, "max_tokens": request.max_tokens,
        }
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.schema is not None and self._json_schema:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "plan", "schema": request.schema}}
        try:
            return self._create(kwargs)
        except openai.BadRequestError:
            if "response_format" not in kwargs:
                raise
            self._json_schema = False  # the server cannot do structured outputs: prompt and parse
            del kwargs["response_format"]
            return self._create(kwargs)

    def _create(self, kwargs: dict[str, Any]) -> Any:
        if self._usage_in_stream:
            try:
                return self._client.chat.completions.create(
                    **kwargs, stream_options={"include_usage": True})
            except openai.BadRequestError as err:
                if not _rejects_stream_options(err):
                    raise
                self._usage_in_stream = False
        return self._client.chat.completions.create(**kwargs)

    def generate(self, request: Request, on_token: TokenCallback | None = None) -> Completion:
        """Stream one reply; usage comes from the final chunk when the server sends it."""
        meter = Meter(self.name, on_token)
        usage = None
        try:
            for chunk in self._open_stream(request):
                if chunk.choices:
                    meter.feed(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
        except openai.OpenAIError as err:
            raise as_unavailable(err, self.base_url, self.model) from err
        except (ValueError, TypeError, KeyError, AttributeError) as err:  # malformed chunks
            raise unavailable(f"The server at {self.base_url} sent a malformed reply for {self.model} "
                              f"({type(err).__name__}); check the server.") from err
        return meter.finish(
            request,
            tokens_in=usage.prompt_tokens if usage else None,
            tokens_out=usage.completion_tokens if usage else None,
        )
