"""Settings in one place: flags > environment variables > optional TOML file > defaults."""

from __future__ import annotations

import argparse
import os
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.llm import SPEC_FORMS, known_spec
from safety.policy import check_block_entry

# Environment variable for each setting that has one.
ENV_VARS = {
    "model": "AGENT_MODEL",
    "workspace": "AGENT_WORKSPACE",
    "max_iter": "AGENT_MAX_ITER",
    "timeout": "AGENT_TIMEOUT",
    "model_timeout": "AGENT_MODEL_TIMEOUT",
    "ollama_host": "OLLAMA_HOST",
    "sandbox": "AGENT_SANDBOX",
    "past_fixes": "AGENT_PAST_FIXES",
    "warm_sandbox": "AGENT_WARM_SANDBOX",
}
DEFAULT_CONFIG_NAME = "agent.toml"
MAX_CONFIG_BYTES = 256 * 1024


@dataclass(kw_only=True, frozen=True)
class Settings:
    """Everything the agent can be configured with. See SETUP.md for each setting."""

    model: str = "auto"  # "auto" | "embedded" | "ollama:<tag>" | "gguf:<path>" | "openai:<name>"
    workspace: Path = Path("agent_workspace")
    max_iter: int = 12  # iteration cap of one directive
    timeout: float = 15.0  # wall-clock seconds for one sandboxed test run
    model_timeout: float = 300.0  # overall deadline of one model call, however the tokens trickle in
    ollama_host: str = "http://127.0.0.1:11434"
    sandbox: str | None = None  # force a sandbox level ("bwrap" | "landlock" | "rlimits")
    yes: bool = False  # auto-approve tier-2 needs (never tier 3)
    block: tuple[str, ...] = ()  # [safety] block: custom tier-3 gate rules (dotted names, "re:<regex>")
    allow_unsandboxed: bool = False  # run generated code at the rlimits level (no sandbox works): opt-in only
    # a fix prompt shows similar past failures and the diffs that fixed them: True, False, or None
    # (auto): chat models only, since on the embedded completion model they raised iterations
    past_fixes: bool | None = None
    # a directive's test runs share one warm sandbox (bwrap), each in a fresh child: see safety/warm.py
    warm_sandbox: bool = True


# Settings read from the [safety] table of the config file (and only from there).
SAFETY_KEYS = {"block", "allow_unsandboxed"}


def _block_rules(value: Any, origin: str) -> tuple[str, ...]:
    """[safety] block: a list of dotted names and "re:" regular expressions, each checked."""
    if not isinstance(value, list):
        raise ConfigError(f"invalid block {value!r} from {origin}: a list of strings, "
                          'e.g. block = ["yaml", "re:requests\\.get"]')
    for entry in value:
        try:
            check_block_entry(entry)
        except ValueError as err:
            raise ConfigError(f"invalid block entry {entry!r} from {origin}: {err}") from None
    return tuple(value)


class _Invalid(ValueError):
    """A bad value, with the reason the one-line error gives after it."""


def _text(value: Any, *, utf8: bool = True) -> str:
    """A string setting: a string, not blank, without control characters (NUL too) and, unless it
    is a path (any bytes but NUL make one), valid UTF-8."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _Invalid("it holds a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in argv or the environment arrive as lone surrogates
        if utf8:
            raise _Invalid("not valid UTF-8") from None
    return value


def _url(value: Any) -> str:
    """The Ollama server: an http(s) URL with a host and, if any, a port from 1 to 65535."""
    text = _text(value).strip()
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as err:  # e.g. "Invalid IPv6 URL"
        raise _Invalid(f"not a URL ({err})") from None
    if parts.scheme not in ("http", "https"):
        raise _Invalid("the URL must start with http:// or https://")
    if not parts.hostname or any(c.isspace() for c in url):
        raise _Invalid("no host name, e.g. http://127.0.0.1:11434")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # a port that is not a number, or not one from 1 to 65535
        raise _Invalid("the port must be a number from 1 to 65535")
    return url


def _shown(value: Any) -> str:
    """``value`` for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def _coerce(name: str, value: Any, origin: str) -> Any:
    """Turn a raw value from env/TOML/flags into the field's type, or fail with one line."""
    if name == "block":
        return _block_rules(value, origin)
    try:
        if isinstance(value, bool) and name not in ("yes", "allow_unsandboxed", "past_fixes", "warm_sandbox"):
            raise ValueError  # TOML's true is no number, model or path
        if name == "workspace":
            return Path(_text(value, utf8=False)).expanduser()
        if name == "model":
            if not known_spec(_text(value)):
                raise _Invalid(f"use one of: {SPEC_FORMS}")
            return value.strip()
        if name == "ollama_host":
            return _url(value)
        if name == "max_iter":
            if not isinstance(value, int | str):
                raise ValueError
            number = int(value)
            if not 1 <= number <= 100:
                raise ValueError
            return number
        if name in ("timeout", "model_timeout"):
            if not isinstance(value, int | float | str):
                raise ValueError
            seconds = float(value)
            if not 0 < seconds <= 3600:  # nan and inf fail too
                raise ValueError
            return seconds
        if name == "allow_unsandboxed":  # an explicit opt-in: true or false, nothing looser
            if not isinstance(value, bool):
                raise ValueError
            return value
        if name in ("yes", "past_fixes", "warm_sandbox"):
            if isinstance(value, bool):
                return value
            answer = str(value).strip().lower()
            if name == "past_fixes" and answer == "auto":
                return None
            if answer not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                raise ValueError
            return answer in {"1", "true", "yes", "on"}
        if name == "sandbox" and value not in {"bwrap", "landlock", "rlimits"}:
            raise ValueError
        return str(value)
    except _Invalid as err:
        raise ConfigError(f"invalid {name} {_shown(value)} from {origin}: {err}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"invalid {name} {_shown(value)} from {origin}") from None


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the start
        with os.fdopen(fd, "rb") as file:
            if stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise ConfigError(f"config file {path} is a pipe, not a settings file")
            raw = file.read(MAX_CONFIG_BYTES + 1)  # bounded: --config /dev/zero must not eat the memory
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES // 1024} KiB: not a settings file")
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    except OSError as err:  # a directory, no permission, ...
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
    except ValueError as err:  # a NUL in the path
        raise ConfigError(f"config file {_shown(str(path))} cannot be read: {err}") from None
    safety = data.pop("safety", {})
    if not isinstance(safety, dict):
        raise ConfigError(f"config file {path}: safety must be a table ([safety])")
    table = data.get("agent", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: agent must be a table ([agent])")
    known = {f.name for f in fields(Settings)} - SAFETY_KEYS
    unknown = sorted(set(table) - known) + sorted(f"safety.{k}" for k in set(safety) - SAFETY_KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {k: _coerce(k, v, str(path)) for k, v in {**table, **safety}.items()}


def load_settings(flags: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                  config_path: Path | None = None) -> Settings:
    """Merge the layers. ``flags`` holds only the flags the user gave (None values are ignored)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    explicit = config_path or (Path(env["AGENT_CONFIG"]) if env.get("AGENT_CONFIG") else None)
    if explicit is not None:
        values.update(_from_toml(explicit))
    elif Path(DEFAULT_CONFIG_NAME).is_file():
        values.update(_from_toml(Path(DEFAULT_CONFIG_NAME)))
    for name, var in ENV_VARS.items():
        if env.get(var):
            values[name] = _coerce(name, env[var], f"${var}")
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    return replace(Settings(), **values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autonomous_agent",
        description="A local, skill-learning coding agent. Starts an interactive prompt.",
        epilog="Each flag can also come from an environment variable (AGENT_MODEL, AGENT_WORKSPACE, "
        "AGENT_MAX_ITER, AGENT_TIMEOUT, AGENT_MODEL_TIMEOUT, OLLAMA_HOST, AGENT_SANDBOX) or agent.toml; flags win. "
        "AGENT_PAST_FIXES=on|off|auto (past_fixes in agent.toml; auto, the default: chat models only) says whether "
        "fix prompts show similar past failures' fixes. AGENT_WARM_SANDBOX=on|off (warm_sandbox) says whether a "
        "directive's test runs share one warm sandbox. "
        "When stdin is a file or pipe, its lines run as if typed (answers to questions included). "
        "Exit status: 0 on success; 1 when a -c line or a line from a file or pipe failed (an unknown "
        "command, a usage error, a directive that did not end working) or a setting is invalid; 2 for a "
        "bad command line. An interactive session exits 0.",
    )
    parser.add_argument("mode", nargs="?", choices=["mcp", "bench"],
                        help="mcp: serve the working skills as MCP tools over stdio (no prompt, no model; "
                        "each call runs in the sandbox; a tier-2 need only with a grant remembered as always). "
                        "bench: run the loop against a benchmark (bench humaneval --help)")
    parser.add_argument("--model", help="auto (default), embedded, ollama:<tag>, gguf:<path>, openai:<name>")
    parser.add_argument("--workspace", help="workspace directory (default: agent_workspace)")
    parser.add_argument("--max-iter", dest="max_iter", help="iteration cap per directive (default: 12)")
    parser.add_argument("--timeout", help="seconds per sandboxed test run (default: 15)")
    parser.add_argument("--model-timeout", dest="model_timeout",
                        help="overall seconds one model call may take (default: 300)")
    parser.add_argument("--ollama-host", dest="ollama_host", help="Ollama server (default: $OLLAMA_HOST)")
    parser.add_argument("--sandbox", help="force a sandbox level: bwrap, landlock or rlimits")
    parser.add_argument("--config", type=Path, help="TOML settings file (default: ./agent.toml if present)")
    parser.add_argument("--yes", action="store_true", default=None,
                        help="approve tier-2 needs (network, shell, ...) without asking; never tier 3")
    parser.add_argument("--allow-unsandboxed", dest="allow_unsandboxed", action="store_true", default=None,
                        help="run generated code with only rlimits when no sandbox works: it can read your "
                        "files and reach the network (otherwise it is refused at that level)")
    parser.add_argument("--resume", action="store_true",
                        help="first continue every pending, interrupted or cut-off directive (like :resume all)")
    parser.add_argument("-c", "--command", action="append", dest="commands", metavar="LINE",
                        help="run this REPL line (e.g. ':directive ...') and exit; repeatable")
    return parser
