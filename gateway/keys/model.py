"""Database keys and teams as records, the admin API's request bodies, and their JSON views.

A record never holds a secret: only the digest of the key, and the *name* of the upstream
account (its token stays in the config). :func:`key_view` and :func:`team_view` are the only
shapes that leave the process, and they leave the digests out too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.config import NAME_PATTERN

LIMIT_FIELDS = ("rpm", "tpm", "max_concurrent", "daily_tokens", "monthly_tokens")

Scheme = Literal["sha256", "hmac"]

#: The shared default of ``metadata`` (read-only, so no record can change another's).
_NO_METADATA = cast(dict[str, Any], MappingProxyType({}))


class KeyRecord(NamedTuple):
    """One database key as stored (times are epoch seconds).

    A named tuple, not a dataclass: a starting replica builds 100,000 of them, and a tuple is
    several times quicker to make. ``metadata`` is never changed in place.
    """

    name: str
    digest: str
    scheme: Scheme = "sha256"
    prev_digest: str | None = None
    prev_scheme: Scheme | None = None
    prev_until: float | None = None
    account: str | None = None
    team: str | None = None
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = _NO_METADATA
    weight: float = 1.0
    priority: int = 0
    disabled: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    revoked_at: float | None = None
    seq: int = 0
    #: False: the key's requests never read, fill or join the response cache.
    cache: bool = True

    def replace(self, **changes: Any) -> KeyRecord:
        return self._replace(**changes)


class TeamRecord(NamedTuple):
    """A team: limits and budgets its keys share, and its weight and priority for fair share."""

    name: str
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    weight: float = 1.0
    priority: int = 0
    metadata: dict[str, Any] = _NO_METADATA
    created_at: float = 0.0
    updated_at: float = 0.0
    deleted_at: float | None = None
    seq: int = 0

    def replace(self, **changes: Any) -> TeamRecord:
        return self._replace(**changes)


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def key_view(record: KeyRecord) -> dict[str, Any]:
    """The key object of the admin API: no secret, no digest, no upstream token."""
    return {
        "object": "gateway.key",
        "name": record.name,
        "source": "database",
        "account": record.account,
        "team": record.team,
        "models": list(record.models) if record.models is not None else None,
        **{name: getattr(record, name) for name in LIMIT_FIELDS},
        "expires_at": iso(record.expires_at),
        "metadata": dict(record.metadata),
        "weight": record.weight,
        "priority": record.priority,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "revoked_at": iso(record.revoked_at),
        "disabled": record.disabled,
        "cache": record.cache,
        "previous_secret_valid_until": iso(record.prev_until),
    }


def team_view(record: TeamRecord) -> dict[str, Any]:
    return {
        "object": "gateway.team",
        "name": record.name,
        "models": list(record.models) if record.models is not None else None,
        **{name: getattr(record, name) for name in LIMIT_FIELDS},
        "weight": record.weight,
        "priority": record.priority,
        "metadata": dict(record.metadata),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The largest limit: a database's BIGINT (and a Redis integer) holds no more.
MAX_LIMIT = 2**63 - 1


class _Limits(_Body):
    models: tuple[str, ...] | None = None
    rpm: int | None = Field(None, ge=1, le=MAX_LIMIT)
    tpm: int | None = Field(None, ge=1, le=MAX_LIMIT)
    max_concurrent: int | None = Field(None, ge=1, le=MAX_LIMIT)
    daily_tokens: int | None = Field(None, ge=1, le=MAX_LIMIT)
    monthly_tokens: int | None = Field(None, ge=1, le=MAX_LIMIT)
    weight: float | None = Field(None, gt=0, le=1000)
    priority: int | None = Field(None, ge=-100, le=100)
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(repr(value)) > 8192:
            raise ValueError("metadata is limited to about 8 KB")
        return value


class KeyChange(_Limits):
    """``PATCH /admin/keys/{name}``: the fields given are changed (``null`` clears a limit)."""

    account: str | None = Field(None, pattern=NAME_PATTERN)
    team: str | None = Field(None, pattern=NAME_PATTERN)
    expires_at: datetime | None = None
    disabled: bool | None = None
    cache: bool | None = None


class KeyCreate(KeyChange):
    """``POST /admin/keys``."""

    name: str = Field(pattern=NAME_PATTERN)


class TeamChange(_Limits):
    """``PATCH /admin/teams/{name}``."""


class TeamCreate(TeamChange):
    name: str = Field(pattern=NAME_PATTERN)


class Rotation(_Body):
    grace_seconds: int = Field(0, ge=0, le=30 * 86_400)


def epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
