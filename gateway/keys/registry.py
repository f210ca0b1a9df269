"""Every database key and team in memory: a request's key is found by one dict lookup.

The registry is filled at start-up from :meth:`KeyStore.changes` and kept current by the
watcher (:mod:`gateway.keys.watcher`); requests never query the database. A key maps to the
:class:`~gateway.config.KeySettings` the limiter and the upstream client already use, with the
upstream token of its named account filled in here (the database never has it).
"""

from __future__ import annotations

import bisect
import hmac
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from gateway.config import KeySettings
from gateway.keys.digests import hmac_hex
from gateway.keys.model import KeyRecord, TeamRecord
from gateway.keys.store import Changes

logger = logging.getLogger("gateway.keys")

#: (expected digest, the key's name, the end of its validity for a rotated-out secret)
_Entry = tuple[str, str, float | None]


def key_settings(record: KeyRecord, token: str) -> KeySettings:
    """The runtime view of a database key (no validation: the store only holds checked rows)."""
    expires = None
    if record.expires_at is not None:
        expires = datetime.fromtimestamp(record.expires_at, UTC)
    return KeySettings.model_construct(
        name=record.name,
        key=None,
        key_sha256=record.digest,
        upstream_token=token,
        account=record.account,
        team=record.team,
        weight=record.weight,
        priority=record.priority,
        models=record.models,
        rpm=record.rpm,
        tpm=record.tpm,
        max_concurrent=record.max_concurrent,
        daily_tokens=record.daily_tokens,
        monthly_tokens=record.monthly_tokens,
        expires_at=expires,
        disabled=record.disabled,
        identity=f"db:{record.name}:{record.created_at!r}",  # kept when the key is rotated
        cache=record.cache,
    )


class KeyRegistry:
    """Database keys by digest and by name, teams by name, at one store version."""

    def __init__(
        self,
        accounts: Mapping[str, str],
        *,
        secret: str | None = None,
        config_names: Iterable[str] = (),
    ) -> None:
        self.accounts = dict(accounts)
        self.secret = secret
        self.config_names = frozenset(config_names)
        self.version = 0
        self.loaded = False
        self._records: dict[str, KeyRecord] = {}
        #: Built on a key's first request, not at start-up (loading 100,000 keys stays fast).
        self._settings: dict[str, KeySettings] = {}
        self._by_digest: dict[str, _Entry] = {}
        self._teams: dict[str, TeamRecord] = {}
        self._sorted: list[str] | None = None

    def __len__(self) -> int:
        return len(self._records)

    def apply(self, changes: Changes) -> None:
        """Take the rows of one refresh and move to its version."""
        for team in changes.teams:
            self.put_team(team)
        for record in changes.keys:
            self.put_key(record)
        self.version = max(self.version, changes.version)
        self.loaded = True

    def put_key(self, record: KeyRecord) -> None:
        old = self._records.get(record.name)
        if old is not None and old.seq >= record.seq and record.seq:
            return
        if old is None:
            self._sorted = None
        else:
            self._forget(old)
        self._records[record.name] = record
        if record.revoked_at is not None:
            return
        if record.name in self.config_names:
            logger.error("database key %r is also a config key: the config's is used", record.name)
            return
        if record.account not in self.accounts:
            logger.error("key %r names unknown account %r: refused", record.name, record.account)
            return
        self._by_digest[record.digest] = (record.digest, record.name, None)
        if record.prev_digest is not None and record.prev_until is not None:
            entry = (record.prev_digest, record.name, record.prev_until)
            self._by_digest[record.prev_digest] = entry

    def _forget(self, record: KeyRecord) -> None:
        self._settings.pop(record.name, None)
        for digest in (record.digest, record.prev_digest):
            entry = self._by_digest.get(digest or "")
            if entry is not None and entry[1] == record.name:
                del self._by_digest[digest or ""]

    def put_team(self, record: TeamRecord) -> None:
        old = self._teams.get(record.name)
        if old is not None and old.seq >= record.seq and record.seq:
            return
        if record.deleted_at is not None:
            self._teams.pop(record.name, None)
        else:
            self._teams[record.name] = record

    def lookup(self, sha256: str, presented: str, now: float) -> KeySettings | None:
        """The live key whose secret was presented (``sha256`` is its plain digest)."""
        entry = self._by_digest.get(sha256)
        candidate = sha256
        if entry is None and self.secret:
            candidate = hmac_hex(self.secret, presented)
            entry = self._by_digest.get(candidate)
        if entry is None:
            return None
        expected, name, valid_until = entry
        if not hmac.compare_digest(expected, candidate):
            return None
        if valid_until is not None and now >= valid_until:
            return None
        return self.settings(name)

    def record(self, name: str) -> KeyRecord | None:
        return self._records.get(name)

    def settings(self, name: str) -> KeySettings | None:
        """The runtime view of a live key (``None`` if revoked or unusable)."""
        found = self._settings.get(name)
        if found is not None:
            return found
        record = self._records.get(name)
        if record is None or record.revoked_at is not None or record.name in self.config_names:
            return None
        token = self.accounts.get(record.account or "")
        if token is None:
            return None
        found = self._settings[name] = key_settings(record, token)
        return found

    def team(self, name: str | None) -> TeamRecord | None:
        return self._teams.get(name) if name else None

    def teams(self) -> list[TeamRecord]:
        return sorted(self._teams.values(), key=lambda t: t.name)

    def names_after(self, after: str | None) -> Iterable[str]:
        """Key names in order, from the first one after ``after`` (for pagination)."""
        if self._sorted is None:
            self._sorted = sorted(self._records)
        start = bisect.bisect_right(self._sorted, after) if after else 0
        return (self._sorted[i] for i in range(start, len(self._sorted)))

    def collisions(self) -> list[str]:
        return sorted(self.config_names & self._records.keys())

    def team_members(self, team: str) -> list[str]:
        return [r.name for r in self._records.values() if r.team == team]
