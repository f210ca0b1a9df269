"""SQLite and PostgreSQL stores: rows round-trip, reports group and filter."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest
from ledger_support import DATABASE_URL, T0, make_record, needs_postgres

from gateway.ledger import Ledger, LedgerStore, UsageRow
from gateway.ledger.postgres import PostgresStore
from gateway.ledger.sqlite import SqliteStore, sqlite_path
from gateway.ledger.store import check_table_name


async def raw_rows(store: LedgerStore) -> list[dict[str, Any]]:
    if isinstance(store, SqliteStore):
        async with aiosqlite.connect(store.path) as db:
            db.row_factory = aiosqlite.Row
            async with db.execute(f"SELECT * FROM {store.table} ORDER BY request_id") as cur:
                return [dict(row) for row in await cur.fetchall()]
    assert isinstance(store, PostgresStore)
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        rows = await conn.fetch(f"SELECT * FROM {store.table} ORDER BY request_id")
        return [dict(row) for row in rows]
    finally:
        await conn.close()


async def test_round_trip(store: LedgerStore) -> None:
    plain = make_record(1)
    full = make_record(
        2,
        time=datetime(2024, 5, 1, 14, 0, 2, 123456, tzinfo=timezone(timedelta(hours=2))),
        stream=True,
        job_ids=("j-a", "j-b"),
        outcome="deadline_exceeded",
        status_code=504,
        duration_ms=1234.5,
        queue_ms=12.25,
        ttft_ms=99.5,
        prompt_text="Hello, «world»",
    )
    await store.write_many([plain, full])
    rows = await raw_rows(store)
    assert [r["request_id"] for r in rows] == ["req-1", "req-2"]
    first, second = rows
    assert json.loads(first["job_ids"]) == ["job-1"]
    assert json.loads(second["job_ids"]) == ["j-a", "j-b"]
    assert first["queue_ms"] is None and first["ttft_ms"] is None and first["prompt_text"] is None
    assert bool(first["stream"]) is False and bool(second["stream"]) is True
    assert (second["prompt_tokens"], second["completion_tokens"]) == (10, 5)
    assert (second["outcome"], second["status_code"]) == ("deadline_exceeded", 504)
    assert (second["duration_ms"], second["queue_ms"], second["ttft_ms"]) == (1234.5, 12.25, 99.5)
    assert second["prompt_text"] == "Hello, «world»"
    assert (second["key_name"], second["model"], second["endpoint"]) == (
        "alice",
        "llama",
        "/v1/chat/completions",
    )
    stored = second["time"]
    if isinstance(stored, str):  # SQLite keeps fixed-width ISO text in UTC
        assert stored == "2024-05-01T12:00:02.123456Z"
    else:
        assert stored == datetime(2024, 5, 1, 12, 0, 2, 123456, tzinfo=UTC)


async def test_report_groups_by_key_and_model(store: LedgerStore) -> None:
    await store.write_many(
        [
            make_record(1, prompt_tokens=10, completion_tokens=1, duration_ms=100),
            make_record(2, prompt_tokens=20, completion_tokens=2, duration_ms=300),
            make_record(3, outcome="job_failed", status_code=502, completion_tokens=0),
            make_record(4, model="mistral", prompt_tokens=7, completion_tokens=3),
            make_record(5, key_name="bob", prompt_tokens=1, completion_tokens=1),
        ]
    )
    rows = await store.report(T0, T0 + timedelta(hours=1))
    assert rows == [
        UsageRow("alice", "llama", 3, 1, 40, 3, 43, pytest.approx(500 / 3)),  # type: ignore[arg-type]
        UsageRow("alice", "mistral", 1, 0, 7, 3, 10, 100.0),
        UsageRow("bob", "llama", 1, 0, 1, 1, 2, 100.0),
    ]
    assert [r.key_name for r in await store.report(T0, T0 + timedelta(hours=1), "bob")] == ["bob"]
    assert await store.report(T0, T0 + timedelta(hours=1), "carol") == []


async def test_cache_hits_are_counted_with_the_tokens_they_saved(store: LedgerStore) -> None:
    await store.write_many(
        [
            make_record(1, prompt_tokens=10, completion_tokens=5),
            make_record(2, prompt_tokens=10, completion_tokens=5, cached=True, tokens_saved=15),
            make_record(3, prompt_tokens=10, completion_tokens=5, cached=True, tokens_saved=15),
        ]
    )
    [row] = await store.report(None, None)
    assert (row.requests, row.cached, row.tokens_saved) == (3, 2, 30)


async def test_a_table_from_before_the_cache_gains_its_columns(store_url: str, table: str) -> None:
    """An older gateway's table (no cached, tokens_saved) is extended on open, rows kept."""
    from gateway.ledger import store_from_url

    old_columns = (
        'request_id TEXT, "time" TEXT, key_name TEXT, model TEXT, endpoint TEXT, '
        "stream BOOLEAN, prompt_tokens INTEGER, completion_tokens INTEGER, job_ids TEXT, "
        "outcome TEXT, status_code INTEGER, duration_ms REAL, queue_ms REAL, ttft_ms REAL, "
        "prompt_text TEXT"
    )
    if store_url.startswith("sqlite"):
        async with aiosqlite.connect(sqlite_path(store_url)) as db:
            await db.execute(f"CREATE TABLE {table} ({old_columns})")
            await db.commit()
    else:
        conn = await asyncpg.connect(store_url)
        try:
            columns = old_columns.replace('"time" TEXT', '"time" TIMESTAMPTZ')
            await conn.execute(f"CREATE TABLE {table} ({columns})")
        finally:
            await conn.close()
    store = store_from_url(store_url, table=table)
    await store.open()
    try:
        await store.write_many([make_record(1, cached=True, tokens_saved=7)])
        [row] = await store.report(None, None)
        assert (row.cached, row.tokens_saved) == (1, 7)
    finally:
        await store.close()


async def test_report_range_is_half_open(store: LedgerStore) -> None:
    await store.write_many([make_record(n) for n in range(10)])  # T0 + 0..9 s

    async def count(since: datetime | None, until: datetime | None) -> int:
        return sum(row.requests for row in await store.report(since, until))

    assert await count(T0 + timedelta(seconds=2), T0 + timedelta(seconds=5)) == 3
    assert await count(T0 + timedelta(seconds=9), None) == 1
    assert await count(None, T0 + timedelta(seconds=1)) == 1
    assert await count(None, None) == 10
    assert await count(T0 + timedelta(seconds=10), None) == 0
    # Other time zones and naive (UTC) bounds mean the same instants.
    cest = timezone(timedelta(hours=2))
    assert await count(datetime(2024, 5, 1, 14, 0, 5, tzinfo=cest), None) == 5
    assert await count(datetime(2024, 5, 1, 12, 0, 5), None) == 5


async def test_open_is_idempotent_and_table_persists(store_url: str, table: str) -> None:
    from gateway.ledger import store_from_url

    first = store_from_url(store_url, table=table)
    await first.open()
    await first.open()
    await first.write_many([make_record(1)])
    await first.close()
    second = store_from_url(store_url, table=table)
    await second.open()
    try:
        assert [r.requests for r in await second.report(None, None)] == [1]
    finally:
        await second.close()


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///usage/gateway.db") == "usage/gateway.db"
    assert sqlite_path("sqlite:////var/lib/gateway.db") == "/var/lib/gateway.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    for bad in ("sqlite://host/x.db", "sqlite:///", "mysql:///x"):
        with pytest.raises(ValueError):
            sqlite_path(bad)


async def test_sqlite_creates_parent_directories(tmp_path: Path) -> None:
    store = SqliteStore.from_url(f"sqlite:///{tmp_path}/deep/er/usage.db")
    await store.open()
    await store.write_many([make_record(1)])
    await store.close()
    assert (tmp_path / "deep" / "er" / "usage.db").exists()


async def test_sqlite_in_memory() -> None:
    store = SqliteStore.from_url("sqlite:///:memory:")
    await store.open()
    try:
        await store.write_many([make_record(1), make_record(2)])
        assert (await store.report(None, None))[0].requests == 2
    finally:
        await store.close()


def test_table_names_are_checked() -> None:
    assert check_table_name("gateway_usage") == "gateway_usage"
    for bad in ("usage; DROP TABLE x", "1usage", "", "a-b", "x" * 64):
        with pytest.raises(ValueError):
            check_table_name(bad)


async def test_store_not_open_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        await SqliteStore(str(tmp_path / "x.db")).write_many([make_record()])
    with pytest.raises(ValueError):
        PostgresStore("mysql://localhost/x")


@needs_postgres
@pytest.mark.usefixtures("drop_table")
async def test_replicas_creating_the_table_at_once(table: str) -> None:
    assert DATABASE_URL is not None
    stores = [PostgresStore(DATABASE_URL, table=table, max_size=1) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await asyncio.gather(*(s.write_many([make_record(i)]) for i, s in enumerate(stores)))
        assert (await stores[0].report(None, None))[0].requests == 4
    finally:
        for s in stores:
            await s.close()


async def test_a_nul_in_a_prompt_does_not_fail_the_batch(store: LedgerStore) -> None:
    """PostgreSQL text cannot hold NUL: the database layer stores U+FFFD, and the batch (other
    users' rows with it) is written."""
    await store.write_many([make_record(1), make_record(2, prompt_text="a\x00b"), make_record(3)])
    rows = await raw_rows(store)
    assert [r["request_id"] for r in rows] == ["req-1", "req-2", "req-3"]
    assert rows[1]["prompt_text"] in ("a\ufffdb", "a\x00b")


async def test_a_final_row_replaces_the_in_flight_one(store: LedgerStore) -> None:
    await store.write_many(
        [make_record(1, outcome="in_flight"), make_record(2, outcome="in_flight")]
    )
    await store.write_many([make_record(1, completion_tokens=9)], ["req-1"])
    rows = sorted(
        (r["request_id"], r["outcome"], r["completion_tokens"]) for r in await raw_rows(store)
    )
    assert rows == [("req-1", "ok", 9), ("req-2", "in_flight", 5)]
    # A crash left req-2's row: a later start-up marks it, and only rows older than it asks.
    assert await store.mark_interrupted(T0) == 0
    assert await store.mark_interrupted(T0 + timedelta(hours=1)) == 1
    assert {r["outcome"] for r in await raw_rows(store)} == {"ok", "interrupted"}


async def test_an_in_flight_row_retried_in_the_batch_of_its_final_row_goes_too(
    store: LedgerStore,
) -> None:
    """An in-flight row whose first write failed is retried; when its request ended meanwhile,
    its final row may be in the same batch: the table keeps only the final row."""
    await store.write_many(
        [make_record(1, outcome="in_flight"), make_record(1, completion_tokens=9)], ["req-1"]
    )
    rows = [(r["request_id"], r["outcome"], r["completion_tokens"]) for r in await raw_rows(store)]
    assert rows == [("req-1", "ok", 9)]


async def test_budget_usage_counts_tokens_per_key(store: LedgerStore) -> None:
    await store.write_many(
        [
            make_record(1),
            make_record(2, key_name="bob"),
            make_record(3, cached=True, tokens_saved=15),
            make_record(-3600),  # before `since`
        ]
    )
    assert await store.budget_usage(T0, False) == {"alice": 15, "bob": 15}
    assert await store.budget_usage(T0, True) == {"alice": 30, "bob": 15}


async def test_a_refused_batch_leaves_nothing_half_written(store: LedgerStore) -> None:
    with pytest.raises(Exception):  # noqa: B017 - each database names it its own way
        await store.write_many([make_record(1), make_record(2, prompt_tokens=2**70)])
    await store.write_many([make_record(3)])
    assert [r["request_id"] for r in await raw_rows(store)] == ["req-3"]


async def test_nul_and_lone_surrogates_are_cleaned_before_any_database(store: LedgerStore) -> None:
    """One prompt with NUL once refused a whole PostgreSQL batch; the ledger cleans text."""
    ledger = Ledger(store, batch_size=10)
    await ledger.start()
    ledger.record(make_record(1, prompt_text="a\x00b"))
    ledger.record(make_record(2, prompt_text="c\ud800d", key_name="k\x00"))
    ledger.record(make_record(3, prompt_text="fine"))
    await asyncio.wait_for(ledger.flush(), 10)
    rows = sorted((r["request_id"], r["prompt_text"], r["key_name"]) for r in await raw_rows(store))
    assert rows == [
        ("req-1", "a\ufffdb", "alice"),
        ("req-2", "c\ufffdd", "k\ufffd"),
        ("req-3", "fine", "alice"),
    ]
    assert ledger.dropped == 0
    # A report asked for a key name with NUL finds its rows (PostgreSQL would refuse the query).
    assert [r.requests for r in await ledger.report(None, None, "k\x00")] == [1]
    await ledger.stop()


async def test_a_row_the_database_refuses_is_quarantined_and_its_batch_written(
    store: LedgerStore,
) -> None:
    """Through gateway.db, as each database refuses it (SQLite: OverflowError; PostgreSQL: the
    driver's DataError): the ledger sees a refused row, not an outage, so it drops that row alone
    instead of retrying the batch forever."""
    ledger = Ledger(store, batch_size=10)
    await ledger.start()
    for n in range(1, 4):
        ledger.record(make_record(n, prompt_tokens=2**70 if n == 2 else 10))
    await asyncio.wait_for(ledger.flush(), 10)
    assert [r["request_id"] for r in await raw_rows(store)] == ["req-1", "req-3"]
    assert (ledger.written, ledger.dropped, ledger.quarantined) == (2, 1, 1)
    await ledger.stop()


async def test_a_batch_written_again_after_an_unseen_commit_leaves_one_row_each(
    store: LedgerStore,
) -> None:
    """A write the client saw fail may have committed (a cut connection): the retry must not
    count the requests twice."""
    batch = [make_record(1), make_record(2, completion_tokens=7)]
    await store.write_many(batch)
    await store.write_many(batch)
    rows = sorted((r["request_id"], r["completion_tokens"]) for r in await raw_rows(store))
    assert rows == [("req-1", 5), ("req-2", 7)]


async def test_a_first_write_inserts_without_looking_for_its_rows(store: LedgerStore) -> None:
    """``first`` says no row of the batch was handed to the database before: rows are
    inserted as they are (a second write of the same batch with ``first`` would count them
    twice, which is why the ledger says it only of a batch's first try)."""
    batch = [make_record(1), make_record(2, completion_tokens=7)]
    await store.write_many(batch, first=True)
    await store.write_many(batch, first=True)
    rows = sorted((r["request_id"], r["completion_tokens"]) for r in await raw_rows(store))
    assert rows == [("req-1", 5), ("req-1", 5), ("req-2", 7), ("req-2", 7)]


async def test_another_request_with_the_same_request_id_keeps_its_rows(
    store: LedgerStore,
) -> None:
    """A client's x-request-id may repeat: a row belongs to its id, key and start together."""
    bobs = make_record(1, key_name="bob", outcome="in_flight")
    await store.write_many([bobs, make_record(1, outcome="in_flight")])
    await store.write_many([make_record(1, completion_tokens=9)], ["req-1"])  # alice's ended
    rows = sorted((r["key_name"], r["outcome"]) for r in await raw_rows(store))
    assert rows == [("alice", "ok"), ("bob", "in_flight")]


async def test_a_resumed_runs_final_row_replaces_the_rows_of_its_jobs_only(
    store: LedgerStore,
) -> None:
    """A process that charged a run (its final row written) and died before storing the run
    done leaves it to be followed again: the resumed run's final row, of the same jobs but a
    start of its own, replaces that row (and an in-flight or interrupted one) so the run is
    charged once; a row of the same id and key but other jobs (a repeated x-request-id) stays."""
    first = make_record(1, job_ids=("job-a",), completion_tokens=9)
    crashed = make_record(1, job_ids=(), outcome="interrupted", time=T0)
    other = make_record(1, job_ids=("job-b",), completion_tokens=3, time=T0 - timedelta(hours=1))
    unsubmitted = make_record(2, job_ids=(), outcome="server_shutdown")
    await store.write_many([first, crashed, other, unsubmitted])
    resumed = make_record(
        1, job_ids=("job-a",), completion_tokens=9, time=T0 + timedelta(minutes=5)
    )
    await store.write_many([resumed], ["req-1"])
    await store.write_many(
        [make_record(2, job_ids=(), completion_tokens=4, time=T0 + timedelta(minutes=1))], ["req-2"]
    )
    rows = sorted(
        (r["request_id"], r["job_ids"], r["outcome"], r["completion_tokens"])
        for r in await raw_rows(store)
    )
    assert rows == [
        ("req-1", '["job-a"]', "ok", 9),
        ("req-1", '["job-b"]', "ok", 3),
        ("req-2", "[]", "ok", 4),
        ("req-2", "[]", "server_shutdown", 5),
    ]
    # Written again (a commit it never saw), it still leaves one row.
    await store.write_many([resumed], ["req-1"])
    assert len([r for r in await raw_rows(store) if r["job_ids"] == '["job-a"]']) == 1
