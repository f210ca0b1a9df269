"""Stored responses, in the ledger's database (SQLite or PostgreSQL) or one of their own.

Three tables, created when missing (``T`` is ``responses.table``)::

    T         id, key_id (the owning key's identity), key_name, created_at, expires_at, status,
              background, body (the response object; its output moves to T_items once final),
              previous_id (the chain: referenced, never copied), request (the body without its
              input, to plan again after a restart), job_ids, seq (the next stream sequence
              number), owner, lease_until (who follows a background run), bytes (everything
              stored for it: what the key's quota counts), body_bytes (the rewritable part)
    T_items   item_id, response_id, key_id, key_name, position, role ('input' | 'output'), data
    T_events  response_id, seq, data: a background stream's events, for resuming it

Every item is stored once. A continuation walks ``previous_id`` back to the first response
(one recursive query); the ``history`` column of older gateways' copies is no longer written;
a deleted response stays as a tombstone (status ``deleted``, no content) so the chain behind it
still links, but its own turn is gone from everything sent upstream again. Every multi-row
write is one transaction. A response belongs to a key's *identity* (``gateway.keys.digests.owner``),
never its name: another key's id, or a new key that reuses a name, finds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.db import Database, Databases, DatabaseUnavailable, Tx, add_columns, check_url
from gateway.errors import ServiceUnavailable
from gateway.openai.responses.commits import GroupCommit
from gateway.openai.responses.quota import KeyUsage
from gateway.openai.responses.rows import (
    COLUMNS,
    ITEMS_INSERT,
    Dumped,
    StoredResponse,
    dumps,
    from_row,
    stored_body,
    stored_len,
    to_row,
)

ACTIVE = ("submitting", "queued", "in_progress")
#: A row still going, as SQL. Written with OR, not ``status IN (...)``: SQLite builds a
#: temporary table for an IN list on every statement that evaluates it, the insert into the
#: partial index below included (a fifth of a stored response's cost in SQLite's thread).
_ACTIVE_SQL = "(status = 'submitting' OR status = 'queued' OR status = 'in_progress')"
#: Most ancestors a chain is followed through (ids are unique, so there are no loops).
MAX_CHAIN = 10_000


class StoreUnavailable(ServiceUnavailable):
    """The database is down or stalled: the documented 503."""

    def __init__(self) -> None:
        super().__init__(
            "Stored responses are unavailable: the gateway cannot reach its database.",
            code="store_unavailable",
        )


#: Columns a table made by an older gateway lacks.
_ADDED = (
    ("", "key_id", "TEXT"),
    ("", "previous_id", "TEXT"),
    ("", "bytes", "BIGINT NOT NULL DEFAULT 0"),
    ("", "body_bytes", "BIGINT NOT NULL DEFAULT 0"),
    ("", "request_id", "TEXT"),
    ("_items", "key_id", "TEXT"),
)


class ResponseStore:
    """Stored responses in one database; open it before use."""

    def __init__(
        self, url: str, table: str = "gateway_responses", databases: Databases | None = None
    ) -> None:
        try:
            check_url(url)
        except ValueError:
            raise ValueError("responses.store_url must be sqlite:/// or postgresql://") from None
        self.url = url
        self.t = table
        self.db: Database = (databases or Databases()).get(url)
        self._usage = KeyUsage()  # each key's stored bytes, between quota checks
        self._reading: dict[str, asyncio.Future[int]] = {}  # key id -> its sum being read
        self._puts: GroupCommit[_Put] = GroupCommit(self._write_puts)

    async def open(self) -> None:
        await self.db.open()
        t = self.t
        try:
            async with self.db.transaction() as tx:
                if self.db.dialect == "postgresql":
                    await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(?))", [t])
                await self._create(tx)
        except DatabaseUnavailable:
            await self.db.close()
            raise StoreUnavailable() from None
        except BaseException:
            await self.db.close()
            raise

    async def _create(self, tx: Tx) -> None:
        t = self.t
        for sql in (
            f"""CREATE TABLE IF NOT EXISTS {t} (
                id TEXT PRIMARY KEY, key_name TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL, background INTEGER NOT NULL, body TEXT NOT NULL,
                history TEXT NOT NULL, request TEXT NOT NULL, job_ids TEXT NOT NULL,
                seq INTEGER NOT NULL, owner TEXT, lease_until DOUBLE PRECISION NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS {t}_items (
                item_id TEXT NOT NULL, response_id TEXT NOT NULL, key_name TEXT NOT NULL,
                position INTEGER NOT NULL, role TEXT NOT NULL, data TEXT NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS {t}_events (
                response_id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
                PRIMARY KEY (response_id, seq))""",
        ):
            await tx.execute(sql)
        for suffix, name, declaration in _ADDED:
            await add_columns(tx, self.db.dialect, t + suffix, [(name, declaration)])
        for sql in (
            f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at)",
            # Only runs still going are indexed for the claim (a finished response, most of
            # them, adds no entry); it replaces the index on every row that older gateways made
            # (_active) and the same one with an IN list (_running).
            f"CREATE INDEX IF NOT EXISTS {t}_going ON {t} (lease_until) WHERE {_ACTIVE_SQL}",
            f"DROP INDEX IF EXISTS {t}_active",
            f"DROP INDEX IF EXISTS {t}_running",
            # The quota's sum reads this index alone, not every stored row of the key with its
            # body (it replaces the one on key_id, which older gateways made).
            f"CREATE INDEX IF NOT EXISTS {t}_key_bytes ON {t} (key_id, expires_at, bytes)",
            f"DROP INDEX IF EXISTS {t}_key",
            f"CREATE INDEX IF NOT EXISTS {t}_items_response ON {t}_items (response_id, position)",
            f"CREATE INDEX IF NOT EXISTS {t}_items_item2 ON {t}_items (item_id, key_id)",
        ):
            await tx.execute(sql)

    async def close(self) -> None:
        await self._puts.close()  # what is queued is written first
        await self.db.close()

    # ------------------------------------------------------------------ writes

    async def put(
        self,
        record: StoredResponse,
        inputs: Sequence[dict[str, Any]],
        *,
        chain: Sequence[str] = (),
        dumped: Dumped | None = None,
    ) -> int:
        """Insert a new response with its input items (and output items, if final), committed
        before this returns; its ancestors live at least as long as it does. Returns the bytes
        stored. ``dumped``: the request's and the inputs' text, if the caller has it already
        (counted before the run).

        Group commit (:mod:`.commits`): a put goes at once when none is being written; puts
        arriving meanwhile share the next transaction; one the database refuses fails alone."""
        final = record.status not in ACTIVE
        body = stored_body(record.body, final)
        request = dumped.request if dumped else dumps(record.request)
        items = self._item_rows(record, inputs, "input", dumped.inputs if dumped else None)
        if final:
            items += self._item_rows(record, record.body.get("output") or [], "output")
        size = stored_len(body) + stored_len(request) + sum(stored_len(row[-1]) for row in items)
        await self._puts.submit(_Put(record, body, request, items, tuple(chain), size))
        self._usage.stored(record.key_id, size)
        return size

    async def _write_puts(self, batch: Sequence[_Put]) -> None:
        statements: list[tuple[str, Sequence[Sequence[Any]]]] = [
            (
                f"INSERT INTO {self.t} ({COLUMNS}, history, bytes, body_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?)",
                [[*to_row(p.record, p.body, p.request), p.size, stored_len(p.body)] for p in batch],
            ),
            (ITEMS_INSERT.format(t=self.t), [row for p in batch for row in p.items]),
        ]
        for put in batch:
            if put.chain:
                marks = ", ".join("?" for _ in put.chain)
                expires = put.record.expires_at
                statements.append(
                    (
                        f"UPDATE {self.t} SET expires_at = ? WHERE id IN ({marks}) "
                        "AND expires_at < ?",
                        [[expires, *put.chain, expires]],
                    )
                )
        try:
            await self.db.write(statements)  # one transaction (one trip on SQLite)
        except DatabaseUnavailable:
            raise StoreUnavailable() from None

    def _item_rows(
        self,
        record: StoredResponse,
        items: Sequence[dict[str, Any]],
        role: str,
        texts: Sequence[str] | None = None,
    ) -> list[tuple[Any, ...]]:
        if texts is None:
            texts = [dumps(item) for item in items]
        rid, kid, name = record.id, record.key_id, record.key_name
        return [
            (str(item.get("id")), rid, kid, name, i, role, text)
            for i, (item, text) in enumerate(zip(items, texts, strict=True))
        ]

    async def _insert_items(self, tx: Tx, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await tx.execute_many(ITEMS_INSERT.format(t=self.t), rows)

    async def submitted(self, record: StoredResponse) -> bool:
        """Its job ids are durable: ``submitting`` -> ``queued``, in one statement."""
        async with self._tx() as tx:
            changed = await tx.execute(
                f"UPDATE {self.t} SET status = ?, job_ids = ?, lease_until = ? "
                "WHERE id = ? AND status = 'submitting'",
                [record.status, dumps(record.job_ids), record.lease_until, record.id],
            )
        return changed > 0

    async def update(
        self,
        record: StoredResponse,
        events: Sequence[dict[str, Any]] = (),
        *,
        final: bool = False,
    ) -> bool:
        """Save progress (the object, the next seq, new stream events) in one transaction;
        False when the response is gone or was cancelled elsewhere (its runner then stops).
        Events already stored (a save retried after an unknown outcome) are kept as they are."""
        t = self.t
        body = stored_body(record.body, final)
        outputs = (
            self._item_rows(record, record.body.get("output") or [], "output") if final else []
        )
        rows = [(record.id, e["sequence_number"], dumps(e)) for e in events]
        rewritten = stored_len(body) + sum(stored_len(r[-1]) for r in outputs)
        self._usage.changed(record.key_id)  # its bytes change here: the next check reads them
        async with self._tx() as tx:
            changed = await tx.execute(
                f"UPDATE {t} SET status = ?, body = ?, job_ids = ?, seq = ?, lease_until = ?, "
                "bytes = bytes - body_bytes + ?, body_bytes = ? "
                f"WHERE id = ? AND {_ACTIVE_SQL}",
                [
                    record.status,
                    body,
                    dumps(record.job_ids),
                    record.seq,
                    record.lease_until,
                    rewritten,
                    rewritten,
                    record.id,
                ],
            )
            if changed and rows:
                await tx.execute_many(
                    f"INSERT INTO {t}_events (response_id, seq, data) VALUES (?, ?, ?) "
                    "ON CONFLICT (response_id, seq) DO NOTHING",
                    rows,
                )
                await tx.execute(
                    f"UPDATE {t} SET bytes = bytes + ? WHERE id = ?",
                    [sum(stored_len(r[-1]) for r in rows), record.id],
                )
            if changed and outputs:
                await self._insert_items(tx, outputs)
        return changed > 0

    async def cancel(self, response_id: str, key_id: str, body: dict[str, Any]) -> bool:
        """Mark a background response cancelled; False when it had already ended."""
        data = dumps(body)
        async with self._tx() as tx:
            changed = await tx.execute(
                f"UPDATE {self.t} SET status = 'cancelled', body = ?, lease_until = 0, "
                "bytes = bytes - body_bytes + ?, body_bytes = ? "
                f"WHERE id = ? AND key_id = ? AND {_ACTIVE_SQL}",
                [data, stored_len(data), stored_len(data), response_id, key_id],
            )
        return changed > 0

    async def delete(self, response_id: str, key_id: str) -> bool:
        """Erase a response's content; a tombstone keeps the chain behind it linked."""
        t = self.t
        async with self._tx() as tx:
            found = await tx.execute(
                f"UPDATE {t} SET status = 'deleted', body = '{{}}', request = '{{}}', "
                "history = '[]', job_ids = '[]', bytes = 0, body_bytes = 0, lease_until = 0, "
                "request_id = NULL "
                "WHERE id = ? AND key_id = ? AND status <> 'deleted'",
                [response_id, key_id],
            )
            if found:
                await tx.execute(f"DELETE FROM {t}_items WHERE response_id = ?", [response_id])
                await tx.execute(f"DELETE FROM {t}_events WHERE response_id = ?", [response_id])
        return found > 0

    async def purge(self, now: float) -> int:
        """Delete what outlived its retention."""
        t = self.t
        gone = await self._fetch(f"SELECT id FROM {t} WHERE expires_at < ? LIMIT 500", [now])
        for (response_id,) in gone:
            async with self._tx() as tx:
                await tx.execute(f"DELETE FROM {t}_items WHERE response_id = ?", [response_id])
                await tx.execute(f"DELETE FROM {t}_events WHERE response_id = ?", [response_id])
                await tx.execute(f"DELETE FROM {t} WHERE id = ?", [response_id])
        return len(gone)

    # ------------------------------------------------------------------ reads

    async def get(self, response_id: str, key_id: str, now: float) -> StoredResponse | None:
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM {self.t} WHERE id = ? AND key_id = ? AND expires_at >= ? "
            "AND status <> 'deleted'",
            [response_id, key_id, now],
        )
        if not rows:
            return None
        record = from_row(rows[0])
        if "output" not in record.body:  # final: its output items are stored once, apart
            record.body["output"] = await self.items(record.id, role="output")
        return record

    async def items(self, response_id: str, *, role: str = "input") -> list[dict[str, Any]]:
        rows = await self._fetch(
            f"SELECT data FROM {self.t}_items WHERE response_id = ? AND role = ? ORDER BY position",
            [response_id, role],
        )
        return [json.loads(data) for (data,) in rows]

    async def chain(self, response_id: str, key_id: str) -> tuple[list[dict[str, Any]], list[str]]:
        """The items a continuation of ``response_id`` starts from (oldest first), and the ids
        of the responses they come from. Deleted turns are left out; the chain goes on."""
        t = self.t
        rows = await self._fetch(
            f"""WITH RECURSIVE chain (id, previous_id, depth) AS (
                SELECT id, previous_id, 0 FROM {t} WHERE id = ? AND key_id = ?
                UNION ALL
                SELECT r.id, r.previous_id, c.depth + 1
                FROM {t} r JOIN chain c ON r.id = c.previous_id
                WHERE r.key_id = ? AND c.depth < ?)
            SELECT id FROM chain ORDER BY depth""",
            [response_id, key_id, key_id, MAX_CHAIN],
        )
        ids = [str(rid) for (rid,) in rows]
        if not ids:
            return [], []
        marks = ", ".join("?" for _ in ids)
        rows = await self._fetch(
            f"SELECT response_id, role, data FROM {self.t}_items WHERE response_id IN ({marks}) "
            "ORDER BY response_id, role, position",
            ids,
        )
        turns: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for rid, role, data in rows:
            turns.setdefault(str(rid), {}).setdefault(str(role), []).append(json.loads(data))
        history_items: list[dict[str, Any]] = []
        for rid in reversed(ids):
            turn = turns.get(rid, {})
            history_items += turn.get("input", []) + turn.get("output", [])
        return history_items, ids

    async def find_items(self, ids: Sequence[str], key_id: str) -> dict[str, dict[str, Any]]:
        """Items by id, of this key's responses (for ``item_reference``)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        rows = await self._fetch(
            f"SELECT item_id, data FROM {self.t}_items WHERE key_id = ? AND item_id IN ({marks})",
            [key_id, *wanted],
        )
        found: dict[str, dict[str, Any]] = {}
        for item_id, data in rows:
            found.setdefault(str(item_id), json.loads(data))
        return found

    async def stored_bytes(self, key_id: str, now: float) -> int:
        """Everything this key keeps stored, as counted: its quota."""
        rows = await self._fetch(
            f"SELECT COALESCE(SUM(bytes), 0) FROM {self.t} WHERE key_id = ? AND expires_at >= ?",
            [key_id, now],
        )
        return int(rows[0][0])

    async def quota_used(self, key_id: str, now: float, adding: int, cap: int) -> int:
        """The key's stored bytes for a quota check of ``adding`` more against ``cap``: from
        memory while that leaves room (:mod:`.quota`), else (and before any refusal) read."""
        known = self._usage.answer(key_id, now, adding, cap)
        if known is not None:
            return known
        reading = self._reading.get(key_id)
        if reading is not None:  # checks arriving during a read share it, not one read each
            with contextlib.suppress(Exception):  # it failed: read alone, below
                await asyncio.shield(reading)
            known = self._usage.answer(key_id, now, adding, cap)
            if known is not None:
                return known
        return await self._read_usage(key_id, now)

    async def _read_usage(self, key_id: str, now: float) -> int:
        """Read the key's sum and remember it; the checks that come meanwhile wait for it."""
        reading: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reading[key_id] = reading
        try:
            used = await self.stored_bytes(key_id, now)
        except BaseException:
            reading.set_exception(RuntimeError("the quota read failed"))  # they read alone
            reading.exception()  # retrieved, whether or not anyone waits
            raise
        finally:
            if self._reading.get(key_id) is reading:
                del self._reading[key_id]
        self._usage.read(key_id, now, used)
        reading.set_result(used)
        return used

    async def events(self, response_id: str, after: int) -> list[dict[str, Any]]:
        rows = await self._fetch(
            f"SELECT data FROM {self.t}_events WHERE response_id = ? AND seq > ? ORDER BY seq",
            [response_id, after],
        )
        return [json.loads(data) for (data,) in rows]

    async def claim(self, owner: str, now: float, lease: float) -> list[StoredResponse]:
        """Background runs nobody follows (their lease ran out): now ``owner``'s."""
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM {self.t} WHERE background = 1 "
            f"AND {_ACTIVE_SQL} AND lease_until < ?",
            [now],
        )
        claimed = []
        for row in rows:
            record = from_row(row)
            async with self._tx() as tx:
                taken = await tx.execute(
                    f"UPDATE {self.t} SET owner = ?, lease_until = ? "
                    f"WHERE id = ? AND lease_until = ? AND {_ACTIVE_SQL}",
                    [owner, now + lease, record.id, record.lease_until],
                )
            if taken:
                record.owner, record.lease_until = owner, now + lease
                claimed.append(record)
        return claimed

    # ------------------------------------------------------------------ the database

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return await self.db.fetch(sql, params)
        except DatabaseUnavailable:
            raise StoreUnavailable() from None

    def _tx(self) -> _Guarded:
        return _Guarded(self.db)


@dataclass(slots=True, eq=False)
class _Put:
    """A response waiting for its transaction."""

    record: StoredResponse
    body: str
    request: str
    items: list[tuple[Any, ...]]
    chain: tuple[str, ...]
    size: int


class _Guarded:
    """A transaction whose database failures are the documented 503."""

    def __init__(self, db: Database) -> None:
        self._cm = db.transaction()

    async def __aenter__(self) -> Tx:
        try:
            return await self._cm.__aenter__()
        except DatabaseUnavailable:
            raise StoreUnavailable() from None

    async def __aexit__(self, *exc: Any) -> bool | None:
        try:
            return await self._cm.__aexit__(*exc)
        except DatabaseUnavailable:
            raise StoreUnavailable() from None


__all__ = ["ResponseStore", "StoreUnavailable", "StoredResponse"]
