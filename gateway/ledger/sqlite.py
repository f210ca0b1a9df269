"""The ledger in SQLite (the default): one file, no server.

Times are stored as fixed-width ISO-8601 UTC text (``2024-05-01T12:00:00.000000Z``), which sorts
and compares like the times themselves and stays readable in the ``sqlite3`` shell. The file is
opened in WAL mode with a busy timeout, so several gateway workers can share it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

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

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path.db`` -> ``rel/path.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    if not url.startswith("sqlite:///"):
        raise ValueError(
            f"not a SQLite URL: {url!r} (use sqlite:///relative.db or sqlite:////absolute.db)"
        )
    path = url.removeprefix("sqlite:///")
    if not path:
        raise ValueError(f"SQLite URL {url!r} names no file")
    return path


def format_time(moment: datetime) -> str:
    return as_utc(moment).strftime(_TIME_FORMAT)


class SqliteStore:
    """A :class:`~gateway.ledger.store.LedgerStore` in one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str, *, table: str = DEFAULT_TABLE) -> None:
        self.path = path
        self.table = check_table_name(table)
        self._db: aiosqlite.Connection | None = None

    @classmethod
    def from_url(cls, url: str, *, table: str = DEFAULT_TABLE) -> SqliteStore:
        return cls(sqlite_path(url), table=table)

    async def open(self) -> None:
        if self._db is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            if self.path != ":memory:":
                await db.execute("PRAGMA journal_mode = WAL")
            t = self.table
            await db.execute(
                f"""CREATE TABLE IF NOT EXISTS {t} (
                    request_id TEXT NOT NULL,
                    "time" TEXT NOT NULL,
                    key_name TEXT NOT NULL,
                    model TEXT NOT NULL,
                    endpoint TEXT NOT NULL,
                    stream INTEGER NOT NULL,
                    prompt_tokens INTEGER NOT NULL,
                    completion_tokens INTEGER NOT NULL,
                    job_ids TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    status_code INTEGER NOT NULL,
                    duration_ms REAL NOT NULL,
                    queue_ms REAL,
                    ttft_ms REAL,
                    prompt_text TEXT,
                    cached INTEGER NOT NULL DEFAULT 0,
                    tokens_saved INTEGER NOT NULL DEFAULT 0
                )"""
            )
            async with db.execute(f"PRAGMA table_info({t})") as cursor:
                present = {str(row[1]) for row in await cursor.fetchall()}
            for name, declaration in ADDED_COLUMNS:  # a table made by an older gateway
                if name not in present:
                    await db.execute(f"ALTER TABLE {t} ADD COLUMN {name} {declaration}")
            await db.execute(f'CREATE INDEX IF NOT EXISTS {t}_time ON {t} ("time")')
            await db.execute(f'CREATE INDEX IF NOT EXISTS {t}_key_time ON {t} (key_name, "time")')
            await db.execute(in_flight_index_sql(t))
            await db.commit()
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def write_many(
        self, records: Sequence[UsageRecord], replacing: Sequence[str] = ()
    ) -> None:
        db = self._connection()
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        try:
            if replacing:
                await db.execute(replace_sql(self.table, len(replacing), _mark), list(replacing))
            await db.executemany(
                f"INSERT INTO {self.table} ({columns}) VALUES ({marks})",
                [_row(record) for record in records],
            )
            await db.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await db.rollback()  # nothing of a refused batch stays half-written
            raise

    async def mark_interrupted(self, before: datetime) -> int:
        db = self._connection()
        cursor = await db.execute(interrupted_sql(self.table, _mark), [format_time(before)])
        await db.commit()
        return cursor.rowcount

    async def budget_usage(self, since: datetime, cached: bool) -> dict[str, int]:
        db = self._connection()
        sql = budget_sql(self.table, cached, _mark)
        async with db.execute(sql, [format_time(since)]) as cursor:
            return {str(key): int(tokens) for key, tokens in await cursor.fetchall()}

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        db = self._connection()
        sql, params = report_query(
            self.table,
            format_time(since) if since is not None else None,
            format_time(until) if until is not None else None,
            key_name,
            lambda _: "?",
        )
        async with db.execute(sql, params) as cursor:
            return [row_from_result(values) for values in await cursor.fetchall()]

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite ledger store is not open")
        return self._db


def _mark(_: int) -> str:
    return "?"


def _row(record: UsageRecord) -> tuple[Any, ...]:
    return (
        record.request_id,
        format_time(record.time),
        record.key_name,
        record.model,
        record.endpoint,
        int(record.stream),
        record.prompt_tokens,
        record.completion_tokens,
        encode_job_ids(record.job_ids),
        record.outcome,
        record.status_code,
        float(record.duration_ms),
        record.queue_ms,
        record.ttft_ms,
        record.prompt_text,
        int(record.cached),
        record.tokens_saved,
    )
