"""The ledger in PostgreSQL, through an asyncpg connection pool.

Several replicas may start at once against an empty database; the table is created under a
transaction-scoped advisory lock, so their ``CREATE ... IF NOT EXISTS`` statements do not race.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from gateway.ledger.record import UsageRecord, UsageRow
from gateway.ledger.store import (
    ADDED_COLUMNS,
    COLUMNS,
    DEFAULT_TABLE,
    as_utc,
    budget_sql,
    check_table_name,
    encode_job_ids,
    in_flight_index_sql,
    interrupted_sql,
    replace_sql,
    report_query,
    row_from_result,
)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class PostgresStore:
    """A :class:`~gateway.ledger.store.LedgerStore` in PostgreSQL."""

    def __init__(
        self,
        url: str,
        *,
        table: str = DEFAULT_TABLE,
        min_size: int = 1,
        max_size: int = 4,
        command_timeout: float = 30.0,
    ) -> None:
        if not is_postgres_url(url):
            raise ValueError("not a PostgreSQL URL (use postgresql://user@host:port/database)")
        self.table = check_table_name(table)
        self._url = url
        self._pool_args: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "command_timeout": command_timeout,
        }
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = await asyncpg.create_pool(self._url, **self._pool_args)
        t = self.table
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", t)
                await conn.execute(
                    f"""CREATE TABLE IF NOT EXISTS {t} (
                        request_id TEXT NOT NULL,
                        "time" TIMESTAMPTZ NOT NULL,
                        key_name TEXT NOT NULL,
                        model TEXT NOT NULL,
                        endpoint TEXT NOT NULL,
                        stream BOOLEAN NOT NULL,
                        prompt_tokens INTEGER NOT NULL,
                        completion_tokens INTEGER NOT NULL,
                        job_ids TEXT NOT NULL,
                        outcome TEXT NOT NULL,
                        status_code INTEGER NOT NULL,
                        duration_ms DOUBLE PRECISION NOT NULL,
                        queue_ms DOUBLE PRECISION,
                        ttft_ms DOUBLE PRECISION,
                        prompt_text TEXT,
                        cached BOOLEAN NOT NULL DEFAULT FALSE,
                        tokens_saved INTEGER NOT NULL DEFAULT 0
                    )"""
                )
                for name, declaration in ADDED_COLUMNS:  # a table made by an older gateway
                    await conn.execute(
                        f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {name} {declaration}"
                    )
                await conn.execute(f'CREATE INDEX IF NOT EXISTS {t}_time ON {t} ("time")')
                await conn.execute(
                    f'CREATE INDEX IF NOT EXISTS {t}_key_time ON {t} (key_name, "time")'
                )
                await conn.execute(in_flight_index_sql(t))
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def write_many(
        self, records: Sequence[UsageRecord], replacing: Sequence[str] = ()
    ) -> None:
        pool = self._connection()
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
        async with pool.acquire() as conn, conn.transaction():
            if replacing:
                await conn.execute(replace_sql(self.table, len(replacing), _mark), *replacing)
            await conn.executemany(
                f"INSERT INTO {self.table} ({columns}) VALUES ({marks})",
                [_row(record) for record in records],
            )

    async def mark_interrupted(self, before: datetime) -> int:
        pool = self._connection()
        async with pool.acquire() as conn:
            status = await conn.execute(interrupted_sql(self.table, _mark), as_utc(before))
        return int(status.split()[-1]) if status.split()[-1].isdigit() else 0

    async def budget_usage(self, since: datetime, cached: bool) -> dict[str, int]:
        pool = self._connection()
        async with pool.acquire() as conn:
            rows = await conn.fetch(budget_sql(self.table, cached, _mark), as_utc(since))
        return {str(row[0]): int(row[1]) for row in rows}

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        pool = self._connection()
        sql, params = report_query(
            self.table,
            as_utc(since) if since is not None else None,
            as_utc(until) if until is not None else None,
            key_name,
            lambda n: f"${n}",
        )
        async with pool.acquire() as conn:
            return [row_from_result(tuple(values)) for values in await conn.fetch(sql, *params)]

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _connection(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL ledger store is not open")
        return self._pool


def _mark(n: int) -> str:
    return f"${n}"


def _row(record: UsageRecord) -> tuple[Any, ...]:
    return (
        record.request_id,
        as_utc(record.time),
        record.key_name,
        record.model,
        record.endpoint,
        record.stream,
        record.prompt_tokens,
        record.completion_tokens,
        encode_job_ids(record.job_ids),
        record.outcome,
        record.status_code,
        float(record.duration_ms),
        record.queue_ms,
        record.ttft_ms,
        record.prompt_text,
        record.cached,
        record.tokens_saved,
    )
