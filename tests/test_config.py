"""Settings: flags > environment > TOML > defaults, and one-line errors for bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import Settings, build_parser, load_settings
from agent.errors import ConfigError


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings == Settings()
    assert (settings.max_iter, settings.timeout, settings.model) == (12, 15.0, "auto")


def test_layers_flags_beat_env_beat_toml(tmp_path):
    toml = tmp_path / "agent.toml"
    toml.write_text('[agent]\nmodel = "ollama:from-toml"\nmax_iter = 4\ntimeout = 30\n')
    env = {"AGENT_MODEL": "ollama:from-env", "AGENT_MAX_ITER": "6", "OLLAMA_HOST": "gpu-box:11434"}
    settings = load_settings({"max_iter": "9", "model": None}, env=env, config_path=toml)
    assert settings.model == "ollama:from-env"  # env beats TOML; the flag was not given
    assert settings.max_iter == 9  # flag beats env
    assert settings.timeout == 30.0  # only TOML set it
    assert settings.ollama_host == "http://gpu-box:11434"


def test_agent_toml_in_the_current_directory_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("agent.toml").write_text("max_iter = 3\n")
    assert load_settings(env={}).max_iter == 3


@pytest.mark.parametrize("flags, env, message", [
    ({"max_iter": "0"}, {}, "invalid max_iter '0' from --max-iter"),
    ({"timeout": "soon"}, {}, "invalid timeout 'soon' from --timeout"),
    ({}, {"AGENT_MODEL_TIMEOUT": "-1"}, "invalid model_timeout '-1' from $AGENT_MODEL_TIMEOUT"),
    ({}, {"AGENT_MAX_ITER": "many"}, "invalid max_iter 'many' from $AGENT_MAX_ITER"),
    ({"sandbox": "docker"}, {}, "invalid sandbox 'docker' from --sandbox"),
])
def test_bad_values_are_one_line(tmp_path, monkeypatch, flags, env, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env=env)
    assert str(info.value) == message


@pytest.mark.parametrize("content, message", [
    ("max_iter = [", "is not valid TOML"),
    ("colour = 'red'\n", "unknown setting(s) colour"),
])
def test_bad_toml_is_one_line(tmp_path, content, message):
    path = tmp_path / "agent.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env={}, config_path=path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, config_path=tmp_path / "nope.toml")


def test_parser_knows_the_documented_flags():
    args = build_parser().parse_args(["--model", "embedded", "--workspace", "ws", "--max-iter", "3",
                                      "--timeout", "5", "--yes", "-c", ":skills"])
    assert (args.model, args.workspace, args.max_iter, args.timeout, args.yes, args.commands) == \
        ("embedded", "ws", "3", "5", True, [":skills"])


def test_safety_block_rules_from_toml(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nmax_iter = 4\n\n[safety]\nblock = ["yaml", "shutil.rmtree", '
                    '"re:requests\\\\.(get|post)"]\n')
    settings = load_settings(env={}, config_path=path)
    assert settings.block == ("yaml", "shutil.rmtree", r"re:requests\.(get|post)")
    assert settings.max_iter == 4
    assert Settings().block == ()
    # without an [agent] table too
    path.write_text('max_iter = 5\n[safety]\nblock = []\n')
    assert (load_settings(env={}, config_path=path).block, load_settings(env={}, config_path=path).max_iter) == \
        ((), 5)


@pytest.mark.parametrize("content, message", [
    ('[safety]\nblock = "yaml"\n', "invalid block 'yaml' from {path}: a list of strings"),
    ("[safety]\nblock = [3]\n", "invalid block entry 3 from {path}: an entry is a string"),
    ('[safety]\nblock = ["re:("]\n', "invalid block entry 're:(' from {path}: bad regular expression: "
                                      "missing ), unterminated subpattern at position 0"),
    ('[safety]\nblock = ["re:.*"]\n', "invalid block entry 're:.*' from {path}: the regular expression "
                                       "matches the empty string (it would block everything)"),
    ('[safety]\nblock = ["rm -rf"]\n', "invalid block entry 'rm -rf' from {path}: neither a dotted name"),
    ("[safety]\ncolour = 1\n", "config file {path}: unknown setting(s) safety.colour"),
    ("safety = 1\n", "config file {path}: safety must be a table ([safety])"),
    ('block = ["yaml"]\n', "config file {path}: unknown setting(s) block"),
])
def test_bad_safety_table_is_one_line(tmp_path, content, message):
    path = tmp_path / "agent.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_path=path)
    text = str(info.value)
    assert text.startswith(message.format(path=path)) and "\n" not in text


def test_allow_unsandboxed_from_toml_and_flag(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text("[safety]\nallow_unsandboxed = true\n")
    assert load_settings(env={}, config_path=path).allow_unsandboxed is True
    assert Settings().allow_unsandboxed is False
    assert load_settings({"allow_unsandboxed": True}, env={}, config_path=None).allow_unsandboxed is True
    path.write_text("[safety]\nallow_unsandboxed = false\n")
    assert load_settings({"allow_unsandboxed": None}, env={}, config_path=path).allow_unsandboxed is False
    path.write_text('[safety]\nallow_unsandboxed = "yes"\n')
    with pytest.raises(ConfigError, match=f"^invalid allow_unsandboxed 'yes' from {path}$"):
        load_settings(env={}, config_path=path)


def test_allow_unsandboxed_flag_names_the_risk():
    parser = build_parser()
    assert parser.parse_args(["--allow-unsandboxed"]).allow_unsandboxed is True
    assert parser.parse_args([]).allow_unsandboxed is None  # not given: the lower layers decide
    help_text = " ".join(parser.format_help().split())
    assert "--allow-unsandboxed" in help_text
    assert "run generated code with only rlimits when no sandbox works: it can read your files and reach the " \
           "network" in help_text


# Every bad value, wherever it comes from, is one line naming the value and where it came from.
@pytest.mark.parametrize("flags, env, toml, message", [
    ({"ollama_host": "http://[::1"}, {}, None,
     "invalid ollama_host 'http://[::1' from --ollama-host: not a URL (Invalid IPv6 URL)"),
    ({"ollama_host": "http://127.0.0.1:70000"}, {}, None,
     "invalid ollama_host 'http://127.0.0.1:70000' from --ollama-host: the port must be a number from 1 to 65535"),
    ({"ollama_host": "127.0.0.1:0"}, {}, None,
     "invalid ollama_host '127.0.0.1:0' from --ollama-host: the port must be a number from 1 to 65535"),
    ({"ollama_host": "http://host:port"}, {}, None,
     "invalid ollama_host 'http://host:port' from --ollama-host: the port must be a number from 1 to 65535"),
    ({"ollama_host": "ftp://host"}, {}, None,
     "invalid ollama_host 'ftp://host' from --ollama-host: the URL must start with http:// or https://"),
    ({"ollama_host": "http://"}, {}, None,
     "invalid ollama_host 'http://' from --ollama-host: no host name, e.g. http://127.0.0.1:11434"),
    ({"ollama_host": "http://a b:1"}, {}, None,
     "invalid ollama_host 'http://a b:1' from --ollama-host: no host name, e.g. http://127.0.0.1:11434"),
    ({"ollama_host": ""}, {}, None, "invalid ollama_host '' from --ollama-host"),
    ({"ollama_host": "http://h\0st"}, {}, None,
     "invalid ollama_host 'http://h\\x00st' from --ollama-host: it holds a control character"),
    ({}, {"OLLAMA_HOST": "http://[::1"}, None,
     "invalid ollama_host 'http://[::1' from $OLLAMA_HOST: not a URL (Invalid IPv6 URL)"),
    ({}, {}, "ollama_host = 11434", "invalid ollama_host 11434 from {path}"),
    ({"model": ""}, {}, None, "invalid model '' from --model"),
    ({"model": "  "}, {}, None, "invalid model '  ' from --model"),
    ({"model": "ollama:"}, {}, None,
     "invalid model 'ollama:' from --model: use one of: auto, ollama:<tag>, embedded, gguf:<path>, openai:<model>"),
    ({}, {"AGENT_MODEL": "gpt4"}, None,
     "invalid model 'gpt4' from $AGENT_MODEL: use one of: auto, ollama:<tag>, embedded, gguf:<path>, openai:<model>"),
    ({"model": "ollama:\udcff"}, {}, None, "invalid model 'ollama:\\udcff' from --model: not valid UTF-8"),
    ({}, {}, "model = 3", "invalid model 3 from {path}"),
    ({}, {}, 'model = "ollama:\\u0000"', "invalid model 'ollama:\\x00' from {path}: it holds a control character"),
    ({"workspace": ""}, {}, None, "invalid workspace '' from --workspace"),
    ({"workspace": "ws\0"}, {}, None, "invalid workspace 'ws\\x00' from --workspace: it holds a control character"),
    ({}, {}, "workspace = []", "invalid workspace [] from {path}"),
    ({"max_iter": ""}, {}, None, "invalid max_iter '' from --max-iter"),
    ({"max_iter": "9" * 5000}, {}, None, "invalid max_iter '" + "9" * 59 + "... (5,002 characters) from --max-iter"),
    ({}, {}, "max_iter = true", "invalid max_iter True from {path}"),
    ({}, {}, "max_iter = 3.7", "invalid max_iter 3.7 from {path}"),
    ({}, {}, "max_iter = 99999999999999999999999", "invalid max_iter 99999999999999999999999 from {path}"),
    ({"timeout": "nan"}, {}, None, "invalid timeout 'nan' from --timeout"),
    ({"timeout": "inf"}, {}, None, "invalid timeout 'inf' from --timeout"),
    ({"timeout": "1e999"}, {}, None, "invalid timeout '1e999' from --timeout"),
    ({}, {"AGENT_MODEL_TIMEOUT": "0"}, None, "invalid model_timeout '0' from $AGENT_MODEL_TIMEOUT"),
    ({}, {}, "timeout = nan", "invalid timeout nan from {path}"),
    ({}, {}, "timeout = true", "invalid timeout True from {path}"),
    ({"sandbox": ""}, {}, None, "invalid sandbox '' from --sandbox"),
    ({}, {}, "sandbox = ['bwrap']", "invalid sandbox ['bwrap'] from {path}"),
    ({}, {}, 'yes = "maybe"', "invalid yes 'maybe' from {path}"),
    ({}, {}, "agent = 3", "config file {path}: agent must be a table ([agent])"),
    ({}, {}, "agent = [1]", "config file {path}: agent must be a table ([agent])"),
    ({}, {}, 'agent = "x"', "config file {path}: agent must be a table ([agent])"),
    ({}, {}, b"max_iter = \xff", "config file {path} is not valid TOML: 'utf-8' codec can't decode byte 0xff"),
])
def test_bad_values_from_every_layer_are_one_line(tmp_path, flags, env, toml, message):
    path = tmp_path / "agent.toml"
    if toml is not None:
        path.write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env=env, config_path=path if toml is not None else None)
    text = str(info.value)
    assert text.startswith(message.format(path=path)) and "\n" not in text


@pytest.mark.parametrize("config, message", [
    ("{dir}", "config file {dir} cannot be read: Is a directory"),
    ("{dir}/x\0y", "config file '{dir}/x\\x00y' cannot be read: embedded null byte"),
    ("{dir}/nope.toml", "config file {dir}/nope.toml does not exist"),
    ("/dev/zero", "config file /dev/zero is over 256 KiB: not a settings file"),  # read bounded, not forever
])
def test_a_config_path_that_is_no_file_is_one_line(tmp_path, config, message):
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_path=Path(config.format(dir=tmp_path)))
    assert str(info.value) == message.format(dir=tmp_path)


def test_a_config_path_that_is_a_pipe_does_not_block(tmp_path):
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a pipe, not a settings file"):
        load_settings(env={}, config_path=fifo)


@pytest.mark.parametrize("flags, field, value", [
    ({"ollama_host": "gpu-box:11434"}, "ollama_host", "http://gpu-box:11434"),
    ({"ollama_host": "https://gpu-box"}, "ollama_host", "https://gpu-box"),
    ({"ollama_host": "http://[::1]:11434/"}, "ollama_host", "http://[::1]:11434/"),
    ({"model": " ollama:qwen2.5-coder:7b "}, "model", "ollama:qwen2.5-coder:7b"),
    ({"model": "embedded"}, "model", "embedded"),
    ({"workspace": "ws/\udcff"}, "workspace", Path("ws/\udcff")),  # a path may be any bytes but NUL
    ({"max_iter": " 7 "}, "max_iter", 7),
    ({"timeout": "2.5"}, "timeout", 2.5),
])
def test_good_values_pass(tmp_path, monkeypatch, flags, field, value):
    monkeypatch.chdir(tmp_path)
    assert getattr(load_settings(flags, env={}), field) == value


def test_past_fixes_can_be_turned_off_from_the_environment_or_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).past_fixes is None  # auto: chat models only
    assert load_settings(env={"AGENT_PAST_FIXES": "off"}).past_fixes is False
    assert load_settings(env={"AGENT_PAST_FIXES": "on"}).past_fixes is True
    assert load_settings(env={"AGENT_PAST_FIXES": "Auto"}).past_fixes is None
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\npast_fixes = false\n")
    assert load_settings(env={}, config_path=path).past_fixes is False
    with pytest.raises(ConfigError, match=r"^invalid past_fixes 'maybe' from \$AGENT_PAST_FIXES$"):
        load_settings(env={"AGENT_PAST_FIXES": "maybe"})
