"""The factory: spec parsing, ``gguf:<path>`` validation, ``auto``'s choice, and the GGUF cache.

Nothing here loads real weights (see test_llm_embedded.py for that).
"""

from __future__ import annotations

import hashlib
import os

import pytest

import agent.llm.embedded as embedded
from agent.errors import ConfigError, ModelUnavailable
from agent.llm import DEFAULT_OLLAMA_MODEL, choose_backend, load_model
from agent.llm.ollama import OllamaModel
from tests.llm_servers import closed_port_url, ollama_server  # noqa: F401


def test_missing_gguf_names_the_path(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(ModelUnavailable) as err:
        load_model(f"gguf:{path}")
    assert str(err.value) == f"GGUF file not found: {path}"


def test_not_a_gguf_is_one_line(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a model\n\n")
    with pytest.raises(ModelUnavailable) as err:
        load_model(f"gguf:{path}")
    assert str(path) in str(err.value) and "GGUF" in str(err.value)
    assert "\n" not in str(err.value)


def test_directory_is_not_a_gguf(tmp_path):
    with pytest.raises(ModelUnavailable, match="directory"):
        load_model(f"gguf:{tmp_path}")


@pytest.mark.parametrize("spec", ["llama", "ollama:", "gguf:", "openai:", "embedded:big", "hf:x"])
def test_unknown_spec_lists_the_accepted_forms(spec):
    with pytest.raises(ConfigError) as err:
        load_model(spec)
    assert "ollama:<tag>" in str(err.value) and "gguf:<path>" in str(err.value)
    assert "\n" not in str(err.value)


def test_auto_falls_back_to_embedded_when_no_server_answers():
    url = closed_port_url()
    spec, notice = choose_backend(url)
    assert spec == "embedded"
    assert notice == f"No Ollama server at {url}; using the embedded model gemma3-270m (llama.cpp, CPU)."


def test_auto_uses_the_default_env_host(monkeypatch):
    spec, notice = choose_backend()
    assert spec == "embedded" and "http://127.0.0.1:9" in notice  # conftest's dead OLLAMA_HOST


def test_auto_picks_ollama_when_the_default_tag_is_pulled(ollama_server):  # noqa: F811
    srv = ollama_server(tags=["llama3:8b", DEFAULT_OLLAMA_MODEL])
    assert choose_backend(srv.url) == (f"ollama:{DEFAULT_OLLAMA_MODEL}", None)


def test_auto_falls_back_when_the_default_tag_is_missing(ollama_server):  # noqa: F811
    srv = ollama_server(tags=["llama3:8b"])
    spec, notice = choose_backend(srv.url)
    assert spec == "embedded"
    assert f"ollama pull {DEFAULT_OLLAMA_MODEL}" in notice and "\n" not in notice


def test_load_model_auto_with_server_notifies_nothing(ollama_server, monkeypatch):  # noqa: F811
    srv = ollama_server(tags=[DEFAULT_OLLAMA_MODEL])
    notices: list[str] = []
    model = load_model("auto", ollama_host=srv.url, on_notice=notices.append)
    assert isinstance(model, OllamaModel) and model.host == srv.url and notices == []


def test_load_model_auto_fallback_sends_the_notice(monkeypatch):
    loaded = []
    monkeypatch.setattr(embedded, "embedded_model", lambda: loaded.append(1) or "the-embedded")
    notices: list[str] = []
    assert load_model(on_notice=notices.append) == "the-embedded"
    assert loaded == [1] and len(notices) == 1 and "embedded model gemma3-270m" in notices[0]


# --- assembling the cached GGUF from chunks (small fake chunks) -----------------------------

@pytest.fixture
def chunks(tmp_path):
    parts = []
    for i, data in enumerate([b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]):
        part = tmp_path / f"m.gguf.part{i:02d}"
        part.write_bytes(data)
        parts.append(part)
    whole = b"".join(p.read_bytes() for p in parts)
    return parts, hashlib.sha256(whole).hexdigest(), whole


def corrupt(path):
    """Flip one byte in place (same size). Writing moves mtime, which voids the verified stamp;
    the bump makes that certain on file systems whose clock ticks coarser than this test runs."""
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(st.st_size // 2)
        f.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_assemble_writes_once_and_records_the_checksum(chunks, tmp_path):
    parts, sha, whole = chunks
    target = tmp_path / "cache" / "m.gguf"
    assert embedded.assemble(parts, target, sha) == target
    assert target.read_bytes() == whole
    first = target.stat().st_mtime_ns
    embedded.assemble(parts, target, sha)
    assert target.stat().st_mtime_ns == first  # reused, not rewritten
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.gguf", "m.gguf.verified.json"]


def test_assemble_rebuilds_a_corrupt_cached_file(chunks, tmp_path):
    parts, sha, whole = chunks
    target = tmp_path / "m.gguf"
    embedded.assemble(parts, target, sha)
    corrupt(target)
    embedded.assemble(parts, target, sha)
    assert target.read_bytes() == whole


def test_assemble_rehashes_without_a_stamp(chunks, tmp_path):
    parts, sha, whole = chunks
    target = tmp_path / "m.gguf"
    target.write_bytes(whole[:-1] + b"?")  # a corrupt leftover from some earlier run, no stamp
    embedded.assemble(parts, target, sha)
    assert target.read_bytes() == whole


def test_assemble_refuses_chunks_that_do_not_match(chunks, tmp_path):
    parts, _, _ = chunks
    target = tmp_path / "m.gguf"
    with pytest.raises(ModelUnavailable, match="force-reinstall"):
        embedded.assemble(parts, target, "0" * 64)
    assert not target.exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]  # no temporary left


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path, isolated_env):
    assert embedded.cache_dir() == isolated_env / ".cache" / "autonomous-agent"
    monkeypatch.setenv("AGENT_CACHE_DIR", str(tmp_path))
    assert embedded.cache_dir() == tmp_path
