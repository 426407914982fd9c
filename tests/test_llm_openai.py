"""The OpenAI-compatible backend through the real ``openai`` client, against a fake server."""

from __future__ import annotations

import pytest

from agent.errors import ModelUnavailable
from agent.llm import load_model
from agent.llm.base import Model, Request
from agent.llm.openai_compat import OpenAICompatModel
from tests.llm_servers import ErrorReply, closed_port_url, openai_server  # noqa: F401

MODEL = "qwen2.5-coder-7b-instruct"
ASK = Request(messages=[{"role": "user", "content": "Write add(a, b)."}], max_tokens=64,
              stop=("\n\n\n",))


@pytest.fixture
def server(openai_server, monkeypatch):  # noqa: F811
    srv = openai_server(models=[MODEL], key="sk-right")
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    return srv


def test_reply_with_usage(server):
    server.enqueue("def add(a, b):\n    return a + b")
    model = load_model(f"openai:{MODEL}")
    done = model.generate(ASK)
    assert isinstance(model, Model) and model.chat and model.name == f"openai:{MODEL}"
    assert done.text == "def add(a, b):\n    return a + b"
    assert done.tokens_out == 7 and done.tokens_in > 0 and "estimated_tokens" not in done.extra
    body = server.bodies("/v1/chat/completions")[0]
    assert body["messages"] == ASK.messages and body["max_tokens"] == 64
    assert body["stop"] == ["\n\n\n"] and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_streams_to_on_token(server):
    server.enqueue("one two three")
    seen: list[str] = []
    done = OpenAICompatModel(MODEL).generate(ASK, on_token=seen.append)
    assert seen == ["one", " two", " three"] and done.text == "one two three"


def test_server_without_stream_options_still_works(openai_server, monkeypatch):  # noqa: F811
    srv = openai_server(models=[MODEL], replies=["a b", "c"], usage_in_stream=False)
    model = OpenAICompatModel(MODEL, base_url=srv.base_url)
    done = model.generate(ASK)
    assert done.text == "a b" and done.extra["estimated_tokens"] is True
    assert model.generate(ASK).text == "c"
    assert ["stream_options" in b for b in srv.bodies("/v1/chat/completions")] == [True, False, False]


def test_base_url_down_names_it_and_the_variable(monkeypatch):
    url = closed_port_url() + "/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    with pytest.raises(ModelUnavailable) as err:
        load_model(f"openai:{MODEL}").generate(ASK)
    message = str(err.value)
    assert url in message and "OPENAI_BASE_URL" in message and "\n" not in message


def test_wrong_key_says_check_openai_api_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(ModelUnavailable) as err:
        OpenAICompatModel(MODEL).generate(ASK)
    assert "OPENAI_API_KEY" in str(err.value) and "401" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_model_is_404_one_line(server):
    with pytest.raises(ModelUnavailable) as err:
        OpenAICompatModel("no-such-model").generate(ASK)
    assert "no-such-model" in str(err.value) and "404" in str(err.value)
    assert "\n" not in str(err.value)


def test_scripted_server_error_is_one_line(server):
    server.enqueue(ErrorReply(503, "overloaded,\ntry later"))
    with pytest.raises(ModelUnavailable) as err:
        OpenAICompatModel(MODEL).generate(ASK)
    assert "overloaded" in str(err.value) and "\n" not in str(err.value)


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_a_schema_is_sent_as_response_format(server):
    server.enqueue('{"name": "f"}')
    OpenAICompatModel(MODEL).generate(Request(messages=[{"role": "user", "content": "plan"}], schema=SCHEMA))
    body = server.bodies("/v1/chat/completions")[0]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "plan", "schema": SCHEMA}}


def test_a_server_that_refuses_structured_outputs_falls_back_to_prompt_and_parse(openai_server, monkeypatch):  # noqa: F811
    srv = openai_server(models=["qwen"], structured_outputs=False)
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    srv.enqueue('{"name": "f"}', '{"name": "g"}')
    model = OpenAICompatModel("qwen")
    ask = Request(messages=[{"role": "user", "content": "plan"}], schema=SCHEMA)
    assert model.generate(ask).text == '{"name": "f"}'
    assert model.generate(ask).text == '{"name": "g"}'
    bodies = srv.bodies("/v1/chat/completions")
    # refused once, then asked without it: the first request is retried, the second never sends it
    assert ["response_format" in b for b in bodies] == [True, False, False]
