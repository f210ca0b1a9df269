"""Keys, teams and the audit trail in the database of ``ledger.url``.

Four tables (names start with ``key_store.table_prefix``)::

    keys     one row per database key: the digest of its secret, never the secret; the name
             of its upstream account, never the token; limits; revoked rows are kept
    teams    one row per team; a deleted team keeps its row with ``deleted_at``
    audit    who changed what and when, the before and after views (no secrets)
    meta     one counter, ``version``, raised by every change

Every change runs in one transaction: raise ``version``, stamp the changed row's ``seq`` with
it, write the audit row. A replica that knows version ``v`` asks for the rows with
``seq > v``: a refresh costs one single-row read when nothing changed, and reads only what
changed otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.db import Database, Row, Tx, add_columns
from gateway.keys.model import KeyRecord, TeamRecord, key_view, team_view

KEY_COLUMNS: tuple[str, ...] = KeyRecord._fields
TEAM_COLUMNS: tuple[str, ...] = TeamRecord._fields
_JSON_COLUMNS = frozenset({"models", "metadata"})

_FLOAT = frozenset(
    {"prev_until", "expires_at", "weight", "created_at", "updated_at", "revoked_at", "deleted_at"}
)
_INTEGER = frozenset(
    {
        "rpm",
        "tpm",
        "max_concurrent",
        "daily_tokens",
        "monthly_tokens",
        "priority",
        "disabled",
        "seq",
        "cache",
    }
)

R = TypeVar("R", KeyRecord, TeamRecord)


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed after a version: the rows to apply, and the version they bring us to."""

    version: int
    keys: list[KeyRecord]
    teams: list[TeamRecord]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class StoreConflict(Exception):
    """A write that does not apply: the name is taken, or the row does not exist."""


def _column_type(name: str) -> str:
    if name in _FLOAT:
        return "DOUBLE PRECISION"
    return "BIGINT" if name in _INTEGER else "TEXT"


class KeyStore:
    """The key tables in one database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, prefix: str = "gateway_") -> None:
        self.db = db
        self.keys = f"{prefix}keys"
        self.teams = f"{prefix}teams"
        self.audit_table = f"{prefix}key_audit"
        self.meta = f"{prefix}key_meta"
        #: The PostgreSQL NOTIFY channel every change is announced on.
        self.channel = f"{prefix}keys_changed"

    async def open(self) -> None:
        await self.db.open()
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":
                # Replicas starting together must not race their CREATE ... IF NOT EXISTS.
                await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(?))", [self.keys])
            await tx.execute(self._create(self.keys, KEY_COLUMNS))
            await tx.execute(self._create(self.teams, TEAM_COLUMNS))
            await self._add_columns(tx, self.keys, ("cache",))
            await tx.execute(f"CREATE INDEX IF NOT EXISTS {self.keys}_seq ON {self.keys} (seq)")
            await tx.execute(f"CREATE INDEX IF NOT EXISTS {self.teams}_seq ON {self.teams} (seq)")
            serial = "BIGSERIAL" if self.db.dialect == "postgresql" else "INTEGER"
            await tx.execute(
                f"CREATE TABLE IF NOT EXISTS {self.audit_table} (id {serial} PRIMARY KEY, "
                "at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, "
                "target TEXT NOT NULL, before TEXT, after TEXT)"
            )
            await tx.execute(
                f"CREATE TABLE IF NOT EXISTS {self.meta} (name TEXT PRIMARY KEY, value BIGINT)"
            )
            await tx.execute(
                f"INSERT INTO {self.meta} (name, value) VALUES ('version', 0) "
                "ON CONFLICT (name) DO NOTHING"
            )

    async def _add_columns(self, tx: Tx, table: str, columns: Sequence[str]) -> None:
        """Columns added since a table was first made (their rows read as the default)."""
        await add_columns(tx, self.db.dialect, table, [(c, _column_type(c)) for c in columns])

    def _create(self, table: str, columns: Sequence[str]) -> str:
        cols = ", ".join(
            f"{c} {_column_type(c)}" + (" PRIMARY KEY" if c == "name" else "") for c in columns
        )
        return f"CREATE TABLE IF NOT EXISTS {table} ({cols})"

    async def close(self) -> None:
        await self.db.close()

    async def version(self) -> int:
        rows = await self.db.fetch(f"SELECT value FROM {self.meta} WHERE name = 'version'")
        return int(rows[0][0]) if rows else 0

    async def changes(self, since: int) -> Changes:
        """Rows changed after version ``since`` (every row for 0)."""
        version = await self.version()
        if version == since:
            return Changes(version, [], [])
        keys = await self.db.fetch(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM {self.keys} WHERE seq > ? AND seq <= ?",
            [since, version],
        )
        teams = await self.db.fetch(
            f"SELECT {', '.join(TEAM_COLUMNS)} FROM {self.teams} WHERE seq > ? AND seq <= ?",
            [since, version],
        )
        return Changes(
            version,
            [_record(KeyRecord, KEY_COLUMNS, row) for row in keys],
            [_record(TeamRecord, TEAM_COLUMNS, row) for row in teams],
        )

    async def get_key(self, name: str) -> KeyRecord | None:
        rows = await self.db.fetch(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM {self.keys} WHERE name = ?", [name]
        )
        return _record(KeyRecord, KEY_COLUMNS, rows[0]) if rows else None

    async def get_team(self, name: str) -> TeamRecord | None:
        rows = await self.db.fetch(
            f"SELECT {', '.join(TEAM_COLUMNS)} FROM {self.teams} WHERE name = ?", [name]
        )
        return _record(TeamRecord, TEAM_COLUMNS, rows[0]) if rows else None

    async def live_members(self, team: str) -> int:
        rows = await self.db.fetch(
            f"SELECT COUNT(*) FROM {self.keys} WHERE team = ? AND revoked_at IS NULL", [team]
        )
        return int(rows[0][0])

    async def all_keys(self) -> list[KeyRecord]:
        return (await self.changes(0)).keys

    async def change_key(
        self,
        name: str,
        actor: str,
        action: str,
        change: Callable[[KeyRecord | None, float], KeyRecord],
    ) -> KeyRecord:
        """Apply ``change(current, now)`` to key ``name`` in one transaction, audited."""
        return await self._change(
            self.keys, KeyRecord, KEY_COLUMNS, key_view, name, actor, action, change
        )

    async def change_team(
        self,
        name: str,
        actor: str,
        action: str,
        change: Callable[[TeamRecord | None, float], TeamRecord],
    ) -> TeamRecord:
        return await self._change(
            self.teams, TeamRecord, TEAM_COLUMNS, team_view, name, actor, action, change
        )

    async def _change(
        self,
        table: str,
        record: type[R],
        columns: Sequence[str],
        view: Callable[[R], dict[str, Any]],
        name: str,
        actor: str,
        action: str,
        change: Callable[[R | None, float], R],
    ) -> R:
        now = time.time()
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT {', '.join(columns)} FROM {table} WHERE name = ?"
                + (" FOR UPDATE" if self.db.dialect == "postgresql" else ""),
                [name],
            )
            before = _record(record, columns, rows[0]) if rows else None
            after = change(before, now)
            version = await self._bump(tx)
            after = after.replace(seq=version, updated_at=now)
            values = [_encode(c, getattr(after, c)) for c in columns]
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "name")
            await tx.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)}) "
                f"ON CONFLICT (name) DO UPDATE SET {updates}",
                values,
            )
            await tx.execute(
                f"INSERT INTO {self.audit_table} (at, actor, action, target, before, after) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    now,
                    actor,
                    action,
                    name,
                    json.dumps(view(before)) if before is not None else None,
                    json.dumps(view(after)),
                ],
            )
            if self.db.dialect == "postgresql":
                await tx.fetch("SELECT pg_notify(?, ?)", [self.channel, str(version)])
        return after

    async def _bump(self, tx: Tx) -> int:
        rows = await tx.fetch(
            f"UPDATE {self.meta} SET value = value + 1 WHERE name = 'version' RETURNING value"
        )
        return int(rows[0][0])

    async def audit(self, limit: int, before: int | None = None) -> list[AuditEntry]:
        where, params = ("WHERE id < ? ", [before]) if before is not None else ("", [])
        rows = await self.db.fetch(
            f"SELECT id, at, actor, action, target, before, after FROM {self.audit_table} "
            f"{where}ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [
            AuditEntry(
                id=int(r[0]),
                at=float(r[1]),
                actor=str(r[2]),
                action=str(r[3]),
                target=str(r[4]),
                before=json.loads(r[5]) if r[5] else None,
                after=json.loads(r[6]) if r[6] else None,
            )
            for r in rows
        ]

    async def insert_many(self, records: Sequence[KeyRecord]) -> None:
        """Bulk insert (the scale benchmark); one version for all, not audited."""
        async with self.db.transaction() as tx:
            version = await self._bump(tx)
            sql = (
                f"INSERT INTO {self.keys} ({', '.join(KEY_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in KEY_COLUMNS)})"
            )
            rows = [[_encode(c, getattr(r, c)) for c in KEY_COLUMNS] for r in records]
            seq = KEY_COLUMNS.index("seq")
            for row in rows:
                row[seq] = version
            await tx.execute_many(sql, rows)


def _encode(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        if value is None:
            return None
        return json.dumps(list(value) if column == "models" else dict(value))
    if isinstance(value, bool):
        return int(value)
    return value


def _record(record: type[R], columns: Sequence[str], row: Row) -> R:
    """A record from its row (positional: 100,000 of them load at start-up)."""
    values = list(row)
    for i, column in enumerate(columns):
        value = values[i]
        if column == "models":
            values[i] = tuple(json.loads(value)) if value is not None else None
        elif column == "metadata":
            values[i] = json.loads(value) if value and value != "{}" else {}
        elif column == "disabled":
            values[i] = bool(value)
        elif column == "cache":
            values[i] = value is None or bool(value)  # a row from before the column: on
    return record(*values)
