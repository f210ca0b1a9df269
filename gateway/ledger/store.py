"""The ledger's storage interface, and the SQL both databases share.

One table, one row per request, created when missing::

    request_id TEXT, time (UTC), key_name TEXT, model TEXT, endpoint TEXT, stream BOOLEAN,
    prompt_tokens INTEGER, completion_tokens INTEGER, job_ids TEXT (a JSON array),
    outcome TEXT, status_code INTEGER, duration_ms REAL, queue_ms REAL NULL,
    ttft_ms REAL NULL, prompt_text TEXT NULL, cached BOOLEAN, tokens_saved INTEGER

(the last two were added later: :data:`ADDED_COLUMNS` are added to an older table on open)

with an index on ``time`` and one on ``(key_name, time)``: reports select a time range, often
for one key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.db import Database, add_columns
from gateway.ledger.record import IN_FLIGHT, INTERRUPTED, UsageRecord, UsageRow

DEFAULT_TABLE = "gateway_usage"

COLUMNS = (
    "request_id",
    "time",
    "key_name",
    "model",
    "endpoint",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "job_ids",
    "outcome",
    "status_code",
    "duration_ms",
    "queue_ms",
    "ttft_ms",
    "prompt_text",
    "cached",
    "tokens_saved",
)

#: Columns added after the first release, as (name, SQL type and default), for older tables.
ADDED_COLUMNS = (
    ("cached", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("tokens_saved", "INTEGER NOT NULL DEFAULT 0"),
)

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class LedgerStore(Protocol):
    """A database holding usage records."""

    async def open(self) -> None:
        """Connect and create the table and its indexes if they are missing."""
        ...

    async def write_many(
        self, records: Sequence[UsageRecord], replacing: Sequence[str] = (), *, first: bool = False
    ) -> None:
        """Insert ``records`` and delete the rows that the final rows of the request ids in
        ``replacing`` supersede (see :func:`superseded_sql`), in one transaction. ``first``:
        none of ``records`` was handed to the database before, so none can be there already
        (a batch written again after a commit it never saw must not count twice)."""
        ...

    async def mark_interrupted(self, before: datetime) -> int:
        """``in_flight`` rows older than ``before`` (their process died) become
        ``interrupted``; how many."""
        ...

    async def budget_usage(self, since: datetime, cached: bool) -> dict[str, int]:
        """Tokens per key name since ``since``; cache hits counted only when ``cached``."""
        ...

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        """Usage grouped by key and model for ``since <= time < until`` (``None``: unbounded)."""
        ...

    async def close(self) -> None: ...


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(moment: datetime) -> str:
    """SQLite's times: fixed-width ISO-8601 UTC text, which sorts like the times themselves."""
    return as_utc(moment).strftime(_TIME_FORMAT)


class SqlLedgerStore:
    """A :class:`LedgerStore` in SQLite or PostgreSQL, through :mod:`gateway.db`.

    On SQLite times are stored as fixed-width ISO-8601 UTC text (readable in the ``sqlite3``
    shell), on PostgreSQL as ``TIMESTAMPTZ``; replicas creating the table at once take a
    transaction-scoped advisory lock so their ``CREATE ... IF NOT EXISTS`` do not race.
    """

    def __init__(self, db: Database, *, table: str = DEFAULT_TABLE) -> None:
        self.db = db
        self.table = check_table_name(table)
        self._pg = db.dialect == "postgresql"

    async def open(self) -> None:
        await self.db.open()
        t, pg = self.table, self._pg
        try:
            async with self.db.transaction() as tx:
                if pg:
                    await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(?))", [t])
                time_type, bool_type = ("TIMESTAMPTZ", "BOOLEAN") if pg else ("TEXT", "INTEGER")
                await tx.execute(
                    f"""CREATE TABLE IF NOT EXISTS {t} (
                        request_id TEXT NOT NULL,
                        "time" {time_type} NOT NULL,
                        key_name TEXT NOT NULL,
                        model TEXT NOT NULL,
                        endpoint TEXT NOT NULL,
                        stream {bool_type} NOT NULL,
                        prompt_tokens INTEGER NOT NULL,
                        completion_tokens INTEGER NOT NULL,
                        job_ids TEXT NOT NULL,
                        outcome TEXT NOT NULL,
                        status_code INTEGER NOT NULL,
                        duration_ms DOUBLE PRECISION NOT NULL,
                        queue_ms DOUBLE PRECISION,
                        ttft_ms DOUBLE PRECISION,
                        prompt_text TEXT,
                        cached {bool_type} NOT NULL DEFAULT {"FALSE" if pg else "0"},
                        tokens_saved INTEGER NOT NULL DEFAULT 0
                    )"""
                )
                await add_columns(tx, self.db.dialect, t, ADDED_COLUMNS)  # made by an older gateway
                await tx.execute(f'CREATE INDEX IF NOT EXISTS {t}_time ON {t} ("time")')
                await tx.execute(
                    f'CREATE INDEX IF NOT EXISTS {t}_key_time ON {t} (key_name, "time")'
                )
                await tx.execute(in_flight_index_sql(t))
                await tx.execute(f"CREATE INDEX IF NOT EXISTS {t}_request ON {t} (request_id)")
        except BaseException:
            await self.db.close()
            raise

    async def write_many(
        self, records: Sequence[UsageRecord], replacing: Sequence[str] = (), *, first: bool = False
    ) -> None:
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        times = [self._time(r.time) for r in records]  # each formatted once, not per statement
        finals = [(r, t) for r, t in zip(records, times, strict=True) if r.outcome != IN_FLIGHT]
        replaced = set(replacing)
        statements: list[tuple[str, Sequence[Sequence[Any]]]] = []
        if finals and not first:  # a batch retried after a commit it never saw: rows once
            rows = [(r.request_id, r.key_name, t) for r, t in finals]
            statements.append((same_request_sql(self.table), rows))
        statements.append(
            (
                f"INSERT INTO {self.table} ({columns}) VALUES ({marks})",
                [self._row(r, t) for r, t in zip(records, times, strict=True)],
            )
        )
        # After the inserts: an in-flight row retried in this very batch (its first write
        # failed) goes too, not only one already in the table. Rows are a request's by its
        # id and key together: a client's x-request-id may repeat, another key's row stays.
        ending = [self._superseded(r, t) for r, t in finals if r.request_id in replaced]
        statements.append((superseded_sql(self.table), ending))
        await self.db.write(statements)  # one transaction: nothing of a refused batch stays

    async def mark_interrupted(self, before: datetime) -> int:
        return await self.db.execute(interrupted_sql(self.table), [self._time(before)])

    async def budget_usage(self, since: datetime, cached: bool) -> dict[str, int]:
        rows = await self.db.fetch(budget_sql(self.table, cached), [self._time(since)])
        return {str(key): int(tokens) for key, tokens in rows}

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        sql, params = report_query(
            self.table,
            self._time(since) if since is not None else None,
            self._time(until) if until is not None else None,
            key_name,
            lambda _: "?",
        )
        return [row_from_result(values) for values in await self.db.fetch(sql, params)]

    async def close(self) -> None:
        await self.db.close()

    def _superseded(self, record: UsageRecord, time: Any) -> tuple[Any, ...]:
        """The parameters of :func:`superseded_sql`: the rows ``record`` (started at ``time``,
        as stored) replaces."""
        jobs = encode_job_ids(record.job_ids) if record.job_ids else None
        return (record.request_id, record.key_name, jobs, time)

    def _time(self, moment: datetime) -> Any:
        return as_utc(moment) if self._pg else format_time(moment)

    def _row(self, record: UsageRecord, time: Any) -> tuple[Any, ...]:
        flag: Callable[[bool], Any] = bool if self._pg else int
        return (
            record.request_id,
            time,
            record.key_name,
            record.model,
            record.endpoint,
            flag(record.stream),
            record.prompt_tokens,
            record.completion_tokens,
            encode_job_ids(record.job_ids),
            record.outcome,
            record.status_code,
            float(record.duration_ms),
            record.queue_ms,
            record.ttft_ms,
            record.prompt_text,
            flag(record.cached),
            record.tokens_saved,
        )


def check_table_name(table: str) -> str:
    """Table names are spliced into SQL, so only plain identifiers are accepted."""
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(f"invalid ledger table name {table!r}: use letters, digits and _")
    return table


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def encode_job_ids(job_ids: Sequence[str]) -> str:
    return json.dumps(list(job_ids))


def decode_job_ids(text: str) -> tuple[str, ...]:
    return tuple(str(job) for job in json.loads(text)) if text else ()


def report_query(
    table: str,
    since: Any,
    until: Any,
    key_name: str | None,
    placeholder: Callable[[int], str],
) -> tuple[str, list[Any]]:
    """The grouped report as SQL and parameters; ``placeholder(n)`` spells the n-th parameter."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (('"time" >= ', since), ('"time" < ', until), ("key_name = ", key_name)):
        if value is not None:
            params.append(value)
            where.append(clause + placeholder(len(params)))
    sql = (
        "SELECT key_name, model, COUNT(*), "
        "SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
        f"COALESCE(AVG(duration_ms), 0), "
        "SUM(CASE WHEN cached THEN 1 ELSE 0 END), COALESCE(SUM(tokens_saved), 0) "
        f"FROM {table}"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " GROUP BY key_name, model ORDER BY key_name, model"
    )
    return sql, params


def same_request_sql(table: str) -> str:
    """Deletes one request's final rows (its id, key and start time, parameters 1-3), so a
    batch written again writes its rows once."""
    return (
        f'DELETE FROM {table} WHERE request_id = ? AND key_name = ? AND "time" = ? '
        f"AND outcome <> '{IN_FLIGHT}'"
    )


def superseded_sql(table: str) -> str:
    """Deletes the rows a final row replaces (parameters: its id, key, job ids, start time):
    the request's in-flight row, or the row it became at a start after a crash
    (``interrupted``), and a final row of the very same jobs written before (a process that
    died after charging a run it had not yet stored as done: the run, resumed by another
    process, is charged by that one row). A run resumed elsewhere has a start of its own, so
    rows are found by id and key; job ids are the service's, never a client's."""
    return (
        f"DELETE FROM {table} WHERE request_id = ? AND key_name = ? "
        f"AND (outcome IN ('{IN_FLIGHT}', '{INTERRUPTED}') "
        f'OR (job_ids = ? AND "time" <> ?))'
    )


def interrupted_sql(table: str) -> str:
    """Marks the in-flight rows older than parameter 1 as interrupted."""
    return (
        f"UPDATE {table} SET outcome = '{INTERRUPTED}' "
        f"WHERE outcome = '{IN_FLIGHT}' AND \"time\" < ?"
    )


def budget_sql(table: str, cached: bool) -> str:
    """Tokens per key since parameter 1, as the limits' budgets charge them."""
    hits = "" if cached else " AND NOT cached"
    return (
        f"SELECT key_name, COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM {table} "
        f'WHERE "time" >= ?{hits} GROUP BY key_name'
    )


def in_flight_index_sql(table: str) -> str:
    """A partial index: finding a request's in-flight row costs nothing on a large table."""
    return (
        f"CREATE INDEX IF NOT EXISTS {table}_in_flight ON {table} (request_id) "
        f"WHERE outcome = '{IN_FLIGHT}'"
    )


def row_from_result(values: Sequence[Any]) -> UsageRow:
    key_name, model, requests, errors, prompt, completion, avg, cached, saved = values
    return UsageRow(
        key_name=str(key_name),
        model=str(model),
        requests=int(requests),
        errors=int(errors or 0),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        total_tokens=int(prompt) + int(completion),
        avg_duration_ms=float(avg),
        cached=int(cached or 0),
        tokens_saved=int(saved or 0),
    )
