"""Settings: flags > environment > TOML > defaults, and one-line errors for bad values."""

from __future__ import annotations

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
