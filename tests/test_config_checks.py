"""Start-up checks that stop a config which would fail, or misroute requests, later (issue 12)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.config import ConfigError, parse_settings


def _key(name: str, **secret: str) -> dict[str, str]:
    return {"name": name, "upstream_token": f"tok-{name}", **secret}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"key": "sk-shared-secret-1"}, {"key": "sk-shared-secret-1"}),
        (
            {"key": "sk-shared-secret-1"},
            {"key_sha256": hashlib.sha256(b"sk-shared-secret-1").hexdigest().upper()},
        ),
        ({"key_sha256": "ab" * 32}, {"key_sha256": "AB" * 32}),
    ],
)
def test_two_keys_with_one_secret_are_refused_naming_both(
    first: dict[str, str], second: dict[str, str]
) -> None:
    keys = [_key("alice", **first), _key("carol", key="sk-other-secret"), _key("bob", **second)]
    with pytest.raises(ConfigError) as info:
        parse_settings({"keys": keys})
    assert "'alice'" in str(info.value) and "'bob'" in str(info.value)
    assert "carol" not in str(info.value)
    assert "sk-shared-secret-1" not in str(info.value)


def test_keys_with_their_own_secrets_pass() -> None:
    keys = [_key("alice", key="sk-alice-secret"), _key("bob", key_sha256="cd" * 32)]
    assert len(parse_settings({"keys": keys}).keys) == 2


@pytest.mark.parametrize(
    "url", ["mysql://u@db/gw", "", "sqlite:///", "sqlite://relative.db", "gateway.db", "postgres:"]
)
def test_a_ledger_url_no_store_can_open_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ConfigError, match=r"ledger\.url: .*sqlite:///"):
        parse_settings({"ledger": {"url": url}})


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///gateway-usage.db",
        "sqlite:///:memory:",
        "sqlite:////var/lib/gateway/usage.db",
        "postgresql://gateway:pw@db:5432/gateway",
        "postgres://db/gateway",
    ],
)
def test_ledger_urls_of_both_stores_pass(url: str) -> None:
    assert parse_settings({"ledger": {"url": url}}).ledger.url == url


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "http://redis:6379", "redis://", "redis:6379"])
def test_a_redis_url_redis_cannot_open_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ConfigError, match=r"redis\.url: .*redis://"):
        parse_settings({"redis": {"url": url}})


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://u:p@cache:6380/1", "unix:///run/redis.sock"]
)
def test_redis_urls_pass(url: str) -> None:
    assert parse_settings({"redis": {"url": url}}).redis.url == url


def test_an_empty_redis_url_means_no_redis() -> None:
    """``url: ${REDIS_URL:-}`` with the variable unset turns Redis off, as null does."""
    assert parse_settings({"redis": {"url": ""}}).redis.url is None
