"""The SQL drivers the gateway's own stores share (stored responses, files, batches).

One small interface over ``aiosqlite`` and ``asyncpg``: the same SQL, written with ``?``
placeholders, serves both databases (PostgreSQL's ``$n`` are put in by :func:`dollars`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.ledger.postgres import is_postgres_url
from gateway.ledger.sqlite import sqlite_path


class Driver(Protocol):
    """What a store needs of its database."""

    async def execute(self, sql: str, params: Sequence[Any]) -> None: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...
    async def count(self, sql: str, params: Sequence[Any]) -> int:
        """Run a write; how many rows it changed."""
        ...

    async def close(self) -> None: ...


class Sqlite:
    """One connection; each call is whole before the next starts (a write and its commit
    are never split by another task's statement on the same connection)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> Sqlite:
        import aiosqlite

        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA busy_timeout = 5000")
        if path != ":memory:":
            await db.execute("PRAGMA journal_mode = WAL")
        return cls(db)

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        async with self._lock:
            await self._db.execute(sql, tuple(params))
            await self._db.commit()

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._lock:
            await self._db.executemany(sql, [tuple(r) for r in rows])
            await self._db.commit()

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock, self._db.execute(sql, tuple(params)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def count(self, sql: str, params: Sequence[Any]) -> int:
        async with self._lock:
            cursor = await self._db.execute(sql, tuple(params))
            await self._db.commit()
            return int(cursor.rowcount)

    async def close(self) -> None:
        await self._db.close()


_MARK = re.compile(r"\?")


def dollars(sql: str) -> str:
    counter = iter(range(1, 1000))
    return _MARK.sub(lambda _: f"${next(counter)}", sql)


class Postgres:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> Postgres:
        import asyncpg

        return cls(await asyncpg.create_pool(url, min_size=1, max_size=4, command_timeout=30))

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self._pool.execute(dollars(sql), *params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._pool.executemany(dollars(sql), [tuple(r) for r in rows])

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._pool.fetch(dollars(sql), *params)]

    async def count(self, sql: str, params: Sequence[Any]) -> int:
        status: str = await self._pool.execute(dollars(sql), *params)
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        await self._pool.close()


async def open_driver(url: str) -> Driver:
    """A driver for ``url`` (``sqlite:///...`` or ``postgresql://...``)."""
    if is_postgres_url(url):
        return await Postgres.open(url)
    return await Sqlite.open(sqlite_path(url))
