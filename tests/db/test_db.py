"""The one database layer: shared engines, serialised SQLite writers, timeouts, clean text."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.db import (
    Database,
    Databases,
    DatabaseUnavailable,
    add_columns,
    refused_row,
    sanitise,
)
from tests.e2e.proxy import stalling_proxy

DATABASE_URL = os.environ.get("DATABASE_URL")
needs_postgres = pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=needs_postgres)],
)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path}/t.db" if request.param == "sqlite" else str(DATABASE_URL)
    database = Databases(timeout=5).get(url)
    await database.open()
    table = f"db_test_{uuid.uuid4().hex[:10]}"
    await database.execute(f"CREATE TABLE {table} (n BIGINT, text TEXT)")
    database.table = table  # type: ignore[attr-defined]
    try:
        yield database
    finally:
        await database.execute(f"DROP TABLE {table}")
        await database.close()


def test_one_engine_per_url(tmp_path: Path) -> None:
    databases = Databases()
    url = f"sqlite:///{tmp_path}/one.db"
    first, second = databases.get(url), databases.get(url)
    assert first._engine is second._engine  # type: ignore[attr-defined]
    assert databases.get(f"sqlite:///{tmp_path}/two.db")._engine is not first._engine  # type: ignore[attr-defined]


async def test_a_shared_engine_closes_with_its_last_user(tmp_path: Path) -> None:
    databases = Databases()
    url = f"sqlite:///{tmp_path}/one.db"
    ledger, responses = databases.get(url), databases.get(url)
    await ledger.open()
    await responses.open()
    await ledger.close()
    assert await responses.fetch("SELECT 1") == [(1,)]  # still open for the other user
    with pytest.raises(RuntimeError):
        await ledger.fetch("SELECT 1")
    await responses.close()
    assert responses._engine._db is None  # type: ignore[attr-defined]


async def test_concurrent_writers_and_readers_never_interleave(db: Database) -> None:
    table = db.table  # type: ignore[attr-defined]

    async def one(n: int) -> None:
        async with db.transaction() as tx:
            await tx.execute(f"INSERT INTO {table} (n, text) VALUES (?, ?)", [n, "a"])
            await tx.execute_many(
                f"INSERT INTO {table} (n, text) VALUES (?, ?)", [[n, "b"], [n, "c"]]
            )
        await db.fetch(f"SELECT COUNT(*) FROM {table} WHERE n = ?", [n])
        assert await db.execute(f"UPDATE {table} SET text = ? WHERE n = ?", ["d", n]) == 3

    await asyncio.gather(*(one(n) for n in range(200)))
    assert await db.fetch(f"SELECT COUNT(*), COUNT(DISTINCT n) FROM {table}") == [(600, 200)]


async def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    table = db.table  # type: ignore[attr-defined]
    with pytest.raises(ZeroDivisionError):
        async with db.transaction() as tx:
            await tx.execute(f"INSERT INTO {table} (n, text) VALUES (?, ?)", [1, "x"])
            _ = 1 / 0
    assert await db.fetch(f"SELECT COUNT(*) FROM {table}") == [(0,)]


async def test_text_with_nul_is_stored(db: Database) -> None:
    table = db.table  # type: ignore[attr-defined]
    await db.execute(f"INSERT INTO {table} (n, text) VALUES (?, ?)", [1, "a\x00b"])
    await db.execute_many(f"INSERT INTO {table} (n, text) VALUES (?, ?)", [[2, "\x00"]])
    rows = await db.fetch(f"SELECT text FROM {table} ORDER BY n")
    assert [r[0] for r in rows] in ([sanitise("a\x00b"), sanitise("\x00")], [("a\x00b"), "\x00"])
    assert sanitise("a\x00b") == "a\ufffdb"
    assert sanitise("c\ud800d") == "c\ufffdd" and sanitise(7) == 7


@needs_postgres
async def test_a_stalled_postgres_answers_in_time_and_recovers() -> None:
    assert DATABASE_URL is not None
    target = httpx.URL(DATABASE_URL.replace("postgresql://", "http://"))
    with stalling_proxy(target.host, target.port or 5432) as proxy:
        url = f"postgresql://{target.userinfo.decode()}@127.0.0.1:{proxy.port}{target.path}"
        db = Databases(timeout=1, pool_size=1).get(url)
        await db.open()
        try:
            assert await db.fetch("SELECT 1") == [(1,)]
            proxy.stall()
            start = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                await db.fetch("SELECT 1")
            with pytest.raises(DatabaseUnavailable):
                async with db.transaction() as tx:
                    await tx.fetch("SELECT 1")
            assert time.monotonic() - start < 4  # two timeouts, not the stall

            # the pool's one connection held by a transaction that hangs: cut at the timeout,
            # and whoever waits for the connection waits a bounded time too
            proxy.resume()
            assert await db.fetch("SELECT 1") == [(1,)]

            async def hang() -> None:
                async with db.transaction() as tx:
                    await tx.fetch("SELECT 1")
                    await asyncio.sleep(30)

            start = time.monotonic()
            results = await asyncio.gather(hang(), db.fetch("SELECT 3"), return_exceptions=True)
            assert isinstance(results[0], DatabaseUnavailable)
            assert results[1] == [(3,)] or isinstance(results[1], DatabaseUnavailable)
            assert time.monotonic() - start < 3
            assert await db.fetch("SELECT 2") == [(2,)]  # the pool recovered
        finally:
            proxy.resume()
            await db.close()


def test_the_ledger_the_keys_and_the_responses_share_one_engine(tmp_path: Path) -> None:
    from gateway.config import Settings
    from gateway.openai.responses.door import ResponsesDoor
    from gateway.ops.metrics import Metrics
    from gateway.runtime import Runtime

    settings = Settings.model_validate(
        {
            "upstream": {"base_url": "http://127.0.0.1:9"},
            "keys": [{"name": "k", "key": "sk-test-shared-engine", "upstream_token": "t"}],
            "ledger": {"url": f"sqlite:///{tmp_path}/gateway.db"},
        }
    )
    runtime = Runtime.build(settings, "http://127.0.0.1:9", Metrics.create())
    # The Responses door's state lives with the app, on the runtime's databases (app.py).
    responses = ResponsesDoor(settings, runtime.databases)
    engines = {
        id(runtime.ledger.store.db._engine),  # type: ignore[attr-defined]
        id(runtime.key_service.admin.store.db._engine),  # type: ignore[attr-defined]
        id(responses.store.db._engine),  # type: ignore[attr-defined]
    }
    assert len(engines) == 1


async def test_a_refused_value_is_told_from_a_failing_database(db: Database) -> None:
    """A value the database refuses (the ledger drops that row alone) is not an error of the
    statement or the connection (the ledger keeps the rows and retries)."""
    table = db.table  # type: ignore[attr-defined]
    with pytest.raises(Exception) as refused:  # each driver names it its own way
        await db.execute(f"INSERT INTO {table} (n, text) VALUES (?, ?)", [2**70, "x"])
    assert refused_row(refused.value)
    with pytest.raises(Exception) as broken:
        await db.execute(f"INSERT INTO {table}_missing (n) VALUES (?)", [1])
    assert not refused_row(broken.value)
    assert not refused_row(DatabaseUnavailable("the database did not answer within 5 s"))


async def test_adding_columns_adds_the_missing_ones_only(db: Database) -> None:
    table = db.table  # type: ignore[attr-defined]
    columns = [("text", "TEXT"), ("extra", "INTEGER NOT NULL DEFAULT 7")]
    async with db.transaction() as tx:
        await add_columns(tx, db.dialect, table, columns)
    await db.execute(f"INSERT INTO {table} (n) VALUES (?)", [1])
    assert await db.fetch(f"SELECT n, extra FROM {table}") == [(1, 7)]
    async with db.transaction() as tx:  # again: nothing to add, nothing fails
        await add_columns(tx, db.dialect, table, columns)


@needs_postgres
async def test_a_table_in_use_is_not_locked_to_add_columns_it_has() -> None:
    """Every replica's start-up checks its tables: an ``ALTER TABLE`` (which locks the table
    against everyone even when the column is there) would wait behind any open transaction
    on it, and block every later reader and writer meanwhile."""
    databases = Databases(timeout=5)
    user, starting = databases.get(str(DATABASE_URL)), Databases(timeout=2).get(str(DATABASE_URL))
    await user.open()
    await starting.open()
    table = f"db_test_{uuid.uuid4().hex[:10]}"
    await user.execute(f"CREATE TABLE {table} (n BIGINT, text TEXT)")
    try:
        async with user.transaction() as busy:  # a long transaction reading the table
            await busy.fetch(f"SELECT * FROM {table}")
            async with starting.transaction() as tx:
                await asyncio.wait_for(
                    add_columns(tx, starting.dialect, table, [("text", "TEXT")]), timeout=1.5
                )
    finally:
        await user.execute(f"DROP TABLE {table}")
        await user.close()
        await starting.close()


class _CountingQueue:
    """aiosqlite's queue to its thread, each hand-over counted on the way."""

    def __init__(self, queue: Any, trips: list[object]) -> None:
        self._queue = queue
        self._trips = trips

    def put_nowait(self, item: tuple[object, object]) -> None:
        self._trips.append(item[1])
        self._queue.put_nowait(item)


def _counting_trips(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The functions handed to a SQLite connection's thread from now on, one per trip."""
    connection = database._engine._db  # type: ignore[attr-defined]
    trips: list[object] = []
    monkeypatch.setattr(connection, "_tx", _CountingQueue(connection._tx, trips))
    return trips


async def test_a_sqlite_statement_is_one_trip_to_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Execute, fetch and close in the connection's thread: one hand-over per statement,
    whose rows and changed-row count come back together."""
    database = Databases(timeout=5).get(f"sqlite:///{tmp_path}/trips.db")
    await database.open()
    trips = _counting_trips(database, monkeypatch)
    await database.execute("CREATE TABLE t (n INTEGER)")
    async with database.transaction() as tx:
        assert await tx.execute("INSERT INTO t VALUES (1), (2), (3)") == 3
        assert await tx.fetch("SELECT n FROM t WHERE n > ? ORDER BY n", [1]) == [(2,), (3,)]
    assert len(trips) == 1 + 4  # the table; then BEGIN, INSERT, SELECT, COMMIT
    await database.close()


async def test_a_write_is_all_its_statements_or_none(db: Database) -> None:
    """``write`` runs several statements in one transaction: a refused row in the last one
    leaves nothing of the first; an empty statement is skipped."""
    table = db.table  # type: ignore[attr-defined]
    insert = f"INSERT INTO {table} (n, text) VALUES (?, ?)"
    await db.write([(insert, [[1, "a"], [2, "b"]]), (f"DELETE FROM {table} WHERE n = ?", [[1]])])
    assert await db.fetch(f"SELECT n, text FROM {table}") == [(2, "b")]
    with pytest.raises(Exception) as refused:
        await db.write([(insert, [[3, "c"]]), (insert, []), (insert, [[2**70, "too big"]])])
    assert refused_row(refused.value)
    assert await db.fetch(f"SELECT n FROM {table} ORDER BY n") == [(2,)]


async def test_a_sqlite_write_is_one_trip_to_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN, every statement and COMMIT in one hand-over (a ledger batch, a stored response),
    where a transaction of statements takes one per statement and two more."""
    database = Databases(timeout=5).get(f"sqlite:///{tmp_path}/trips.db")
    await database.open()
    await database.execute("CREATE TABLE t (n INTEGER)")
    trips = _counting_trips(database, monkeypatch)
    insert = "INSERT INTO t VALUES (?)"
    await database.write(
        [(insert, [[1], [2]]), (insert, [[3]]), ("DELETE FROM t WHERE n = ?", [[2]])]
    )
    assert len(trips) == 1
    assert await database.fetch("SELECT n FROM t ORDER BY n") == [(1,), (3,)]
    await database.close()


async def test_a_statement_waits_for_an_open_transaction_and_stays_out_of_it(
    tmp_path: Path,
) -> None:
    """A statement or write outside a transaction goes straight to the connection's thread
    unless a transaction holds the connection: then it waits, and a rollback does not take
    it along."""
    database = Databases(timeout=5).get(f"sqlite:///{tmp_path}/order.db")
    await database.open()
    await database.execute("CREATE TABLE t (n INTEGER)")
    started = asyncio.Event()
    late: list[asyncio.Task[Any]] = []

    async def rolled_back() -> None:
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            late.append(asyncio.create_task(database.execute("INSERT INTO t VALUES (2)")))
            late.append(asyncio.create_task(database.write([("INSERT INTO t VALUES (?)", [[3]])])))
            started.set()
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in late)  # they wait for the transaction
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await rolled_back()
    await asyncio.gather(*late)
    assert await database.fetch("SELECT n FROM t ORDER BY n") == [(2,), (3,)]
    await database.close()


async def test_a_stalled_sqlite_thread_answers_in_time_and_the_work_still_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller gets its 503-shaped error at the timeout; the statement, handed over
    already, runs once the thread is free (and one whose caller is cancelled too), and one
    that fails then is not reported as an error nobody looked at."""
    from gateway.db import _queued

    database = Databases(timeout=0.3).get(f"sqlite:///{tmp_path}/stall.db")
    await database.open()
    await database.execute("CREATE TABLE t (n INTEGER)")
    connection = database._engine._db  # type: ignore[attr-defined]
    stall = _queued(connection, time.sleep, 1.0)
    assert stall is not None
    began = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"within 0\.3 s"):
        await database.write([("INSERT INTO t VALUES (?)", [[1]])])
    assert time.monotonic() - began < 0.9  # the thread is still asleep
    with pytest.raises(DatabaseUnavailable):  # it fails later too: nobody is told
        await database.execute("INSERT INTO missing VALUES (1)")
    cancelled = asyncio.create_task(database.execute("INSERT INTO t VALUES (2)"))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await stall
    assert await database.fetch("SELECT n FROM t ORDER BY n") == [(1,), (2,)]
    await database.close()
    gc.collect()  # an abandoned future says it was never looked at when it is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
