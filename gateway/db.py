"""The one database layer: SQLite (aiosqlite) and PostgreSQL (asyncpg) behind one interface.

The ledger, the key store and the Responses store all speak to their database through it.
Statements are written once with ``?`` placeholders and portable types; this module runs them
on either engine (SQLite's here, PostgreSQL's in :mod:`gateway.db_postgres`, what both share in
:mod:`gateway.db_base`). What it guarantees to every caller:

- **One pool per URL.** :class:`Databases` hands out a :class:`Database` handle per user; the
  handles of one URL share one engine (one SQLite connection, one asyncpg pool), which closes
  when its last handle does.
- **Every operation has a timeout**, the pool's acquire included. A database that is down or
  stalled answers :class:`DatabaseUnavailable` after at most ``timeout`` seconds, never a hang.
- **SQLite writers are serialised**: one connection in WAL mode, one statement or transaction at
  a time (concurrent tasks queue on a lock), so no two tasks interleave on the connection.
- **Text is sanitised for the database**: PostgreSQL's text cannot hold NUL, so a NUL in a
  string parameter becomes U+FFFD instead of failing the statement (and its batch); so does a
  lone surrogate, which UTF-8 cannot encode (:func:`clean_text`, which the ledger also applies
  to its rows before any database, SQLite included).

A transaction holds the engine's write lock (``BEGIN IMMEDIATE`` on SQLite, row locks on
PostgreSQL) for the read-modify-write it wraps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.db_base import (
    DEFAULT_TIMEOUT,
    DatabaseUnavailable,
    Row,
    Statements,
    Tx,
    clean_text,
    deadline,
    sanitise,
    within,
)
from gateway.db_postgres import PostgresEngine

__all__ = [
    "DEFAULT_TIMEOUT",
    "Database",
    "DatabaseUnavailable",
    "Databases",
    "Row",
    "Tx",
    "add_columns",
    "check_url",
    "clean_text",
    "database_for",
    "is_postgres_url",
    "refused_row",
    "sanitise",
    "sqlite_path",
]

#: Connections in one PostgreSQL pool, shared by every user of its URL.
DEFAULT_POOL_SIZE = 10


class Database(Protocol):
    dialect: str

    async def open(self) -> None: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def write(self, statements: Statements) -> None:
        """Run ``statements`` (each over its rows) in one transaction: all or nothing. On
        SQLite one trip to the connection's thread, where a transaction of statements one by
        one takes one per statement and two more."""
        ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    async def close(self) -> None: ...


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


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


def check_url(url: str) -> str:
    if url.startswith("sqlite:"):
        sqlite_path(url)
        return url
    if is_postgres_url(url):
        return url
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://")


async def add_columns(tx: Tx, dialect: str, table: str, columns: Sequence[tuple[str, str]]) -> None:
    """Add the columns (name, declaration) a table made by an older gateway lacks; its old
    rows read as the declaration's default. Run inside the transaction that creates the table."""
    if dialect == "postgresql":  # ALTER locks the table even when the column is there: ask first
        rows = await tx.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            [table],
        )
        present = {str(row[0]) for row in rows}
        for name, declaration in columns:
            if name not in present:  # IF NOT EXISTS: another replica may be adding it too
                await tx.execute(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {declaration}"
                )
        return
    present = {str(row[1]) for row in await tx.fetch(f"PRAGMA table_info({table})")}
    for name, declaration in columns:
        if name not in present:
            await tx.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


class Databases:
    """The engines of one process, one per URL; owned by the runtime."""

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, pool_size: int = DEFAULT_POOL_SIZE
    ) -> None:
        self.timeout = timeout
        self.pool_size = pool_size
        self._engines: dict[str, _Engine] = {}

    def get(self, url: str) -> Database:
        """A handle on ``url``'s database (not yet open); handles of one URL share its engine."""
        engine = self._engines.get(check_url(url))
        if engine is None:
            engine = self._engines[url] = _engine(url, self.timeout, self.pool_size)
        return _Handle(engine)


def database_for(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> Database:
    """A database of its own for ``url``: ``sqlite:///path`` or ``postgresql://...``."""
    return Databases(timeout=timeout).get(url)


class _Engine(Protocol):
    dialect: str
    users: int

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]: ...
    async def execute(self, sql: str, params: Sequence[Any]) -> int: ...
    async def write(self, statements: Statements) -> None: ...
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...


def _engine(url: str, timeout: float, pool_size: int) -> _Engine:
    if url.startswith("sqlite:"):
        return SqliteEngine(sqlite_path(url), timeout)
    return PostgresEngine(url, timeout, pool_size)


class _Handle:
    """One user's view of a shared engine: opening and closing it counts users."""

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine
        self.dialect = engine.dialect
        self._open = False

    async def open(self) -> None:
        if not self._open:
            await self._engine.open()
            self._engine.users += 1
            self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            self._engine.users -= 1
            if self._engine.users == 0:
                await self._engine.close()

    def _ready(self) -> _Engine:
        if not self._open:
            raise RuntimeError("the database is not open")
        return self._engine

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._ready().fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._ready().execute(sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._ready().write([(sql, rows)])

    async def write(self, statements: Statements) -> None:
        await self._ready().write(statements)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        return self._ready().transaction()


def refused_row(exc: BaseException) -> bool:
    """The database refused a statement's values (a bad value, a constraint), not the
    connection: the same row would be refused again, while other rows can still be written."""
    import sqlite3

    if isinstance(
        exc,
        ValueError
        | OverflowError
        | UnicodeError
        | sqlite3.IntegrityError
        | sqlite3.DataError
        | sqlite3.InterfaceError,
    ):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError)


# --------------------------------------------------------------------------------- SQLite


class SqliteEngine:
    """One connection in WAL mode; a lock serialises statements and transactions."""

    dialect = "sqlite"

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.users = 0
        self._db: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        import aiosqlite

        async with self._lock:
            if self._db is not None:
                return
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            async with deadline(self.timeout, "open"):
                db = await aiosqlite.connect(self.path, isolation_level=None)
                try:
                    # Another process's lock is waited for half the timeout: SQLite gives up
                    # (database is locked) before the timeout abandons a statement mid-flight.
                    await db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 500)}")
                    if self.path != ":memory:":
                        await db.execute("PRAGMA journal_mode = WAL")
                except BaseException:
                    await db.close()
                    raise
            self._db = db

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await db.close()

    async def _run(self, sql: str, params: Sequence[Any]) -> tuple[list[Row], int]:
        """One statement in one trip to the connection's thread: executed, fetched and its
        cursor closed there. aiosqlite's cursor API takes three trips (execute, fetchall,
        close), each a thread wake-up and an event-loop wake-up: most of a small
        transaction's cost (a stored response, a ledger batch)."""
        db = self._db
        if db is None:
            raise RuntimeError("the database is not open")
        one_trip = getattr(db, "_execute", None)  # aiosqlite's own, not public: checked
        if one_trip is not None and hasattr(db, "_conn"):
            return await one_trip(_statement, db._conn, sql, tuple(params))  # type: ignore[no-any-return]
        async with db.execute(sql, tuple(params)) as cursor:  # an aiosqlite without it
            rows = [tuple(row) for row in await cursor.fetchall()]
            return rows, int(cursor.rowcount)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return (await self._one(sql, params, "fetch"))[0]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return (await self._one(sql, params, "execute"))[1]

    async def _one(self, sql: str, params: Sequence[Any], what: str) -> tuple[list[Row], int]:
        """One statement outside any transaction: see :meth:`_handed`."""
        db = self._db
        if db is None:
            raise RuntimeError("the database is not open")
        trip = None
        if hasattr(db, "_conn"):  # see _run
            trip = self._handed(db, _statement, db._conn, sql, tuple(params))
        if trip is not None:
            return await within(trip, self.timeout, what)  # type: ignore[no-any-return]
        async with deadline(self.timeout, what), self._lock:
            return await self._run(sql, params)

    def _handed(self, db: Any, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any] | None:
        """``fn(*args)`` queued on the connection's thread now, if no transaction holds the
        connection: the thread takes its work in order, so it runs whole before anything
        queued later (a transaction waiting for the lock starts after it). None while a
        transaction is open (or this aiosqlite keeps its queue otherwise): then wait for the
        lock."""
        if self._lock.locked():
            return None
        return _queued(db, fn, *args)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.write([(sql, rows)])

    async def write(self, statements: Statements) -> None:
        db = self._db
        if db is None:
            raise RuntimeError("the database is not open")
        batch = [(sql, [tuple(r) for r in rows]) for sql, rows in statements if rows]
        one_trip = getattr(db, "_execute", None)  # as in _run
        if one_trip is None or not hasattr(db, "_conn"):
            async with self.transaction() as tx:
                for sql, rows in batch:
                    await tx.execute_many(sql, rows)
            return
        # Once in the connection's thread the transaction ends there, committed or rolled
        # back, whatever becomes of the caller (a timeout); what comes next queues behind it
        # in that thread. The trip is queued here, as aiosqlite's ``_execute`` queues it.
        trip = self._handed(db, _write_all, db._conn, batch)
        if trip is not None:
            await within(trip, self.timeout, "write")
            return
        async with deadline(self.timeout, "write"), self._lock:
            trip = _queued(db, _write_all, db._conn, batch)
            if trip is None:
                trip = one_trip(_write_all, db._conn, batch)
            await asyncio.shield(trip)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with deadline(self.timeout, "transaction"), self._lock:
            await self._run("BEGIN IMMEDIATE", ())
            try:
                yield _SqliteTx(self)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._run("ROLLBACK", ()))
                raise
            await self._run("COMMIT", ())


def _queued(db: Any, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any] | None:
    """``fn(*args)`` put on the queue of aiosqlite's thread now, as ``Connection._execute``
    does, and the future its result comes back on; None when this aiosqlite is not running or
    keeps its queue otherwise (then ``_execute`` itself is awaited, and says why)."""
    queue = getattr(db, "_tx", None)
    if not getattr(db, "_running", False) or not getattr(db, "_connection", None):
        return None
    if queue is None or not hasattr(queue, "put_nowait"):
        return None
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    queue.put_nowait((future, functools.partial(fn, *args)))
    return future


def _write_all(conn: Any, statements: list[tuple[str, list[Row]]]) -> None:
    """In the connection's thread: ``statements`` in one transaction, all or nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in statements:
            conn.executemany(sql, rows).close()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a COMMIT that failed (busy) leaves it open too
            conn.execute("ROLLBACK")
        raise


def _statement(conn: Any, sql: str, params: tuple[Any, ...]) -> tuple[list[Row], int]:
    """In the connection's thread: the statement's rows and the rows it changed."""
    cursor = conn.execute(sql, params)
    try:
        return [tuple(row) for row in cursor.fetchall()], int(cursor.rowcount)
    finally:
        cursor.close()


class _SqliteTx:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return (await self._engine._run(sql, params))[0]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return (await self._engine._run(sql, params))[1]

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._engine._db is None:
            raise RuntimeError("the database is not open")
        await self._engine._db.executemany(sql, [tuple(r) for r in rows])
