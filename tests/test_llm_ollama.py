"""The Ollama backend through the real ``ollama`` client, against a fake server on 127.0.0.1."""

from __future__ import annotations

import json
import time

import pytest

from agent.errors import ModelUnavailable
from agent.llm import load_model
from agent.llm.base import Model, Request
from agent.llm.common import Deadline
from agent.llm.ollama import OllamaModel, num_ctx_for, ollama_host
from tests.llm_servers import ErrorReply, RawReply, closed_port_url, ollama_server  # noqa: F401

TAG = "qwen2.5-coder:7b"
ASK = Request(messages=[{"role": "user", "content": "Write add(a, b)."}], max_tokens=64)


@pytest.fixture
def server(ollama_server, monkeypatch):  # noqa: F811
    srv = ollama_server(tags=[TAG])
    monkeypatch.setenv("OLLAMA_HOST", srv.url)
    return srv


def test_chat_reply_with_accounting(server):
    server.enqueue("def add(a, b):\n    return a + b\n")
    model = load_model(f"ollama:{TAG}")
    done = model.generate(ASK)
    assert isinstance(model, Model) and model.chat and model.name == f"ollama:{TAG}"
    assert done.text == "def add(a, b):\n    return a + b\n"
    assert done.tokens_in > 0 and done.tokens_out == 8 and done.seconds >= 0
    body = server.bodies("/api/chat")[0]
    assert body["model"] == TAG and body["messages"] == ASK.messages and body["stream"] is True
    assert body["options"]["temperature"] == ASK.temperature
    assert body["options"]["num_predict"] == 64


def test_streams_each_chunk_to_on_token(server):
    server.enqueue("one two three")
    seen: list[str] = []
    done = OllamaModel(TAG).generate(ASK, on_token=seen.append)
    assert seen == ["one", " two", " three"]
    assert "".join(seen) == done.text


def test_raw_prompt_uses_generate_endpoint_and_stops(server):
    server.enqueue("    return a + b\n")
    done = OllamaModel(TAG).generate(Request(prompt="def add(a, b):\n", stop=("\ndef ",)))
    body = server.bodies("/api/generate")[0]
    assert body["prompt"] == "def add(a, b):\n" and body["options"]["stop"] == ["\ndef "]
    assert done.text == "    return a + b\n"


def test_num_ctx_grows_with_the_prompt(server):
    server.enqueue("ok", "ok")
    model = OllamaModel(TAG)
    model.generate(Request(prompt="short", max_tokens=512))
    model.generate(Request(prompt="x" * 30_000, max_tokens=1024))  # ~10k tokens + 1k reply
    sent = [b["options"]["num_ctx"] for b in server.bodies("/api/generate")]
    assert sent == [4096, 16384]


@pytest.mark.parametrize(("chars", "expected"), [(0, 4096), (12_000, 8192), (10**7, 32768)])
def test_num_ctx_bounds(chars, expected):
    assert num_ctx_for(Request(prompt="x" * chars, max_tokens=1024)) == expected


def test_server_down_names_host_and_ollama_serve(monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("OLLAMA_HOST", url)
    with pytest.raises(ModelUnavailable) as err:
        load_model(f"ollama:{TAG}").generate(ASK)
    message = str(err.value)
    assert url in message and "ollama serve" in message and "\n" not in message


def test_model_not_pulled_says_ollama_pull(server):
    with pytest.raises(ModelUnavailable) as err:
        OllamaModel("llama3:70b").generate(ASK)
    assert "ollama pull llama3:70b" in str(err.value) and "\n" not in str(err.value)


def test_server_error_is_one_line(server):
    server.enqueue(ErrorReply(500, "model requires more system memory\n(12 GiB) than is available"))
    with pytest.raises(ModelUnavailable) as err:
        OllamaModel(TAG).generate(ASK)
    assert "more system memory" in str(err.value) and "\n" not in str(err.value)


def test_explicit_host_beats_the_environment(ollama_server):  # noqa: F811
    srv = ollama_server(tags=[TAG], replies=["hi"])
    assert load_model(f"ollama:{TAG}", ollama_host=srv.url).generate(ASK).text == "hi"


def test_host_normalisation(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11434/")
    assert ollama_host() == "http://127.0.0.1:11434"
    monkeypatch.delenv("OLLAMA_HOST")
    assert ollama_host() == "http://127.0.0.1:11434"


# ---- structured outputs, malformed streams, deadlines ---------------------------------------------

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_a_schema_is_sent_as_ollama_format(server):
    server.enqueue('{"name": "f"}', "plain")
    model = OllamaModel(TAG)
    model.generate(Request(messages=ASK.messages, schema=SCHEMA))
    model.generate(ASK)
    first, second = server.bodies("/api/chat")
    assert first["format"] == SCHEMA and "format" not in second


def _line(**fields) -> bytes:
    return (json.dumps({"model": TAG, "created_at": "2025-01-01T00:00:00Z", **fields}) + "\n").encode()


@pytest.mark.parametrize("lines, says", [
    ((_line(message={"role": "assistant", "content": "hi"}, done=False), b"{not json\n"), "malformed"),
    ((b"[1, 2, 3]\n",), "malformed"),
    ((_line(message={"role": "assistant", "content": 7}, done=False),), "malformed"),
    ((_line(message={"role": "assistant", "content": "half a rep"}, done=False),), "before it was done"),
    ((), "before it was done"),
])
def test_malformed_or_unfinished_streams_are_one_line_errors(server, lines, says):
    server.enqueue(RawReply(lines))
    with pytest.raises(ModelUnavailable) as caught:
        OllamaModel(TAG).generate(ASK)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(server):
    trickle = tuple(_line(message={"role": "assistant", "content": "x"}, done=False) for _ in range(30))
    server.enqueue(RawReply(trickle, delay=0.1))
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="no complete reply within 0.5 s"):
        Deadline(OllamaModel(TAG), 0.5).generate(ASK)
    assert time.monotonic() - started < 2.5
