"""Fake model servers on 127.0.0.1 for tests: the Ollama wire format and an OpenAI-compatible one.

Use the fixtures (import them into a test module, or list this module in ``pytest_plugins``)::

    def test_x(ollama_server):
        server = ollama_server(tags=["qwen2.5-coder:7b"], replies=["def f(): ..."])
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        ...
        server.enqueue("second reply")
        assert server.requests[0].body["options"]["num_ctx"] == 4096

A reply is a string (streamed in small pieces, or sent whole when the client asks for no
streaming) or an ``ErrorReply(status, message)``. Running out of replies answers HTTP 500 with
"fake server ran out of scripted replies" and is recorded in ``server.errors``.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

OUT_OF_REPLIES = "fake server ran out of scripted replies"


@dataclass(frozen=True)
class ErrorReply:
    """A scripted HTTP error, in the server's own error format."""

    status: int
    message: str


@dataclass(frozen=True)
class RawReply:
    """A scripted raw stream: these lines as they are (malformed ones included), ``delay`` s apart."""

    lines: tuple[bytes, ...]
    delay: float = 0.0


class Hold:
    """A scripted reply that never comes until ``release()``: ``arrived`` is set when a request
    takes it, so a test knows the client is waiting on the model (a directive is running)."""

    def __init__(self) -> None:
        self.arrived, self.released = threading.Event(), threading.Event()

    def release(self) -> None:
        self.released.set()


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None


def pieces(text: str) -> list[str]:
    """Split a reply into stream chunks the way a tokenizer roughly would (words + spaces)."""
    return re.findall(r"\s*\S+|\s+", text) or [""]


class FakeServer:
    """An HTTP server in a daemon thread; subclasses implement ``route``."""

    def __init__(self, replies: list[str | ErrorReply] | None = None) -> None:
        self.queue: deque[str | ErrorReply | RawReply | Hold] = deque()
        self.holds: list[Hold] = []
        self.requests: list[Recorded] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        self.enqueue(*replies or [])

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enqueue(self, *replies: str | ErrorReply | RawReply | Hold) -> FakeServer:
        with self._lock:
            self.queue.extend(replies)
            self.holds.extend(reply for reply in replies if isinstance(reply, Hold))
        return self

    def next_reply(self) -> str | ErrorReply | RawReply | Hold:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        self.errors.append(OUT_OF_REPLIES)
        return ErrorReply(500, OUT_OF_REPLIES)

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies of every request to ``path``."""
        return [r.body for r in self.requests if r.path == path]

    def close(self) -> None:
        for hold in self.holds:  # a held reply's handler thread ends
            hold.release()
        self._httpd.shutdown()
        self._httpd.server_close()

    def route(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:  # pragma: no cover
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                req = Recorded(self.command, self.path.split("?")[0], dict(self.headers), body)
                server.requests.append(req)
                server.route(self, req)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        return Handler


def send_json(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def send_stream(h: BaseHTTPRequestHandler, content_type: str, lines: Iterator[bytes]) -> None:
    """A streamed body (NDJSON or SSE), ended by closing the connection (HTTP/1.0 style)."""
    h.send_response(200)
    h.send_header("Content-Type", content_type)
    h.end_headers()
    for line in lines:
        h.wfile.write(line)
        h.wfile.flush()


# --- Ollama ----------------------------------------------------------------------------------

class FakeOllama(FakeServer):
    """``GET /api/version``, ``GET /api/tags``, ``POST /api/chat``, ``POST /api/generate``."""

    def __init__(self, tags: list[str] | None = None,
                 replies: list[str | ErrorReply] | None = None) -> None:
        self.tags = list(tags or [])
        super().__init__(replies)

    def known(self, model: str) -> bool:
        full = model if ":" in model else f"{model}:latest"
        return full in self.tags or model in self.tags

    def route(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        if req.path == "/api/version":
            return send_json(h, 200, {"version": "0.6.3-fake"})
        if req.path == "/api/tags":
            return send_json(h, 200, {"models": [self._tag_entry(t) for t in self.tags]})
        if req.path in ("/api/chat", "/api/generate") and req.method == "POST":
            return self._generate(h, req)
        send_json(h, 404, {"error": f"unknown path {req.path}"})

    @staticmethod
    def _tag_entry(tag: str) -> dict[str, Any]:
        return {"name": tag, "model": tag, "modified_at": "2025-01-01T00:00:00Z",
                "size": 4_683_087_332, "digest": "0" * 64,
                "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B",
                            "quantization_level": "Q4_K_M"}}

    def _generate(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        model = req.body.get("model", "")
        if not self.known(model):
            return send_json(h, 404, {"error": f'model "{model}" not found, try pulling it first'})
        reply = self.next_reply()
        if isinstance(reply, ErrorReply):
            return send_json(h, reply.status, {"error": reply.message})
        if isinstance(reply, Hold):
            reply.arrived.set()
            reply.released.wait()
            with contextlib.suppress(OSError):  # the client is usually gone by now
                send_json(h, 500, {"error": "held reply released"})
            return None
        if isinstance(reply, RawReply):
            def raw() -> Iterator[bytes]:
                for line in reply.lines:
                    time.sleep(reply.delay)
                    yield line
            return send_stream(h, "application/x-ndjson", raw())
        chat = req.path == "/api/chat"
        asked = json.dumps(req.body.get("messages") if chat else req.body.get("prompt"))
        parts = pieces(reply)
        final = {"model": model, "created_at": "2025-01-01T00:00:00Z", "done": True,
                 "done_reason": "stop", "total_duration": 1_000_000, "load_duration": 1000,
                 "prompt_eval_count": len(asked.split()), "prompt_eval_duration": 1000,
                 "eval_count": len(parts), "eval_duration": 1000}
        if req.body.get("stream", True) is False:
            return send_json(h, 200, {**final, **self._piece(chat, reply)})

        def lines() -> Iterator[bytes]:
            for part in parts:
                chunk = {"model": model, "created_at": "2025-01-01T00:00:00Z", "done": False}
                yield (json.dumps({**chunk, **self._piece(chat, part)}) + "\n").encode()
            yield (json.dumps({**final, **self._piece(chat, "")}) + "\n").encode()

        send_stream(h, "application/x-ndjson", lines())

    @staticmethod
    def _piece(chat: bool, text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}


# --- OpenAI-compatible -----------------------------------------------------------------------

class FakeOpenAI(FakeServer):
    """``GET /v1/models`` and ``POST /v1/chat/completions``; 401 unless the bearer key matches."""

    def __init__(self, models: list[str] | None = None, replies: list[str | ErrorReply] | None = None,
                 *, key: str | None = None, usage_in_stream: bool = True,
                 structured_outputs: bool = True) -> None:
        self.models = list(models or [])
        self.key = key
        self.usage_in_stream = usage_in_stream  # False: 400 on stream_options, like old servers
        self.structured_outputs = structured_outputs  # False: 400 on response_format
        super().__init__(replies)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def route(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        if self.key is not None and h.headers.get("Authorization") != f"Bearer {self.key}":
            return self._error(h, 401, "Incorrect API key provided", "invalid_api_key")
        if req.path == "/v1/models":
            return send_json(h, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})
        if req.path == "/v1/chat/completions" and req.method == "POST":
            return self._complete(h, req)
        self._error(h, 404, f"unknown path {req.path}", "not_found")

    @staticmethod
    def _error(h: BaseHTTPRequestHandler, status: int, message: str, code: str) -> None:
        send_json(h, status, {"error": {"message": message, "type": "invalid_request_error",
                                        "param": None, "code": code}})

    def _complete(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        model = req.body.get("model", "")
        if model not in self.models:
            return self._error(h, 404, f"The model `{model}` does not exist", "model_not_found")
        if "stream_options" in req.body and not self.usage_in_stream:
            return self._error(h, 400, "Unrecognized request argument: stream_options", "bad")
        if "response_format" in req.body and not self.structured_outputs:
            return self._error(h, 400, "response_format json_schema is not supported", "bad")
        reply = self.next_reply()
        if isinstance(reply, ErrorReply):
            return self._error(h, reply.status, reply.message, "scripted")
        parts = pieces(reply)
        usage = {"prompt_tokens": len(json.dumps(req.body["messages"]).split()),
                 "completion_tokens": len(parts)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": "chatcmpl-fake", "created": 0, "model": model}
        if not req.body.get("stream"):
            return send_json(h, 200, {**head, "object": "chat.completion", "usage": usage,
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant",
                                                               "content": reply}}]})
        want_usage = (req.body.get("stream_options") or {}).get("include_usage")

        def events() -> Iterator[bytes]:
            def event(choices: list[Any], **more: Any) -> bytes:
                payload = {**head, "object": "chat.completion.chunk", "choices": choices, **more}
                return f"data: {json.dumps(payload)}\n\n".encode()
            for part in parts:
                yield event([{"index": 0, "delta": {"role": "assistant", "content": part},
                              "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if want_usage:
                yield event([], usage=usage)
            yield b"data: [DONE]\n\n"

        send_stream(h, "text/event-stream", events())


# --- fixtures --------------------------------------------------------------------------------

def _factory(cls: type[FakeServer]) -> Iterator[Callable[..., Any]]:
    started: list[FakeServer] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        server = cls(*args, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def ollama_server() -> Iterator[Callable[..., FakeOllama]]:
    """Factory: ``ollama_server(tags=[...], replies=[...]) -> FakeOllama`` (closed after the test)."""
    yield from _factory(FakeOllama)


@pytest.fixture
def openai_server() -> Iterator[Callable[..., FakeOpenAI]]:
    """Factory: ``openai_server(models=[...], replies=[...], key=...) -> FakeOpenAI``."""
    yield from _factory(FakeOpenAI)


def closed_port_url() -> str:
    """A 127.0.0.1 URL where nothing listens (a port bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
