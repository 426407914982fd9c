"""Model factory: turn a spec string into a loaded ``Model``.

Specs: ``auto`` (default), ``ollama:<tag>``, ``embedded``, ``gguf:<path>``, ``openai:<model>``.
Backend modules are imported lazily, so picking one never imports (or requires) the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.errors import ConfigError
from agent.llm.base import Completion, Model, Request, TokenCallback

__all__ = ["DEFAULT_OLLAMA_MODEL", "EMBEDDED_NOTE", "SPEC_FORMS", "Completion", "Model",
           "Request", "TokenCallback", "choose_backend", "known_spec", "load_model"]

DEFAULT_OLLAMA_MODEL = "qwen2.5-coder:7b"
EMBEDDED_NOTE = "the embedded model gemma3-270m (llama.cpp, CPU)"
SPEC_FORMS = "auto, ollama:<tag>, embedded, gguf:<path>, openai:<model>"
PROBE_TIMEOUT_S = 1.0

Notice = Callable[[str], None]


def choose_backend(ollama_host: str | None = None, *, default_tag: str = DEFAULT_OLLAMA_MODEL,
                   timeout: float = PROBE_TIMEOUT_S) -> tuple[str, str | None]:
    """What ``auto`` resolves to: (spec, notice). The notice says why it fell back, else None.

    Probes the Ollama server (≤ ``timeout`` s); uses it if it has ``default_tag`` pulled.
    """
    import httpx
    import ollama

    from agent.llm.ollama import make_client, pulled_tags, same_tag
    from agent.llm.ollama import ollama_host as resolve_host

    host = resolve_host(ollama_host)
    try:
        tags = pulled_tags(make_client(host, timeout=timeout))
    except (ConnectionError, ollama.ResponseError, httpx.HTTPError, ValueError):
        return "embedded", f"No Ollama server at {host}; using {EMBEDDED_NOTE}."
    if any(same_tag(t, default_tag) for t in tags):
        return f"ollama:{default_tag}", None
    return "embedded", (f"Ollama at {host} has no {default_tag} (run `ollama pull {default_tag}`); "
                        f"using {EMBEDDED_NOTE}.")


def known_spec(spec: str) -> bool:
    """Whether ``spec`` has one of the forms ``load_model`` takes (the model itself is not looked at)."""
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    return spec == "auto" or (kind == "embedded" and not arg) or (kind in ("ollama", "gguf", "openai") and bool(arg))


def load_model(spec: str = "auto", *, ollama_host: str | None = None,
               on_notice: Notice | None = None, timeout: float | None = None) -> Model:
    """Load the model ``spec`` names. Raises ConfigError for a bad spec, ModelUnavailable for a
    backend the user must fix (server down, model not pulled, bad GGUF, bad key)."""
    spec = (spec or "auto").strip()
    if spec == "auto":
        spec, notice = choose_backend(ollama_host)
        if notice and on_notice is not None:
            on_notice(notice)
    kind, _, arg = spec.partition(":")
    if kind == "ollama" and arg:
        from agent.llm.ollama import OllamaModel
        return OllamaModel(arg, host=ollama_host, read_timeout=timeout)
    if kind == "embedded" and not arg:
        from agent.llm.embedded import embedded_model
        return embedded_model()
    if kind == "gguf" and arg:
        from agent.llm.embedded import LlamaCppModel
        return LlamaCppModel(Path(arg).expanduser())
    if kind == "openai" and arg:
        from agent.llm.openai_compat import OpenAICompatModel
        return OpenAICompatModel(arg, read_timeout=timeout)
    raise ConfigError(f"Unknown model {spec!r}; use one of: {SPEC_FORMS}.")
