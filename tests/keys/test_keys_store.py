"""Database keys without a server: store (SQLite), registry, watcher, admin checks, access."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import AdminKeySettings, ConfigError, parse_settings
from gateway.db import database_for
from gateway.errors import AuthenticationFailed, BadRequest, Conflict, NotFound, PermissionDenied
from gateway.keys.access import AdminKeys
from gateway.keys.admin import KeyAdmin, parse_body
from gateway.keys.digests import sha256_hex
from gateway.keys.model import KeyChange, KeyCreate, Rotation, TeamCreate
from gateway.keys.registry import KeyRegistry
from gateway.keys.store import KeyStore
from gateway.keys.watcher import KeyWatcher

ACCOUNTS = [
    {"name": "team-a", "upstream_token": "tok-a"},
    {"name": "team-b", "upstream_token": "tok-b"},
]
MODELS = [{"name": "m1", "tag": "m1"}]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[KeyStore]:
    store = KeyStore(database_for(f"sqlite:///{tmp_path}/keys.db"))
    await store.open()
    yield store
    await store.close()


def admin_for(store: KeyStore, secret: str | None = None, **config: object) -> KeyAdmin:
    settings = parse_settings(
        {"accounts": ACCOUNTS, "models": MODELS, "key_store": {"secret": secret}, **config}
    )
    return KeyAdmin(settings, store, model_names=["m1"])


def registry(secret: str | None = None) -> KeyRegistry:
    return KeyRegistry({"team-a": "tok-a", "team-b": "tok-b"}, secret=secret)


def find(reg: KeyRegistry, secret: str, now: float | None = None) -> str | None:
    found = reg.lookup(sha256_hex(secret), secret, time.time() if now is None else now)
    return None if found is None else found.name


async def test_changes_come_in_increments_and_keys_carry_their_account_token(
    store: KeyStore,
) -> None:
    admin = admin_for(store)
    reg = registry()
    _, first = await admin.create_key(parse_body(KeyCreate, {"name": "k1"}), "t")
    reg.apply(await store.changes(0))
    assert reg.version == 1 and find(reg, first) == "k1"
    _, second = await admin.create_key(
        parse_body(KeyCreate, {"name": "k2", "account": "team-b"}), "t"
    )
    changes = await store.changes(reg.version)
    assert [k.name for k in changes.keys] == ["k2"]  # only what changed
    reg.apply(changes)
    assert (await store.changes(reg.version)).keys == []
    found = reg.lookup(sha256_hex(second), second, time.time())
    assert found is not None and found.upstream_token == "tok-b" and found.account == "team-b"


async def test_rotation_grace_and_revocation(store: KeyStore) -> None:
    admin = admin_for(store)
    reg = registry()
    _, old = await admin.create_key(parse_body(KeyCreate, {"name": "k"}), "t")
    _, new = await admin.rotate_key("k", Rotation(grace_seconds=30), "t")
    reg.apply(await store.changes(0))
    now = time.time()
    assert find(reg, old, now) == "k" and find(reg, new, now) == "k"
    assert find(reg, old, now + 31) is None and find(reg, new, now + 31) == "k"
    await admin.revoke_key("k", "t")
    reg.apply(await store.changes(reg.version))
    assert find(reg, new) is None and find(reg, old) is None
    with pytest.raises(Conflict):
        await admin.rotate_key("k", Rotation(), "t")
    assert (await admin.revoke_key("k", "t")).revoked_at is not None  # idempotent


async def test_hmac_digests_and_old_sha256_keys_side_by_side(store: KeyStore) -> None:
    secret = "a-server-secret-of-some-length"
    _, plain = await admin_for(store).create_key(parse_body(KeyCreate, {"name": "old"}), "t")
    record, hashed = await admin_for(store, secret).create_key(
        parse_body(KeyCreate, {"name": "new"}), "t"
    )
    assert record.scheme == "hmac" and record.digest != sha256_hex(hashed)
    reg = registry(secret)
    reg.apply(await store.changes(0))
    assert find(reg, plain) == "old" and find(reg, hashed) == "new"
    no_secret = registry()
    no_secret.apply(await store.changes(0))
    assert find(no_secret, hashed) is None


async def test_admin_checks_name_account_model_and_team(store: KeyStore) -> None:
    config_key = {"name": "cfg", "key": "sk-config-key", "account": "team-a"}
    admin = admin_for(store, keys=[config_key])
    for body, error in [
        ({"name": "cfg"}, Conflict),
        ({"name": "x", "account": "nope"}, BadRequest),
        ({"name": "x", "models": ["m2"]}, BadRequest),
        ({"name": "x", "team": "ghost"}, BadRequest),
    ]:
        with pytest.raises(error):
            await admin.create_key(parse_body(KeyCreate, body), "t")
    with pytest.raises(BadRequest):
        parse_body(KeyCreate, {"name": "has space"})
    with pytest.raises(BadRequest):
        parse_body(KeyCreate, {"name": "x", "rpm": 0})
    with pytest.raises(NotFound):
        await admin.update_key("cfg", KeyChange(), "t")
    await admin.create_team(parse_body(TeamCreate, {"name": "red", "rpm": 3}), "t")
    await admin.create_key(parse_body(KeyCreate, {"name": "member", "team": "red"}), "t")
    with pytest.raises(Conflict):
        await admin.delete_team("red", "t")
    changed = await admin.update_key("member", parse_body(KeyChange, {"team": None}), "t")
    assert changed.team is None
    assert (await admin.delete_team("red", "t")).deleted_at is not None
    entries = await store.audit(100)
    assert [e.action for e in entries][:2] == ["team.delete", "key.update"]


class _Down:
    """A database that has gone away."""

    dialect = "sqlite"

    async def open(self) -> None: ...

    async def fetch(self, sql: str, params: object = ()) -> list[tuple[object, ...]]:
        raise OSError("connection refused")

    async def close(self) -> None: ...


async def test_a_replica_keeps_its_keys_while_the_database_is_away(store: KeyStore) -> None:
    admin = admin_for(store)
    _, secret = await admin.create_key(parse_body(KeyCreate, {"name": "k"}), "t")
    reg = registry()
    health: list[bool] = []
    watcher = KeyWatcher(store, reg, on_health=health.append)
    await watcher.refresh()
    assert watcher.healthy and find(reg, secret) == "k"
    working, store.db = store.db, _Down()  # type: ignore[assignment]
    with pytest.raises(OSError):
        await watcher.refresh()
    assert not watcher.healthy and find(reg, secret) == "k"
    store.db = working
    await watcher.refresh()
    assert watcher.healthy and health == [True, False, True]


def test_accounts_by_name_in_the_config() -> None:
    settings = parse_settings(
        {"accounts": ACCOUNTS, "keys": [{"name": "k", "key": "sk-12345678", "account": "team-b"}]}
    )
    assert settings.keys[0].upstream_token == "tok-b"
    with pytest.raises(ConfigError, match="unknown account"):
        parse_settings({"keys": [{"name": "k", "key": "sk-12345678", "account": "nope"}]})
    with pytest.raises(ConfigError, match="reserved"):
        parse_settings({"keys": [{"name": "team:x", "key": "sk-12345678", "upstream_token": "t"}]})


def test_admin_roles() -> None:
    settings = parse_settings(
        {
            "admin": {
                "key": "sk-legacy-admin",
                "keys": [{"name": "look", "key": "sk-viewer-key", "role": "viewer"}],
            }
        }
    )
    keys = AdminKeys(settings.admin.all_keys())

    def bearer(secret: str) -> dict[str, str]:
        return {"authorization": f"Bearer {secret}"}

    assert keys.authorize(bearer("sk-legacy-admin"), write=True).role == "admin"
    assert keys.authorize({"x-api-key": "sk-viewer-key"}, write=False).name == "look"
    with pytest.raises(PermissionDenied):
        keys.authorize(bearer("sk-viewer-key"), write=True)
    with pytest.raises(PermissionDenied):
        keys.authorize(bearer("sk-gateway"), write=False, is_gateway_key=lambda _: True)
    with pytest.raises(AuthenticationFailed):
        keys.authorize(bearer("sk-nobody"), write=False)
    with pytest.raises(AuthenticationFailed):
        keys.authorize({}, write=False)
    with pytest.raises(NotFound):
        AdminKeys(()).authorize(bearer("x"), write=False)
    assert AdminKeySettings(name="a", key="12345678").digest == sha256_hex("12345678")


@pytest.mark.parametrize("body", [{"name": "t", "rpm": 2**70}, {"name": "t", "tpm": 2**63}])
def test_a_limit_beyond_what_a_database_holds_is_a_400(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(TeamCreate, body)
    assert info.value.param in ("rpm", "tpm")
