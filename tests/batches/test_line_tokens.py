"""The tokens each batch line used, stored with the line and summed in its batch's counts (the
OpenAI batch's ``usage``), on SQLite and on PostgreSQL when DATABASE_URL is set; a database
made before the columns existed gains them when the store opens."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gateway.batches.store import BatchStore, Line, StoredBatch
from gateway.db import Databases, database_for

DATABASE_URL = os.environ.get("DATABASE_URL")

#: The lines table as the first gateways with batches made it: no token columns.
OLD_LINES = """CREATE TABLE {t}_lines (
    batch_id TEXT NOT NULL, n INTEGER NOT NULL, custom_id TEXT NOT NULL,
    request TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    job_ids TEXT NOT NULL, kind TEXT, result TEXT, PRIMARY KEY (batch_id, n))"""


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres", marks=pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")
        ),
    ]
)
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A database URL and a table name of this test's own (dropped after)."""
    table = f"bu_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp_path}/b.db" if request.param == "sqlite" else str(DATABASE_URL)
    yield url, table
    if request.param == "postgres":
        conn = await asyncpg.connect(DATABASE_URL)
        try:
            for name in (table, f"{table}_lines"):
                await conn.execute(f"DROP TABLE IF EXISTS {name}")
        finally:
            await conn.close()


async def test_counts_sum_the_tokens_of_the_lines_done(place: tuple[str, str]) -> None:
    url, table = place
    store = BatchStore(url, table, Databases())
    await store.open()
    try:
        now = time.time()
        await store.add_lines([Line("b1", n, f"c{n}", {"n": n}) for n in range(4)])
        await store.put(
            StoredBatch(
                "b1", "alice", "openai", "in_progress", now, now + 60, {}, key_id="alice-id"
            )
        )
        lines = await store.lines("b1", ("queued",), 10)
        await store.finish(lines[0], "output", {"custom_id": "c0"}, (11, 5))
        await store.finish(lines[1], "output", {"custom_id": "c1"}, (7, 3))
        await store.finish(lines[2], "error", {"custom_id": "c2"})  # refused: used none
        counts = await store.counts("b1")  # line 3 is still queued
        assert (counts.done, counts.failed, counts.queued) == (2, 1, 1)
        assert (counts.input_tokens, counts.output_tokens) == (18, 8)
        assert counts.usage() == {
            "input_tokens": 18,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 8,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 26,
        }
    finally:
        await store.close()


async def test_an_older_database_gains_the_token_columns(place: tuple[str, str]) -> None:
    url, table = place
    old = database_for(url)
    await old.open()
    try:
        await old.execute(OLD_LINES.format(t=table))
        await old.execute(  # a line finished by an older gateway: its tokens unknown
            f"INSERT INTO {table}_lines VALUES ('b0', 0, 'c0', '{{}}', 'done', 1, '[]', "
            "'output', '{}')"
        )
    finally:
        await old.close()
    store = BatchStore(url, table, Databases())
    await store.open()
    try:
        await store.add_lines([Line("b0", 1, "c1", {})])
        line = (await store.lines("b0", ("queued",), 10))[0]
        await store.finish(line, "output", {"custom_id": "c1"}, (4, 2))
        counts = await store.counts("b0")
        assert (counts.done, counts.input_tokens, counts.output_tokens) == (2, 4, 2)
    finally:
        await store.close()
    again = BatchStore(url, table, Databases())  # opening twice adds nothing twice
    await again.open()
    await again.close()
