"""Config and CLI messages a newcomer reads (issue 27, items 2, 5, 10): all at once, named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config_errors
from gateway.cli import main
from gateway.config import ConfigError, TracingSettings, load_settings, parse_settings
from gateway.demo import demo_admin_key, demo_ledger_url, with_demo_defaults

ROOT = Path(__file__).resolve().parent.parent


def test_duplicate_key_names_are_named() -> None:
    keys = [
        {"name": name, "key": f"sk-{name}-{n}-0123456789", "upstream_token": "t"}
        for n, name in enumerate(["alice", "bob", "alice", "carol", "bob"])
    ]
    with pytest.raises(ConfigError) as caught:
        parse_settings({"keys": keys})
    assert "'alice', 'bob' given more than once" in str(caught.value)


def test_every_missing_environment_variable_in_one_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "keys:\n"
        "  - {name: a, key: '${KEY_A}', upstream_token: '${TOKEN_A}'}\n"
        "  - {name: b, key: '${KEY_B}', upstream_token: '${TOKEN_A}'}\n"
        "admin: {key: '${ADMIN:-default-admin-key}'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == "environment variables not set: KEY_A, TOKEN_A, KEY_B"


def test_missing_modules_looks_up_dotted_names_without_raising() -> None:
    absent = "no_such_package_for_gateway_tests.sub.module"
    assert config_errors.missing_modules([absent, "json.decoder"]) == [absent]


def test_tracing_without_opentelemetry_is_one_line_naming_the_real_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_errors, "OTEL_MODULES", ("no_such_otel_for_tests.sdk",))
    monkeypatch.setattr("gateway.config.OTEL_MODULES", ("no_such_otel_for_tests.sdk",))
    with pytest.raises(ConfigError) as caught:
        parse_settings({"tracing": {"otlp_endpoint": "http://127.0.0.1:4318"}})
    message = str(caught.value)
    assert "tracing.otlp_endpoint" in message and "pip install -e '.[otel]'" in message
    assert "llm-gateway[otel]" not in message  # another project's name on PyPI
    assert "opentelemetry-sdk opentelemetry-exporter-otlp-proto-http" in message
    assert TracingSettings().otlp_endpoint is None


def test_tracing_on_without_the_extra_is_not_a_traceback(tmp_path: Path) -> None:
    """A real process with ``opentelemetry`` unimportable: exit status 2 and a short message."""
    shadow = tmp_path / "sitecustomize.py"
    shadow.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text("tracing: {otlp_endpoint: 'http://127.0.0.1:4318'}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    assert "OpenTelemetry is not installed" in result.stderr


def test_keys_without_a_config_refuse_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    for argv in (["keys", "list"], ["teams", "list"], ["usage"]):
        assert main(argv) == 2
        assert "give --config FILE" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_option_shows_the_subcommands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keys", "create", "--name", "alice"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: gateway keys create")
    assert "gateway keys create: error: unrecognized arguments: --name" in err


def test_the_demo_has_an_admin_key_and_keeps_its_ledger_out_of_the_clone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    demo = with_demo_defaults(parse_settings({}), "token")
    assert demo_admin_key(demo) == "sk-gateway-demo-admin"
    assert demo.ledger.url == demo_ledger_url() == f"sqlite:///{tmp_path}/llm-gateway/demo-usage.db"
    configured = parse_settings(
        {"admin": {"key": "an-admin-key-of-mine"}, "ledger": {"url": "sqlite:///mine.db"}}
    )
    kept = with_demo_defaults(configured, "token")
    assert demo_admin_key(kept) is None and kept.ledger.url == "sqlite:///mine.db"
    off = parse_settings({"emulator": {"demo_admin_key": None}})
    assert demo_admin_key(with_demo_defaults(off, "token")) is None


def test_a_missing_relative_config_names_the_path_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings("gateway.yaml")
    assert f"gateway.yaml ({tmp_path.resolve() / 'gateway.yaml'})" in str(caught.value)
