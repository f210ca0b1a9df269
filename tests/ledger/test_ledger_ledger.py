"""The Ledger: rows queue without blocking, batches reach the database, nothing is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from ledger_support import DATABASE_URL, FakeStore, make_record, needs_postgres

from gateway.config import LedgerSettings
from gateway.ledger import Ledger, store_from_url
from gateway.ledger.postgres import PostgresStore
from gateway.ledger.record import UsageRecord
from gateway.ledger.spill import SpillFile
from gateway.ledger.sqlite import SqliteStore


async def test_records_reach_sqlite_and_stop_flushes(tmp_path: Path) -> None:
    ledger = Ledger.from_settings(LedgerSettings(url=f"sqlite:///{tmp_path}/usage.db"))
    assert isinstance(ledger.store, SqliteStore)
    await ledger.start()
    for n in range(250):
        ledger.record(make_record(n, completion_tokens=n % 7))
    await ledger.stop()
    assert (ledger.written, ledger.dropped) == (250, 0)

    reader = Ledger(store_from_url(f"sqlite:///{tmp_path}/usage.db"))
    rows = await reader.report(None, None)  # opens the store on demand
    await reader.stop()
    assert [(r.requests, r.prompt_tokens) for r in rows] == [(250, 2500)]
    assert rows[0].completion_tokens == sum(n % 7 for n in range(250))


@needs_postgres
@pytest.mark.usefixtures("drop_table")
async def test_records_reach_postgres(table: str) -> None:
    assert DATABASE_URL is not None
    ledger = Ledger(store_from_url(DATABASE_URL, table=table), batch_size=16)
    assert isinstance(ledger.store, PostgresStore)
    await ledger.start()
    for n in range(100):
        ledger.record(make_record(n, key_name=f"k{n % 2}", prompt_tokens=3, completion_tokens=n))
    await ledger.stop()
    assert (ledger.written, ledger.dropped) == (100, 0)
    reader = Ledger(store_from_url(DATABASE_URL, table=table))
    try:
        rows = await reader.report(None, None)
    finally:
        await reader.stop()
    assert [(r.key_name, r.requests, r.prompt_tokens) for r in rows] == [
        ("k0", 50, 150),
        ("k1", 50, 150),
    ]
    assert rows[0].completion_tokens == sum(range(0, 100, 2))
    assert rows[1].completion_tokens == sum(range(1, 100, 2))


async def test_writes_in_batches() -> None:
    store = FakeStore()
    ledger = Ledger(store, batch_size=10)
    for n in range(25):  # queued before start: the writer finds them waiting
        ledger.record(make_record(n))
    await ledger.start()
    await ledger.stop()
    assert store.batches == [10, 10, 5]
    assert [r.request_id for r in store.rows] == [f"req-{n}" for n in range(25)]


async def test_full_queue_drops_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    ledger = Ledger(store, queue_size=3)
    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        for n in range(8):
            ledger.record(make_record(n))  # not started: nothing drains the queue
    assert (ledger.dropped, ledger.pending) == (5, 3)
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1
    await ledger.start()
    await ledger.stop()
    assert [r.request_id for r in store.rows] == ["req-0", "req-1", "req-2"]
    assert ledger.written == 3


async def test_failing_writes_are_held_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    """A database outage loses nothing: rows wait in memory and go in, in order, once it is back."""
    store = FakeStore()
    store.fail_write = True
    ledger = Ledger(store, open_retry_seconds=0.01, retry_max_seconds=0.02)
    await ledger.start()
    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        for n in range(5):
            ledger.record(make_record(n))
            await asyncio.sleep(0.005)  # let the writer fail between records
        assert ledger.pending == 5 and ledger.dropped == 0
        assert not ledger.healthy
        store.fail_write = False
        ledger.record(make_record(99))
        await _settled(ledger)
    await ledger.stop()
    assert [r.request_id for r in store.rows] == [*(f"req-{n}" for n in range(5)), "req-99"]
    assert (ledger.written, ledger.dropped) == (6, 0)
    # Every write after the first failed one may find its rows already there (a commit the
    # writer never saw): none of them says ``first``, which would skip that check.
    assert store.firsts[0] and not any(store.firsts[1:])
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write" in m for m in messages) == 1  # once per outage, not per retry
    assert any("writing again" in m for m in messages)


async def test_one_bad_row_never_takes_its_batch_with_it(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    store.poison = {"req-3"}
    ledger = Ledger(store, batch_size=10)
    for n in range(8):
        ledger.record(make_record(n))
    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        await ledger.start()
        await _settled(ledger)
    await ledger.stop()
    assert [r.request_id for r in store.rows] == [f"req-{n}" for n in range(8) if n != 3]
    assert (ledger.written, ledger.dropped, ledger.quarantined) == (7, 1, 1)
    assert any("req-3" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)


async def test_an_in_flight_row_is_replaced_by_the_final_one() -> None:
    store = FakeStore()
    ledger = Ledger(store)
    await ledger.start()
    ledger.begin(make_record(1, completion_tokens=256))
    ledger.begin(make_record(2))
    await _settled(ledger)
    assert [(r.request_id, r.outcome) for r in store.rows] == [
        ("req-1", "in_flight"),
        ("req-2", "in_flight"),
    ]
    ledger.complete(make_record(1, completion_tokens=7))
    await _settled(ledger)
    await ledger.stop()  # req-2 never completed (a crash): its in-flight row stays
    assert sorted((r.request_id, r.outcome, r.completion_tokens) for r in store.rows) == [
        ("req-1", "ok", 7),
        ("req-2", "in_flight", 5),
    ]


async def test_a_resumed_run_replaces_the_in_flight_row_of_the_process_that_stopped() -> None:
    """A batch line resumed after a kill keeps its request id: its final row, written by
    another process, takes the place of the dead one's in-flight row (not a second row)."""
    store = FakeStore()
    dead = Ledger(store)
    await dead.start()
    dead.begin(make_record(1, completion_tokens=256))
    await _settled(dead)
    await dead.stop()
    resumed = Ledger(store)
    await resumed.start()
    resumed.complete(make_record(1, completion_tokens=7), replaces=True)
    await _settled(resumed)
    await resumed.stop()
    assert [(r.request_id, r.outcome, r.completion_tokens) for r in store.rows] == [
        ("req-1", "ok", 7)
    ]


async def test_an_in_flight_row_not_yet_written_is_not_written_at_all() -> None:
    store = FakeStore()
    ledger = Ledger(store)
    ledger.begin(make_record(1))
    ledger.complete(make_record(1))
    await ledger.start()
    await _settled(ledger)
    await ledger.stop()
    assert [(r.request_id, r.outcome) for r in store.rows] == [("req-1", "ok")]
    assert store.batches == [1]


async def test_rows_past_memory_go_to_the_spill_file_and_come_back(tmp_path: Path) -> None:
    store = FakeStore()
    store.fail_write = True
    spill = SpillFile(str(tmp_path / "spill.jsonl"), 1 << 20)
    ledger = Ledger(store, queue_size=3, spill=spill, retry_max_seconds=0.02)
    await ledger.start()
    for n in range(10):
        ledger.record(make_record(n, prompt_text="nul\x00here"))
        await asyncio.sleep(0.01)
    assert spill.has_rows() and ledger.dropped == 0
    await ledger.stop(flush_seconds=0.05)  # the 3 held in memory are spilled too
    assert ledger.dropped == 0 and not store.rows

    store.fail_write = False
    again = Ledger(store, spill=spill)
    await again.start()
    await _settled(again)
    await again.stop()
    assert sorted(int(r.request_id[4:]) for r in store.rows) == list(range(10))
    assert store.firsts[-1] is False  # spilled rows may have been written before the stop
    assert all(r.prompt_text == "nul\ufffdhere" for r in store.rows)
    assert not spill.has_rows() and not spill.replay_path.exists()


async def test_the_bound_is_clear_when_there_is_no_spill_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.fail_write = True
    ledger = Ledger(store, queue_size=2, retry_max_seconds=0.02)
    await ledger.start()
    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        for n in range(5):
            ledger.record(make_record(n))
    assert ledger.dropped == 3
    assert any("ledger.queue_size 2" in r.getMessage() for r in caplog.records)
    await ledger.stop(flush_seconds=0.01)


async def test_database_down_at_start_is_retried() -> None:
    store = FakeStore()
    store.fail_open = True
    ledger = Ledger(store, open_retry_seconds=0.01, open_retry_max_seconds=0.01)
    await ledger.start()  # does not raise
    ledger.record(make_record(1))
    for _ in range(2):  # two retries in the background, both failing
        store.open_attempted.clear()
        await asyncio.wait_for(store.open_attempted.wait(), 5)
    assert ledger.pending == 1 and not store.rows
    store.fail_open = False
    await _settled(ledger)
    await ledger.stop()
    assert [r.request_id for r in store.rows] == ["req-1"]


async def test_stop_gives_up_after_its_timeout_and_counts_the_rest() -> None:
    store = FakeStore()
    store.fail_open = True
    ledger = Ledger(store, open_retry_seconds=3600)
    await ledger.start()
    for n in range(4):
        ledger.record(make_record(n))
    await ledger.stop(flush_seconds=0.05)
    assert (ledger.written, ledger.dropped) == (0, 4)
    ledger.record(make_record(9))  # after stop: dropped, still no exception
    assert ledger.dropped == 5
    assert store.closed


async def test_stop_cancels_a_hung_write() -> None:
    store = FakeStore()
    store.hang = asyncio.Event()  # never set
    ledger = Ledger(store)
    await ledger.start()
    ledger.record(make_record(1))
    ledger.record(make_record(2))
    await asyncio.sleep(0)
    await ledger.stop(flush_seconds=0.05)
    assert (ledger.written, ledger.dropped) == (0, 2)


def test_store_from_url_picks_by_scheme(tmp_path: Path) -> None:
    assert isinstance(store_from_url("sqlite:///usage.db"), SqliteStore)
    assert isinstance(store_from_url("postgresql://u@localhost/db"), PostgresStore)
    assert isinstance(store_from_url("postgres://u@localhost/db", table="t"), PostgresStore)
    with pytest.raises(ValueError, match="mysql"):
        store_from_url("mysql://localhost/db")
    with pytest.raises(ValueError):
        store_from_url("sqlite:///x.db", table="bad name")


async def _settled(ledger: Ledger) -> None:
    """Wait until the writer has taken everything queued so far."""
    await asyncio.wait_for(ledger.flush(), 5)


async def test_on_drop_hears_of_every_dropped_record() -> None:
    """Both ways of losing records reach the callback (the gateway counts them in a metric)."""
    told: list[int] = []
    store = FakeStore()
    store.fail_write = True
    ledger = Ledger(store, queue_size=2, on_drop=told.append)
    for n in range(3):  # not started yet: the third finds the queue full
        ledger.record(make_record(n))
    assert told == [1]
    await ledger.start()
    await asyncio.sleep(0.01)  # the two queued ones fail to write, and are held
    await ledger.stop(flush_seconds=0.01)  # then given up at shutdown
    assert sum(told) == ledger.dropped == 3


class _Signalling(FakeStore):
    """Says when a batch was written."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    async def write_many(
        self, records: Sequence[UsageRecord], replacing: Sequence[str] = (), *, first: bool = False
    ) -> None:
        await super().write_many(records, replacing, first=first)
        self.wrote.set()


async def _written(store: _Signalling, rows: int) -> None:
    while len(store.rows) < rows:
        store.wrote.clear()
        await store.wrote.wait()


async def test_a_batch_never_handed_to_the_database_is_written_as_first() -> None:
    """Rows written for the first time skip the check for copies of themselves (one DELETE
    per request less); a batch that failed is retried one by one, none of them first."""
    store = FakeStore()
    ledger = Ledger(store, batch_size=10)
    for n in range(4):
        ledger.record(make_record(n))
    await ledger.start()
    await _settled(ledger)
    assert store.firsts == [True]
    store.poison = {"req-6"}
    for n in range(5, 8):
        ledger.record(make_record(n))
    await _settled(ledger)
    await ledger.stop()
    assert store.firsts == [True, True, False, False, False]
    assert [r.request_id for r in store.rows] == [
        "req-0",
        "req-1",
        "req-2",
        "req-3",
        "req-5",
        "req-7",
    ]


async def test_group_commit_gathers_rows_arriving_while_the_first_waits() -> None:
    store = FakeStore()
    ledger = Ledger(store, batch_wait=3600)  # only a full batch or a flush cuts the wait
    await ledger.start()
    ledger.record(make_record(0))
    for _ in range(20):  # the writer had every chance to write the first row alone
        await asyncio.sleep(0)
    for n in range(1, 5):
        ledger.record(make_record(n))
    await asyncio.wait_for(ledger.flush(), 5)  # a flush does not wait out batch_wait
    assert store.batches == [5]
    await ledger.stop()


async def test_group_commit_writes_a_full_batch_at_once() -> None:
    store = _Signalling()
    ledger = Ledger(store, batch_size=3, batch_wait=3600)
    await ledger.start()
    for n in range(7):
        ledger.record(make_record(n))
    await asyncio.wait_for(_written(store, 6), 5)  # two full batches, with no flush
    assert store.batches == [3, 3]
    await ledger.stop()
    assert store.batches == [3, 3, 1]


async def test_a_request_ending_within_the_wait_writes_one_row_not_two() -> None:
    """A cache hit: its in-flight row is superseded before the writer takes it."""
    store = FakeStore()
    ledger = Ledger(store, batch_wait=3600)
    await ledger.start()
    ledger.begin(make_record(1))
    for _ in range(20):
        await asyncio.sleep(0)
    ledger.complete(make_record(1))
    await asyncio.wait_for(ledger.flush(), 5)
    assert [(r.request_id, r.outcome) for r in store.rows] == [("req-1", "ok")]
    assert store.batches == [1]
    await ledger.stop()
