"""Batches and their lines, in the database: what a restarted gateway resumes from.

Tables (``T`` is ``batches.table``), created when missing::

    T        id, key_id (the owning key's identity), key_name, door ('openai' | 'anthropic'),
             status, created_at, expires_at, body (the batch object, counts aside), owner,
             lease_until (who runs it)
    T_lines  batch_id, n, custom_id, request (the line's body), state, attempts, job_ids,
             kind ('output' | 'error'), result (the output or error line),
             input_tokens, output_tokens (what its answer used; NULL until it is done)

A line is ``queued``, ``submitting``, then ``submitted`` (its job ids stored the moment the
upstream gave them, so a restart follows those jobs rather than asking again), then ``done``
with a result; or ``cancelled`` / ``expired`` if it never ran. A batch is run by the gateway
holding its lease.

A batch belongs to the *identity* of the key that made it (``gateway.keys.digests.owner``), as
a stored response does, never to its name (kept for display and the ledger): another key, or
a new key that reuses a removed key's name, finds nothing, and the runner never runs a batch
under a key of another identity. Rows of an older gateway have no ``key_id``: they belong to
no key (only the admin views and ``gateway batches`` show them), and one still active ends,
as a batch whose key is gone does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.db import Database, Databases, add_columns, check_url

#: Batch statuses a runner still has work in.
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
#: Columns added to ``T_lines`` since it was first made (name, declaration).
_ADDED_TO_LINES = (("input_tokens", "INTEGER"), ("output_tokens", "INTEGER"))


@dataclass(slots=True)
class StoredBatch:
    id: str
    key_name: str
    door: str
    status: str
    created_at: float
    expires_at: float
    body: dict[str, Any]
    #: The owning key's identity (None: a row of an older gateway, which no key owns).
    key_id: str | None = field(kw_only=True)


@dataclass(slots=True)
class Line:
    batch_id: str
    n: int
    custom_id: str
    request: dict[str, Any]
    state: str = "queued"
    attempts: int = 0
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Counts:
    total: int = 0
    done: int = 0  # answered (output)
    failed: int = 0  # in the error file
    queued: int = 0
    submitted: int = 0
    cancelled: int = 0
    expired: int = 0
    #: Tokens the lines' answers used, summed (each line's, stored when it finished).
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def pending(self) -> int:
        return self.queued + self.submitted

    def usage(self) -> dict[str, Any]:
        """OpenAI's batch ``usage`` (the upstream reports no cached or reasoning tokens)."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


_BATCH = "id, key_name, door, status, created_at, expires_at, body, key_id"


class BatchStore:
    """Batches for one database URL; open it before use."""

    def __init__(self, url: str, table: str, databases: Databases | None = None) -> None:
        self.url = check_url(url)
        self.t = table
        #: A handle on the project's one database layer (gateway/db.py): same URL, same pool.
        self.db: Database = (databases or Databases()).get(url)
        self.is_open = False

    async def open(self) -> None:
        """Open the database and create the tables when missing."""
        if self.is_open:
            return
        await self.db.open()
        t = self.t
        statements = [
            f"""CREATE TABLE IF NOT EXISTS {t} (
                id TEXT PRIMARY KEY, key_name TEXT NOT NULL, door TEXT NOT NULL,
                status TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, owner TEXT,
                lease_until DOUBLE PRECISION NOT NULL, key_id TEXT)""",
            f"CREATE INDEX IF NOT EXISTS {t}_key ON {t} (key_name, door, created_at)",
            f"CREATE INDEX IF NOT EXISTS {t}_active ON {t} (status, lease_until)",
            f"""CREATE TABLE IF NOT EXISTS {t}_lines (
                batch_id TEXT NOT NULL, n INTEGER NOT NULL, custom_id TEXT NOT NULL,
                request TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
                job_ids TEXT NOT NULL, kind TEXT, result TEXT,
                PRIMARY KEY (batch_id, n))""",
            f"CREATE INDEX IF NOT EXISTS {t}_lines_state ON {t}_lines (batch_id, state)",
        ]
        try:
            async with self.db.transaction() as tx:
                if self.db.dialect == "postgresql":  # replicas starting together
                    await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(?))", [t])
                for sql in statements:
                    await tx.execute(sql)
                await add_columns(tx, self.db.dialect, t, [("key_id", "TEXT")])  # older tables
                await tx.execute(
                    f"CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (key_id, door, created_at)"
                )
                await add_columns(tx, self.db.dialect, f"{t}_lines", _ADDED_TO_LINES)
        except BaseException:
            await self.db.close()
            raise
        self.is_open = True

    async def close(self) -> None:
        self.is_open = False
        await self.db.close()

    # ------------------------------------------------------------------ batches

    async def add_lines(self, lines: Sequence[Line]) -> None:
        await self.db.execute_many(
            f"INSERT INTO {self.t}_lines (batch_id, n, custom_id, request, state, attempts, "
            "job_ids, kind, result) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
            [
                (x.batch_id, x.n, x.custom_id, json.dumps(x.request), x.state, 0, "[]")
                for x in lines
            ],
        )

    async def put(self, batch: StoredBatch) -> None:
        await self.db.execute(
            f"INSERT INTO {self.t} ({_BATCH}, owner, lease_until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)",
            (
                batch.id, batch.key_name, batch.door, batch.status, batch.created_at,
                batch.expires_at, json.dumps(batch.body), batch.key_id,
            ),
        )  # fmt: skip

    async def save(self, batch: StoredBatch, *, was: Sequence[str] = ()) -> bool:
        """Write a batch's status and object (its runner, or a cancel); with ``was``, only
        if its status is still one of those (a cancel and the runner do not overwrite each
        other). Whether it was written."""
        sql = f"UPDATE {self.t} SET status = ?, body = ? WHERE id = ?"
        params: list[Any] = [batch.status, json.dumps(batch.body), batch.id]
        if was:
            sql += f" AND status IN ({', '.join('?' for _ in was)})"
            params += list(was)
        return await self.db.execute(sql, params) == 1

    async def get(self, batch_id: str, key_id: str | None, door: str | None) -> StoredBatch | None:
        """A batch (of the identity ``key_id`` and ``door``; None: of any)."""
        sql = f"SELECT {_BATCH} FROM {self.t} WHERE id = ?"
        params: list[Any] = [batch_id]
        if door is not None:
            sql += " AND door = ?"
            params.append(door)
        if key_id is not None:  # a NULL key_id (an older gateway's row) matches none
            sql += " AND key_id = ?"
            params.append(key_id)
        rows = await self.db.fetch(sql, params)
        return _batch(rows[0]) if rows else None

    async def page(
        self,
        key_id: str | None,
        door: str | None,
        *,
        after: str | None,
        limit: int,
        key_name: str | None = None,
    ) -> list[StoredBatch]:
        """A page of batches, newest first (``key_id``, ``door`` None: every key's, door's;
        ``key_name``: only the batches made under that name, for the admin views)."""
        sql = f"SELECT {_BATCH} FROM {self.t} WHERE 1 = 1"
        params: list[Any] = []
        if door is not None:
            sql += " AND door = ?"
            params.append(door)
        if key_id is not None:
            sql += " AND key_id = ?"
            params.append(key_id)
        if key_name is not None:
            sql += " AND key_name = ?"
            params.append(key_name)
        if after is not None:
            anchor = await self.get(after, key_id, door)
            if anchor is None:
                return []
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params += [anchor.created_at, anchor.created_at, anchor.id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [_batch(row) for row in await self.db.fetch(sql, params)]

    async def purge(self, before: float) -> int:
        """Delete the ended batches made before ``before`` (unix time), with their lines."""
        marks = ", ".join("?" for _ in ACTIVE)
        rows = await self.db.fetch(
            f"SELECT id FROM {self.t} WHERE created_at < ? AND status NOT IN ({marks})",
            (before, *ACTIVE),
        )
        for (batch_id,) in rows:
            await self.delete(str(batch_id))
        return len(rows)

    async def delete(self, batch_id: str) -> None:
        await self.db.execute(f"DELETE FROM {self.t}_lines WHERE batch_id = ?", (batch_id,))
        await self.db.execute(f"DELETE FROM {self.t} WHERE id = ?", (batch_id,))

    # ------------------------------------------------------------------ leases

    async def lease(self, batch_id: str) -> tuple[str | None, float]:
        """Who runs the batch, and until when (unix time) unless renewed."""
        rows = await self.db.fetch(
            f"SELECT owner, lease_until FROM {self.t} WHERE id = ?", (batch_id,)
        )
        return (rows[0][0], float(rows[0][1])) if rows else (None, 0.0)

    async def claim(self, batch_id: str, owner: str, now: float, lease: float) -> bool:
        """Take (or keep) a batch's lease: only when it is free, lapsed or already ours."""
        changed = await self.db.execute(
            f"UPDATE {self.t} SET owner = ?, lease_until = ? WHERE id = ? "
            "AND (owner IS NULL OR owner = ? OR lease_until < ?)",
            (owner, now + lease, batch_id, owner, now),
        )
        return changed == 1

    async def claimable(self, owner: str, now: float) -> list[str]:
        """Active batches with no live runner (or ours), oldest first."""
        marks = ", ".join("?" for _ in ACTIVE)
        rows = await self.db.fetch(
            f"SELECT id FROM {self.t} WHERE status IN ({marks}) "
            "AND (owner IS NULL OR owner = ? OR lease_until < ?) ORDER BY created_at",
            (*ACTIVE, owner, now),
        )
        return [str(row[0]) for row in rows]

    async def renew(self, ids: Sequence[str], owner: str, now: float, lease: float) -> list[str]:
        """Extend our leases; the ids we still hold."""
        return [i for i in ids if await self.claim(i, owner, now, lease)]

    async def release(self, batch_id: str, owner: str) -> None:
        await self.db.execute(
            f"UPDATE {self.t} SET owner = NULL, lease_until = 0 WHERE id = ? AND owner = ?",
            (batch_id, owner),
        )

    # ------------------------------------------------------------------ lines

    async def lines(self, batch_id: str, states: Sequence[str], limit: int) -> list[Line]:
        marks = ", ".join("?" for _ in states)
        rows = await self.db.fetch(
            f"SELECT batch_id, n, custom_id, request, state, attempts, job_ids "
            f"FROM {self.t}_lines WHERE batch_id = ? AND state IN ({marks}) ORDER BY n LIMIT ?",
            (batch_id, *states, limit),
        )
        return [
            Line(
                str(r[0]), int(r[1]), str(r[2]), json.loads(r[3]), str(r[4]), int(r[5]),
                tuple(json.loads(r[6])),
            )
            for r in rows
        ]  # fmt: skip

    async def submitting(self, batch_id: str, numbers: Sequence[int]) -> None:
        """These lines are about to be submitted (see ``Runner._mark_submitting``)."""
        for start in range(0, len(numbers), 500):
            part = numbers[start : start + 500]
            await self.db.execute(
                f"UPDATE {self.t}_lines SET state = 'submitting' WHERE batch_id = ? "
                f"AND n IN ({', '.join('?' for _ in part)})",
                (batch_id, *part),
            )

    async def submitted(self, line: Line, job_ids: Sequence[str]) -> None:
        """The line's jobs exist upstream: from now on it is followed, never submitted again."""
        await self.db.execute(
            f"UPDATE {self.t}_lines SET state = 'submitted', job_ids = ?, attempts = ? "
            "WHERE batch_id = ? AND n = ?",
            (json.dumps(list(job_ids)), line.attempts, line.batch_id, line.n),
        )

    async def retry(self, line: Line) -> None:
        """Its job failed: queue it again (its next submission is a new try)."""
        await self.db.execute(
            f"UPDATE {self.t}_lines SET state = 'queued', job_ids = '[]', attempts = ? "
            "WHERE batch_id = ? AND n = ?",
            (line.attempts, line.batch_id, line.n),
        )

    async def finish(
        self, line: Line, kind: str, result: dict[str, Any], tokens: tuple[int, int] = (0, 0)
    ) -> None:
        """The line is done: its result, and the (input, output) tokens its answer used."""
        await self.db.execute(
            f"UPDATE {self.t}_lines SET state = 'done', kind = ?, result = ?, input_tokens = ?, "
            "output_tokens = ? WHERE batch_id = ? AND n = ?",
            (kind, json.dumps(result), tokens[0], tokens[1], line.batch_id, line.n),
        )

    async def abandon(self, batch_id: str, state: str) -> int:
        """The lines not yet submitted will not be: ``cancelled`` or ``expired``."""
        return await self.db.execute(
            f"UPDATE {self.t}_lines SET state = ? WHERE batch_id = ? "
            "AND state IN ('queued', 'submitting')",
            (state, batch_id),
        )

    async def counts(self, batch_id: str) -> Counts:
        rows = await self.db.fetch(
            f"SELECT state, kind, COUNT(*), SUM(input_tokens), SUM(output_tokens) "
            f"FROM {self.t}_lines WHERE batch_id = ? GROUP BY state, kind",
            (batch_id,),
        )
        by: dict[tuple[str, str | None], int] = {(str(r[0]), r[1]): int(r[2]) for r in rows}
        return Counts(
            total=sum(by.values()),
            done=by.get(("done", "output"), 0),
            failed=by.get(("done", "error"), 0),
            queued=by.get(("queued", None), 0) + by.get(("submitting", None), 0),
            submitted=by.get(("submitted", None), 0),
            cancelled=by.get(("cancelled", None), 0),
            expired=by.get(("expired", None), 0),
            input_tokens=sum(int(r[3] or 0) for r in rows),
            output_tokens=sum(int(r[4] or 0) for r in rows),
        )

    async def results(self, batch_id: str, after: int, limit: int) -> list[tuple[int, str, str]]:
        """A page of results in line order: (n, kind, result JSON), or for a line that never
        ran, (n, state, custom_id)."""
        rows = await self.db.fetch(
            f"SELECT n, kind, result, state, custom_id FROM {self.t}_lines "
            "WHERE batch_id = ? AND n > ? ORDER BY n LIMIT ?",
            (batch_id, after, limit),
        )
        return [
            (int(r[0]), str(r[1]), str(r[2])) if r[1] is not None
            else (int(r[0]), str(r[3]), str(r[4]))
            for r in rows
        ]  # fmt: skip


def _batch(row: Sequence[Any]) -> StoredBatch:
    return StoredBatch(
        id=str(row[0]),
        key_name=str(row[1]),
        door=str(row[2]),
        status=str(row[3]),
        created_at=float(row[4]),
        expires_at=float(row[5]),
        body=json.loads(row[6]),
        key_id=None if row[7] is None else str(row[7]),
    )
