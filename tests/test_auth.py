"""Gateway keys: plaintext or sha256 in the config, bearer header in the request."""

from __future__ import annotations

import hashlib
import json

import pytest

from gateway.auth import KeyRing, account_names, bearer_token
from gateway.config import KeySettings
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.http.shapes import openai_body

ALICE = KeySettings(name="alice", key="sk-alice-123456", upstream_token="tok-a")
BOB = KeySettings(
    name="bob",
    key_sha256=hashlib.sha256(b"sk-bob-123456").hexdigest(),
    upstream_token="tok-b",
)


def test_plaintext_and_hashed_keys_authenticate() -> None:
    ring = KeyRing([ALICE, BOB])
    assert ring.authenticate({"authorization": "Bearer sk-alice-123456"}).name == "alice"
    assert ring.authenticate({"authorization": "bearer  sk-bob-123456 "}).name == "bob"


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Basic abc"}, {"authorization": "Bearer "}, {"authorization": "x"}],
)
def test_missing_key_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        KeyRing([ALICE]).authenticate(headers)
    assert info.value.status_code == 401
    assert info.value.code == "missing_api_key"


def test_unknown_key_is_401_without_echoing_it() -> None:
    with pytest.raises(AuthenticationFailed) as info:
        KeyRing([ALICE]).authenticate({"authorization": "Bearer sk-guess"})
    assert "sk-guess" not in json.dumps(openai_body(info.value))
    assert "tok-a" not in json.dumps(openai_body(info.value))


def test_bearer_token_parsing() -> None:
    assert bearer_token({"authorization": "Bearer abc"}) == "abc"
    assert bearer_token({}) is None


def test_accounts_are_named_after_the_first_key_using_a_token() -> None:
    carol = KeySettings(name="carol", key="sk-carol-123456", upstream_token="tok-a")
    assert account_names([ALICE, BOB, carol]) == {"tok-a": "alice", "tok-b": "bob"}


def test_x_api_key_is_a_gateway_key_too() -> None:
    ring = KeyRing([ALICE, BOB])
    assert ring.authenticate({"x-api-key": "sk-bob-123456"}).name == "bob"
    both = {"authorization": "Bearer sk-alice-123456", "x-api-key": "sk-bob-123456"}
    assert ring.authenticate(both).name == "alice"  # the bearer token wins
    with pytest.raises(AuthenticationFailed) as info:
        ring.authenticate({"x-api-key": "  "})
    assert info.value.code == "missing_api_key"
    with pytest.raises(AuthenticationFailed):
        ring.authenticate({"x-api-key": "sk-guess"})


def test_disabled_and_expired_keys_are_refused_by_authentication() -> None:
    """So every route that takes a key refuses them, not only the ones that admit."""
    disabled = KeySettings(name="d", key="sk-disabled-1234", upstream_token="t", disabled=True)
    expiring = KeySettings(
        name="e", key="sk-expiring-1234", upstream_token="t", expires_at="2030-01-01T00:00:00Z"
    )
    before, after = 1_800_000_000.0, 1_900_000_000.0  # 2027 and 2030
    ring = KeyRing([disabled, expiring], clock=lambda: before)
    with pytest.raises(PermissionDenied) as info:
        ring.authenticate({"authorization": "Bearer sk-disabled-1234"})
    assert info.value.code == "key_disabled"
    assert ring.authenticate({"authorization": "Bearer sk-expiring-1234"}).name == "e"
    later = KeyRing([expiring], clock=lambda: after)
    with pytest.raises(PermissionDenied) as info:
        later.authenticate({"authorization": "Bearer sk-expiring-1234"})
    assert info.value.code == "key_expired"
