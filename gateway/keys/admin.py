"""Changing keys and teams: the checks and the writes both the admin API and the CLI use.

Every change is one audited transaction in the store (:class:`~gateway.keys.store.KeyStore`);
a running gateway then applies it to its own registry at once and announces it to the other
replicas. A secret is made here, returned once, and only its digest is stored.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config import NAME_PATTERN, Settings
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.keys.digests import digest_for, new_secret
from gateway.keys.model import (
    KeyChange,
    KeyCreate,
    KeyRecord,
    Rotation,
    TeamChange,
    TeamCreate,
    TeamRecord,
    epoch,
)
from gateway.keys.store import KeyStore

_DEFAULTS: dict[str, Any] = {
    "weight": 1.0,
    "priority": 0,
    "metadata": {},
    "disabled": False,
    "cache": True,
}


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate an admin request body; the first problem becomes a 400 naming its field."""
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise BadRequest(f"{where or 'body'}: {first['msg']}", param=where) from None


class KeyAdmin:
    """Creates, changes, rotates and revokes database keys and teams."""

    def __init__(
        self,
        settings: Settings,
        store: KeyStore,
        *,
        model_names: Iterable[str] = (),
        on_change: Callable[[KeyRecord | TeamRecord], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.model_names = frozenset(model_names)
        self.on_change = on_change
        self.config_names = frozenset(k.name for k in settings.keys)
        self.accounts = [a.name for a in settings.accounts]

    async def _changed(self, record: KeyRecord | TeamRecord) -> None:
        if self.on_change is not None:
            await self.on_change(record)

    def _check_models(self, models: tuple[str, ...] | None) -> None:
        if models is None or not self.model_names:
            return
        for name in models:
            if name not in self.model_names:
                raise BadRequest(f"Unknown model {name!r}.", param="models")

    def _check_account(self, account: str) -> None:
        if account not in self.accounts:
            known = ", ".join(self.accounts) or "none"
            raise BadRequest(
                f"Unknown account {account!r} (the config names: {known}).", param="account"
            )

    async def _check_team(self, team: str | None) -> None:
        if team is None:
            return
        found = await self.store.get_team(team)
        if found is None or found.deleted_at is not None:
            raise BadRequest(f"Unknown team {team!r}: create it first.", param="team")

    def _default_account(self) -> str:
        if not self.accounts:
            raise BadRequest(
                "No upstream account is configured: add 'accounts:' to the config.",
                param="account",
            )
        return self.accounts[0]

    # --- keys -----------------------------------------------------------------------------

    async def create_key(self, body: KeyCreate, actor: str) -> tuple[KeyRecord, str]:
        if body.name in self.config_names:
            raise Conflict(f"The key name {body.name!r} is used by the config.", param="name")
        account = body.account or self._default_account()
        self._check_account(account)
        self._check_models(body.models)
        await self._check_team(body.team)
        secret = new_secret()
        digest, scheme = digest_for(secret, self.settings.key_store.secret)
        fields = _set_fields(body, exclude=frozenset({"name", "account"}))

        def create(current: KeyRecord | None, now: float) -> KeyRecord:
            if current is not None:
                state = "revoked (names stay taken)" if current.revoked_at else "in use"
                raise Conflict(f"The key name {body.name!r} is {state}.", param="name")
            return KeyRecord(
                name=body.name,
                digest=digest,
                scheme=scheme,
                account=account,
                created_at=now,
                **fields,
            )

        record = await self.store.change_key(body.name, actor, "key.create", create)
        await self._changed(record)
        return record, secret

    async def update_key(self, name: str, body: KeyChange, actor: str) -> KeyRecord:
        _check_name(name, "key")
        fields = _set_fields(body)
        if "account" in fields:
            if fields["account"] is None:
                raise BadRequest("A key needs an account.", param="account")
            self._check_account(fields["account"])
        self._check_models(fields.get("models"))
        await self._check_team(fields.get("team"))

        def update(current: KeyRecord | None, now: float) -> KeyRecord:
            return self._live(name, current).replace(**fields)

        record = await self.store.change_key(name, actor, "key.update", update)
        await self._changed(record)
        return record

    async def rotate_key(self, name: str, body: Rotation, actor: str) -> tuple[KeyRecord, str]:
        _check_name(name, "key")
        secret = new_secret()
        digest, scheme = digest_for(secret, self.settings.key_store.secret)

        def rotate(current: KeyRecord | None, now: float) -> KeyRecord:
            live = self._live(name, current)
            grace = body.grace_seconds
            return live.replace(
                digest=digest,
                scheme=scheme,
                prev_digest=live.digest if grace else None,
                prev_scheme=live.scheme if grace else None,
                prev_until=now + grace if grace else None,
            )

        record = await self.store.change_key(name, actor, "key.rotate", rotate)
        await self._changed(record)
        return record, secret

    async def revoke_key(self, name: str, actor: str) -> KeyRecord:
        _check_name(name, "key")
        current = await self.store.get_key(name)
        if current is not None and current.revoked_at is not None:
            return current

        def revoke(current: KeyRecord | None, now: float) -> KeyRecord:
            return self._found(name, current).replace(
                revoked_at=now, prev_digest=None, prev_scheme=None, prev_until=None
            )

        record = await self.store.change_key(name, actor, "key.revoke", revoke)
        await self._changed(record)
        return record

    def _found(self, name: str, current: KeyRecord | None) -> KeyRecord:
        if current is None:
            where = " (it is a config key: change it in the config file)"
            raise NotFound(
                f"No database key named {name!r}"
                + (where if name in self.config_names else "")
                + ".",
                code="key_not_found",
            )
        return current

    def _live(self, name: str, current: KeyRecord | None) -> KeyRecord:
        found = self._found(name, current)
        if found.revoked_at is not None:
            raise Conflict(f"The key {name!r} is revoked.", code="key_revoked")
        return found

    # --- teams ----------------------------------------------------------------------------

    async def create_team(self, body: TeamCreate, actor: str) -> TeamRecord:
        self._check_models(body.models)
        fields = _set_fields(body, exclude=frozenset({"name"}))

        def create(current: TeamRecord | None, now: float) -> TeamRecord:
            if current is not None and current.deleted_at is None:
                raise Conflict(f"The team {body.name!r} exists.", param="name")
            return TeamRecord(name=body.name, created_at=now, seq=0, **fields)

        record = await self.store.change_team(body.name, actor, "team.create", create)
        await self._changed(record)
        return record

    async def update_team(self, name: str, body: TeamChange, actor: str) -> TeamRecord:
        _check_name(name, "team")
        fields = _set_fields(body)
        self._check_models(fields.get("models"))

        def update(current: TeamRecord | None, now: float) -> TeamRecord:
            return _live_team(name, current).replace(**fields)

        record = await self.store.change_team(name, actor, "team.update", update)
        await self._changed(record)
        return record

    async def delete_team(self, name: str, actor: str) -> TeamRecord:
        _check_name(name, "team")
        members = await self.store.live_members(name)
        if members:
            raise Conflict(
                f"The team {name!r} still has {members} key(s): move or revoke them first.",
                code="team_not_empty",
            )

        def delete(current: TeamRecord | None, now: float) -> TeamRecord:
            return _live_team(name, current).replace(deleted_at=now)

        record = await self.store.change_team(name, actor, "team.delete", delete)
        await self._changed(record)
        return record


def _check_name(name: str, kind: str) -> None:
    """A name no key or team can have (say, with a NUL, which PostgreSQL text refuses) is not
    found, without asking the database."""
    if not re.fullmatch(NAME_PATTERN, name):
        code = "key_not_found" if kind == "key" else "team_not_found"
        raise NotFound(f"No {kind} named {name!r}.", code=code)


def _live_team(name: str, current: TeamRecord | None) -> TeamRecord:
    if current is None or current.deleted_at is not None:
        raise NotFound(f"No team named {name!r}.", code="team_not_found")
    return current


def _set_fields(body: BaseModel, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields the request gave, as record values (``null`` resets to the default)."""
    fields: dict[str, Any] = {}
    for name in body.model_fields_set - exclude:
        value = getattr(body, name)
        if name == "expires_at":
            value = epoch(value)
        elif value is None and name in _DEFAULTS:
            value = _DEFAULTS[name]
        fields[name] = value
    return fields
