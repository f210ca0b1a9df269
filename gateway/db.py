"""One SQL dialect for SQLite (aiosqlite) and PostgreSQL (asyncpg).

The key store's statements are written once with ``?`` placeholders and only portable types
(TEXT, BIGINT, DOUBLE PRECISION; times as epoch seconds, lists and mappings as JSON text).
:class:`Database` runs them on either engine; a transaction holds the write lock of the engine
(``BEGIN IMMEDIATE`` on SQLite, row locks on PostgreSQL) for the read-modify-write it wraps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

Row = tuple[Any, ...]


class Tx(Protocol):
    """Statements inside one transaction."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Database(Protocol):
    dialect: str

    async def open(self) -> None: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    async def close(self) -> None: ...


def database_for(url: str) -> Database:
    """The database of ``ledger.url``: ``sqlite:///path`` or ``postgresql://...``."""
    if url.startswith("sqlite:"):
        from gateway.ledger.sqlite import sqlite_path

        return SqliteDatabase(sqlite_path(url))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://")


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: Any = None
        # One connection: statements of concurrent tasks must not interleave in a transaction.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        import aiosqlite

        if self._db is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            if self.path != ":memory:":
                await db.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._lock:
            return await self._fetch(sql, params)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        if self._db is None:
            raise RuntimeError("the key database is not open")
        async with self._db.execute(sql, tuple(params)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._fetch(sql, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            await self._execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self)
            except BaseException:
                await self._execute("ROLLBACK")
                raise
            await self._execute("COMMIT")

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()


class _SqliteTx:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._db._fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._db._fetch(sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db._db.executemany(sql, [tuple(r) for r in rows])


_MARK = re.compile(r"\?")


def to_dollar(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (no statement here has a literal ``?``)."""
    counter = iter(range(1, 10_000))
    return _MARK.sub(lambda _: f"${next(counter)}", sql)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=4, command_timeout=10.0
            )

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection().acquire() as conn:
            return [tuple(r) for r in await conn.fetch(to_dollar(sql), *params)]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._connection().acquire() as conn, conn.transaction():
            yield _PostgresTx(conn)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _connection(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the key database is not open")
        return self._pool


class _PostgresTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self._conn.fetch(to_dollar(sql), *params)]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._conn.execute(to_dollar(sql), *params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(to_dollar(sql), [tuple(r) for r in rows])
