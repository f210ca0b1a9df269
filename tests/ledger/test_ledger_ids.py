"""Request ids in time order: a batch of the ledger's rows dirties a few pages, not one each.

Each row is an entry of the ledger's index on ``request_id``. With random ids (as before
2026-12-08) every new entry falls on its own page of a large index, so each batch of a
saturated gateway wrote about one 4 KiB page per row to SQLite's log at commit (and the
thread spent ~40% longer per request writing them: ``bench/ledger_ids.py``)."""

from __future__ import annotations

import re
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_support import make_record

from gateway import ids
from gateway.http.middleware import new_request_id
from gateway.ledger.sqlite import SqliteStore
from gateway.openai.responses.run import new_id


def test_ids_sort_by_the_time_they_were_made(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1_700_000_000_000, 1_700_000_000_000 + 10**9, 997_001))
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock) * 1_000_000 // 1000)
    made = [new_request_id() for _ in range(200)]
    assert made == sorted(made)
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in made)
    responses = [new_id("resp") for _ in range(200)]
    assert responses == sorted(responses)
    assert all(re.fullmatch(r"resp_[0-9a-f]{48}", i) for i in responses)


def test_ids_of_one_millisecond_are_all_different(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_765_000_000_000_000_000)
    made = {new_request_id() for _ in range(10_000)}
    assert len(made) == 10_000
    assert len({i[4:15] for i in made}) == 1  # one time part: the rest is random
    assert len({new_id("msg")[-37:] for _ in range(1_000)}) == 1_000
    with pytest.raises(ValueError):
        ids.sortable_hex(ids.TIME_DIGITS)


def _random_id() -> str:
    return "req_" + secrets.token_hex(12)


async def _pages_per_batch(tmp_path: Path, make: Callable[[], str]) -> float:
    """Pages SQLite logs per batch of 100 rows, on a ledger of 20,000."""
    path = tmp_path / f"{make.__name__}.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        n = 0
        for _ in range(40):  # 20,000 rows already there
            await store.write_many([make_record(n := n + 1, request_id=make()) for _ in range(500)])
        frames = []
        for _ in range(5):
            with sqlite3.connect(path) as conn:  # an empty log: it holds this batch's pages
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await store.write_many([make_record(n := n + 1, request_id=make()) for _ in range(100)])
            logged = (path.parent / (path.name + "-wal")).stat().st_size
            frames.append((logged - 32) / (4096 + 24))  # the log's header, then page frames
        return sum(frames) / len(frames)
    finally:
        await store.close()


async def test_a_batch_of_sorted_ids_writes_a_fraction_of_the_pages(tmp_path: Path) -> None:
    ordered = await _pages_per_batch(tmp_path, new_request_id)
    scattered = await _pages_per_batch(tmp_path, _random_id)
    print(f"pages per batch of 100 rows: {ordered:.1f} in time order, {scattered:.1f} random")
    assert scattered > 60  # about one page of the id index per row, and then the rest
    assert ordered < scattered / 3
