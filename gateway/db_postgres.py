"""PostgreSQL behind :mod:`gateway.db`'s interface: an asyncpg pool with timeouts, and LISTEN.

Statements are written with ``?`` placeholders for both engines; here they become asyncpg's
``$1, $2, ...``, and text parameters are cleaned (:func:`gateway.db_base.sanitise`: PostgreSQL's
text holds no NUL).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from gateway.db_base import DEFAULT_TIMEOUT, Row, Statements, Tx, deadline, sanitise

_MARK = re.compile(r"\?")


def to_dollar(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (no statement here has a literal ``?``)."""
    counter = iter(range(1, 100_000))
    return _MARK.sub(lambda _: f"${next(counter)}", sql)


def _clean(params: Sequence[Any]) -> list[Any]:
    return [sanitise(p) for p in params]


def _changed(status: str) -> int:
    """Rows changed, from asyncpg's status line (``UPDATE 3``, ``INSERT 0 1``)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresEngine:
    """An asyncpg pool with an acquire timeout and a command timeout."""

    dialect = "postgresql"

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, pool_size: int = 4) -> None:
        self.url = url
        self.timeout = timeout
        self.pool_size = pool_size
        self.users = 0
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        import asyncpg

        async with self._opening:
            if self._pool is None:
                async with deadline(self.timeout, "open"):
                    self._pool = await asyncpg.create_pool(
                        self.url,
                        min_size=0,  # no floor to restore in the background, logging
                        max_size=self.pool_size,
                        command_timeout=self.timeout,
                        timeout=self.timeout,
                    )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except (TimeoutError, Exception):
                pool.terminate()

    def _ready(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the database is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; one that timed out is closed, not handed to the next user
        (a stalled connection would otherwise hold up whoever gets it, and its release)."""
        pool = self._ready()
        conn = await pool.acquire(timeout=self.timeout)
        try:
            yield conn
        except (TimeoutError, asyncio.CancelledError):
            conn.terminate()
            raise
        finally:
            await pool.release(conn, timeout=self.timeout)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with deadline(self.timeout, "fetch"), self._connection() as conn:
            return [tuple(r) for r in await conn.fetch(to_dollar(sql), *_clean(params))]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with deadline(self.timeout, "execute"), self._connection() as conn:
            return _changed(await conn.execute(to_dollar(sql), *_clean(params)))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.write([(sql, rows)])

    async def write(self, statements: Statements) -> None:
        async with self.transaction() as tx:
            for sql, rows in statements:
                if rows:
                    await tx.execute_many(sql, rows)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with deadline(self.timeout, "transaction"), self._connection() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                yield _PostgresTx(conn)
            except (TimeoutError, asyncio.CancelledError):
                raise  # the connection is closed: the server rolls the transaction back
            except BaseException:
                await asyncio.wait_for(tx.rollback(), self.timeout)
                raise
            await tx.commit()


class _PostgresTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self._conn.fetch(to_dollar(sql), *_clean(params))]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _changed(await self._conn.execute(to_dollar(sql), *_clean(params)))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(to_dollar(sql), [_clean(r) for r in rows])


async def listen(
    url: str, channel: str, on_notify: Callable[[], None], *, connect_timeout: float = 5.0
) -> None:
    """Call ``on_notify`` for every PostgreSQL NOTIFY on ``channel``; return when the connection
    is lost (the caller reconnects). LISTEN needs a connection of its own, outside the pool."""
    import asyncpg

    conn = None
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda *_: lost.set())
        await conn.add_listener(channel, lambda *_: on_notify())
        await lost.wait()
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1.0)
