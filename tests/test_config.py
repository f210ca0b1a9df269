"""Settings: YAML, ${ENV} interpolation, and errors that name the bad field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gateway.config import (
    ConfigError,
    KeySettings,
    ModelSettings,
    Settings,
    load_settings,
    parse_settings,
)

MINIMAL = """
upstream:
  base_url: https://api.example.test/remotejobs/v2
  poll_interval: 0.5
models:
  - name: gemma-2b
    tag: gemma:2b
keys:
  - name: alice
    key: ${ALICE_KEY}
    upstream_token: ${TEAM_TOKEN}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_the_documented_contract_loads_with_env_interpolation(tmp_path: Path) -> None:
    env = {"ALICE_KEY": "sk-alice-123456", "TEAM_TOKEN": "tok-a"}
    settings = load_settings(write(tmp_path, MINIMAL), environ=env)
    assert settings.upstream.base_url == "https://api.example.test/remotejobs/v2"
    assert settings.upstream.poll_interval == 0.5
    assert settings.models[0].tag == "gemma:2b"
    key = settings.keys[0]
    assert key.upstream_token == "tok-a"
    assert key.digest == hashlib.sha256(b"sk-alice-123456").hexdigest()
    assert not settings.embedded_emulator


def test_comments_may_mention_unset_variables(tmp_path: Path) -> None:
    text = MINIMAL + "# see ${NOT_SET_ANYWHERE}\n"
    env = {"ALICE_KEY": "sk-alice-123456", "TEAM_TOKEN": "tok-a"}
    assert load_settings(write(tmp_path, text), environ=env).keys


def test_missing_env_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ALICE_KEY"):
        load_settings(write(tmp_path, MINIMAL), environ={"TEAM_TOKEN": "x"})


def test_default_values_in_interpolation(tmp_path: Path) -> None:
    text = MINIMAL.replace("${TEAM_TOKEN}", "${TEAM_TOKEN:-fallback}")
    settings = load_settings(write(tmp_path, text), environ={"ALICE_KEY": "sk-alice-123456"})
    assert settings.keys[0].upstream_token == "fallback"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"upstream": {"poll_interval": -1}}, "upstream.poll_interval"),
        ({"upstream": {"base_url": "ftp://x"}}, "upstream.base_url"),
        ({"upstream": {"pol_interval": 1}}, "upstream.pol_interval"),
        ({"models": [{"name": "m"}]}, "models[m].tag"),
        ({"models": [{"tag": "t"}]}, "models[0].name"),
        ({"keys": [{"name": "a", "upstream_token": "t"}]}, "keys[a]"),
        (
            {"keys": [{"name": "a", "key_sha256": "zz", "upstream_token": "t"}]},
            "keys[a].key_sha256",
        ),
        ({"limits": {"max_n": 0}}, "limits.max_n"),
        ({"redis": {"failure_policy": "maybe"}}, "redis.failure_policy"),
    ],
)
def test_bad_fields_are_named(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(data)
    assert field in str(info.value)


def test_duplicate_model_names_and_unknown_allowed_models_are_refused() -> None:
    models = [{"name": "a", "tag": "x"}, {"name": "b", "tag": "y", "aliases": ["a"]}]
    with pytest.raises(ConfigError, match="'a' is used twice"):
        parse_settings({"models": models})
    key = {"name": "k", "key": "sk-12345678", "upstream_token": "t", "models": ["nope"]}
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        parse_settings({"models": models[:1], "keys": [key]})


def test_no_file_means_the_embedded_emulator() -> None:
    settings = load_settings(None, environ={})
    assert settings.embedded_emulator


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "a: [unclosed"), environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


def test_secrets_are_not_in_the_repr() -> None:
    settings = parse_settings(
        {"keys": [{"name": "a", "key": "sk-very-secret", "upstream_token": "tok-secret"}]}
    )
    assert "sk-very-secret" not in repr(settings)
    assert "tok-secret" not in repr(settings)


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    env = {"ALICE_GATEWAY_KEY": "sk-alice-123456", "TEAM_A_UPSTREAM_TOKEN": "tok"}
    settings = load_settings(example, environ=env)
    assert settings.models and settings.keys


def _missing(model: type[BaseModel], data: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        if name not in data:
            missing.append(path + name)
            continue
        annotation = field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if nested and isinstance(data[name], dict):
            missing += _missing(annotation, data[name], f"{path}{name}.")  # type: ignore[arg-type]
    return missing


def test_example_config_lists_every_option() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    data = yaml.safe_load(example.read_text())
    missing = _missing(Settings, data, "")
    missing += _missing(ModelSettings, data["models"][0], "models[].")
    key = {"key_sha256": None, **data["keys"][0]}  # given as a comment beside 'key'
    missing += _missing(KeySettings, key, "keys[].")
    assert missing == []


def test_cache_settings_are_checked_at_start_up() -> None:
    from gateway.config import ConfigError, parse_settings

    models = [{"name": "m", "tag": "m:1"}]
    assert parse_settings({"models": models, "cache": {"models": ["m"]}}).cache.models == ("m",)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        parse_settings({"models": models, "cache": {"models": ["nope"]}})
    with pytest.raises(ConfigError, match=r"cache\.redis_url or redis\.url"):
        parse_settings({"models": models, "cache": {"backend": "redis"}})
    with pytest.raises(ConfigError, match="submit_batch_window"):
        parse_settings({"upstream": {"submit_batch_window": -1}})


def test_config_errors_name_entries_suggest_fields_and_speak_of_lists() -> None:
    data = {
        "upstream": {"pol_interval": 1, "finished_statuses": "done"},
        "keys": [
            {"name": "alice", "key": "sk-12345678", "upstream_token": "t"},
            {"name": "bob", "key": "sk-87654321"},
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_settings(data)
    lines = str(info.value).splitlines()
    assert "  keys[bob].upstream_token: Field required" in lines
    assert "  upstream.pol_interval: unknown field (did you mean 'poll_interval'?)" in lines
    assert "  upstream.finished_statuses: Input should be a list" in lines
    assert "tuple" not in str(info.value)
    assert "Value error" not in str(info.value)
