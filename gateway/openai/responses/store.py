"""Stored responses, in the ledger's database (SQLite or PostgreSQL) or one of their own.

Three tables, created when missing (``T`` is ``responses.table``)::

    T         id, key_name, created_at, expires_at, status, background, body (the response
              object), history (the items a previous_response_id chain continues from),
              request (the body, to plan again after a restart), job_ids, seq (the next
              stream sequence number), owner, lease_until (who follows a background run)
    T_items   item_id, response_id, key_name, position, role ('input' | 'output'), data
    T_events  response_id, seq, data: a background stream's events, for resuming it

The same SQL serves both databases; only the placeholders differ. A response belongs to the
key that made it: every read and write names the key, so another key's id is "not found".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.ledger.postgres import is_postgres_url
from gateway.ledger.sqlite import sqlite_path
from gateway.sqldb import Driver as _Driver
from gateway.sqldb import Postgres as _Postgres
from gateway.sqldb import Sqlite as _Sqlite


@dataclass(slots=True)
class StoredResponse:
    id: str
    key_name: str
    created_at: float
    expires_at: float
    status: str
    background: bool
    body: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)
    seq: int = 0
    owner: str | None = None
    lease_until: float = 0.0


_COLUMNS = (
    "id, key_name, created_at, expires_at, status, background, body, history, request, "
    "job_ids, seq, owner, lease_until"
)


class ResponseStore:
    """Stored responses for one database URL; open it before use."""

    def __init__(self, url: str, table: str = "gateway_responses") -> None:
        if not (url.startswith("sqlite:") or is_postgres_url(url)):
            raise ValueError("responses.store_url must be sqlite:/// or postgresql://")
        self.url = url
        self.t = table
        self._driver: _Driver | None = None

    @property
    def _db(self) -> _Driver:
        if self._driver is None:
            raise RuntimeError("the response store is not open")
        return self._driver

    async def open(self) -> None:
        if self._driver is not None:
            return
        if is_postgres_url(self.url):
            driver: _Driver = await _Postgres.open(self.url)
        else:
            driver = await _Sqlite.open(sqlite_path(self.url))
        t = self.t
        statements = [
            f"""CREATE TABLE IF NOT EXISTS {t} (
                id TEXT PRIMARY KEY, key_name TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL, background INTEGER NOT NULL, body TEXT NOT NULL,
                history TEXT NOT NULL, request TEXT NOT NULL, job_ids TEXT NOT NULL,
                seq INTEGER NOT NULL, owner TEXT, lease_until DOUBLE PRECISION NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at)",
            f"CREATE INDEX IF NOT EXISTS {t}_active ON {t} (status, lease_until)",
            f"""CREATE TABLE IF NOT EXISTS {t}_items (
                item_id TEXT NOT NULL, response_id TEXT NOT NULL, key_name TEXT NOT NULL,
                position INTEGER NOT NULL, role TEXT NOT NULL, data TEXT NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {t}_items_response ON {t}_items (response_id, position)",
            f"CREATE INDEX IF NOT EXISTS {t}_items_item ON {t}_items (item_id, key_name)",
            f"""CREATE TABLE IF NOT EXISTS {t}_events (
                response_id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
                PRIMARY KEY (response_id, seq))""",
        ]
        try:
            for sql in statements:
                await driver.execute(sql, ())
        except BaseException:
            await driver.close()
            raise
        self._driver = driver

    async def close(self) -> None:
        if self._driver is not None:
            driver, self._driver = self._driver, None
            await driver.close()

    # ------------------------------------------------------------------ writes

    async def put(
        self,
        record: StoredResponse,
        inputs: Sequence[dict[str, Any]],
    ) -> None:
        """Insert a new response with its input items (and its output items, if any)."""
        await self._db.execute(
            f"INSERT INTO {self.t} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _row(record),
        )
        rows = [
            (str(item.get("id")), record.id, record.key_name, i, "input", json.dumps(item))
            for i, item in enumerate(inputs)
        ]
        if rows:
            await self._db.executemany(
                f"INSERT INTO {self.t}_items (item_id, response_id, key_name, position, role, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        if record.body.get("output"):
            await self._outputs(record)

    async def update(
        self,
        record: StoredResponse,
        events: Sequence[dict[str, Any]] = (),
        *,
        final: bool = False,
    ) -> bool:
        """Save progress (the object, the next seq, new stream events); False when the response
        is gone or was cancelled elsewhere (its runner then stops)."""
        t = self.t
        changed = await self._db.count(
            f"UPDATE {t} SET status = ?, body = ?, job_ids = ?, seq = ?, lease_until = ? "
            "WHERE id = ? AND status IN ('queued', 'in_progress')",
            (
                record.status,
                json.dumps(record.body),
                json.dumps(record.job_ids),
                record.seq,
                record.lease_until,
                record.id,
            ),
        )
        if events:
            await self._db.executemany(
                f"INSERT INTO {t}_events (response_id, seq, data) VALUES (?, ?, ?)",
                [(record.id, e["sequence_number"], json.dumps(e)) for e in events],
            )
        if final and changed:
            await self._outputs(record)
        return changed > 0

    async def _outputs(self, record: StoredResponse) -> None:
        rows = [
            (str(item.get("id")), record.id, record.key_name, i, "output", json.dumps(item))
            for i, item in enumerate(record.body.get("output") or [])
        ]
        if rows:
            await self._db.executemany(
                f"INSERT INTO {self.t}_items (item_id, response_id, key_name, position, role, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def cancel(self, response_id: str, key_name: str, body: dict[str, Any]) -> bool:
        """Mark a background response cancelled; False when it had already ended."""
        return (
            await self._db.count(
                f"UPDATE {self.t} SET status = 'cancelled', body = ?, lease_until = 0 "
                "WHERE id = ? AND key_name = ? AND status IN ('queued', 'in_progress')",
                (json.dumps(body), response_id, key_name),
            )
            > 0
        )

    async def delete(self, response_id: str, key_name: str) -> bool:
        t = self.t
        found = await self._db.count(
            f"DELETE FROM {t} WHERE id = ? AND key_name = ?", (response_id, key_name)
        )
        if found:
            await self._db.execute(f"DELETE FROM {t}_items WHERE response_id = ?", (response_id,))
            await self._db.execute(f"DELETE FROM {t}_events WHERE response_id = ?", (response_id,))
        return found > 0

    async def purge(self, now: float) -> int:
        """Delete what outlived its retention."""
        t = self.t
        gone = await self._db.fetch(f"SELECT id FROM {t} WHERE expires_at < ?", (now,))
        for (response_id,) in gone:
            await self._db.execute(f"DELETE FROM {t}_items WHERE response_id = ?", (response_id,))
            await self._db.execute(f"DELETE FROM {t}_events WHERE response_id = ?", (response_id,))
            await self._db.execute(f"DELETE FROM {t} WHERE id = ?", (response_id,))
        return len(gone)

    # ------------------------------------------------------------------ reads

    async def get(self, response_id: str, key_name: str, now: float) -> StoredResponse | None:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM {self.t} WHERE id = ? AND key_name = ? AND expires_at >= ?",
            (response_id, key_name, now),
        )
        return _record(rows[0]) if rows else None

    async def items(self, response_id: str, *, role: str = "input") -> list[dict[str, Any]]:
        rows = await self._db.fetch(
            f"SELECT data FROM {self.t}_items WHERE response_id = ? AND role = ? ORDER BY position",
            (response_id, role),
        )
        return [json.loads(data) for (data,) in rows]

    async def find_items(self, ids: Sequence[str], key_name: str) -> dict[str, dict[str, Any]]:
        """Items by id, of this key's responses (for ``item_reference``)."""
        found: dict[str, dict[str, Any]] = {}
        for item_id in dict.fromkeys(ids):
            rows = await self._db.fetch(
                f"SELECT data FROM {self.t}_items WHERE item_id = ? AND key_name = ?",
                (item_id, key_name),
            )
            if rows:
                found[item_id] = json.loads(rows[0][0])
        return found

    async def events(self, response_id: str, after: int) -> list[dict[str, Any]]:
        rows = await self._db.fetch(
            f"SELECT data FROM {self.t}_events WHERE response_id = ? AND seq > ? ORDER BY seq",
            (response_id, after),
        )
        return [json.loads(data) for (data,) in rows]

    async def claim(self, owner: str, now: float, lease: float) -> list[StoredResponse]:
        """Background runs nobody follows (their lease ran out): now ``owner``'s."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM {self.t} WHERE background = 1 "
            "AND status IN ('queued', 'in_progress') AND lease_until < ?",
            (now,),
        )
        claimed = []
        for row in rows:
            record = _record(row)
            taken = await self._db.count(
                f"UPDATE {self.t} SET owner = ?, lease_until = ? "
                "WHERE id = ? AND lease_until = ? AND status IN ('queued', 'in_progress')",
                (owner, now + lease, record.id, record.lease_until),
            )
            if taken:
                record.owner, record.lease_until = owner, now + lease
                claimed.append(record)
        return claimed


def _row(record: StoredResponse) -> tuple[Any, ...]:
    return (
        record.id,
        record.key_name,
        record.created_at,
        record.expires_at,
        record.status,
        int(record.background),
        json.dumps(record.body),
        json.dumps(record.history),
        json.dumps(record.request),
        json.dumps(record.job_ids),
        record.seq,
        record.owner,
        record.lease_until,
    )


def _record(row: Sequence[Any]) -> StoredResponse:
    (
        rid,
        key,
        created,
        expires,
        status,
        background,
        body,
        history,
        request,
        jobs,
        seq,
        owner,
        lease,
    ) = row
    return StoredResponse(
        id=str(rid),
        key_name=str(key),
        created_at=float(created),
        expires_at=float(expires),
        status=str(status),
        background=bool(background),
        body=json.loads(body),
        history=json.loads(history),
        request=json.loads(request),
        job_ids=[str(j) for j in json.loads(jobs)],
        seq=int(seq),
        owner=None if owner is None else str(owner),
        lease_until=float(lease),
    )


__all__ = ["ResponseStore", "StoredResponse"]
