"""The file and batch stores on SQLite, and on PostgreSQL when DATABASE_URL is set: the same
SQL on both, one connection shared by the two stores, leases, line states and counts."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gateway.batches.files import FileStore, StoredFile
from gateway.batches.store import BatchStore, Line, StoredBatch
from gateway.config_batches import FileSettings
from gateway.db import Databases

DATABASE_URL = os.environ.get("DATABASE_URL")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres", marks=pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")
        ),
    ]
)
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[FileStore, BatchStore]]:
    prefix = f"bt_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp_path}/b.db" if request.param == "sqlite" else str(DATABASE_URL)
    databases = Databases()  # one engine for both stores, as the app has
    files = FileStore(url, FileSettings(table=f"{prefix}_files", chunk_bytes=1024), databases)
    batches = BatchStore(url, f"{prefix}_batches", databases)
    await files.open()
    await batches.open()
    try:
        yield files, batches
    finally:
        await batches.close()
        await files.close()
        if request.param == "postgres":
            conn = await asyncpg.connect(DATABASE_URL)
            try:
                for table in ("files", "files_chunks", "batches", "batches_lines"):
                    await conn.execute(f"DROP TABLE IF EXISTS {prefix}_{table}")
            finally:
                await conn.close()


async def test_a_file_is_visible_once_whole_and_only_to_its_key(
    stores: tuple[FileStore, BatchStore],
) -> None:
    files, _ = stores
    now = time.time()
    record = StoredFile("file-1", "alice", "a.jsonl", "batch", 0, 0, now, now + 60, "uploading")
    await files.begin(record)
    await files.append("file-1", 0, '{"a": 1}\n')
    assert await files.get("file-1", "alice") is None  # not yet committed
    await files.append("file-1", 1, '{"b": 2}\n')
    record.bytes, record.lines, record.status = 18, 2, "processed"
    await files.commit(record)
    assert (await files.get("file-1", "alice")) == record
    assert await files.get("file-1", "bob") is None
    assert [c async for c in files.chunks("file-1")] == ['{"a": 1}\n', '{"b": 2}\n']
    assert [f.id for f in await files.page("alice", purpose=None, after=None, limit=5,
                                            order="desc")] == ["file-1"]  # fmt: skip
    assert await files.purge(now + 120) == 1
    assert [c async for c in files.chunks("file-1")] == []


async def test_batches_leases_lines_and_counts(stores: tuple[FileStore, BatchStore]) -> None:
    _, store = stores
    now = time.time()
    await store.add_lines([Line("b1", n, f"c{n}", {"n": n}) for n in range(4)])
    await store.put(StoredBatch("b1", "alice", "openai", "validating", now, now + 60, {"x": 1}))
    assert await store.claimable("gw-a", now) == ["b1"]
    assert await store.claim("b1", "gw-a", now, 10)
    assert not await store.claim("b1", "gw-b", now + 1, 10)  # held
    assert await store.claim("b1", "gw-b", now + 11, 10)  # lapsed: taken over
    lines = await store.lines("b1", ("queued",), 10)
    await store.submitting("b1", [0, 1, 2])
    await store.submitted(lines[0], ["job-0"])
    await store.finish(lines[1], "output", {"custom_id": "c1"})
    await store.retry(lines[2])
    assert await store.abandon("b1", "cancelled") == 2  # lines 2 and 3 were queued
    counts = await store.counts("b1")
    assert (counts.total, counts.done, counts.submitted, counts.cancelled) == (4, 1, 1, 2)
    resumed = await store.lines("b1", ("submitted",), 10)
    assert [(x.n, x.job_ids) for x in resumed] == [(0, ("job-0",))]
    batch = await store.get("b1", "alice", "openai")
    assert batch is not None and await store.get("b1", "bob", "openai") is None
    batch.status = "cancelling"
    assert await store.save(batch, was=("validating", "in_progress"))
    batch.status = "in_progress"
    assert not await store.save(batch, was=("validating",))  # a cancel is not overwritten
    assert [b.id for b in await store.page(None, None, after=None, limit=5)] == ["b1"]
    assert await store.purge(now + 1) == 0  # still active (cancelling): kept
    batch.status = "cancelled"
    await store.save(batch)
    assert await store.purge(now - 1) == 0  # made after the cut-off: kept
    assert await store.purge(now + 1) == 1
    assert await store.lines("b1", ("submitted",), 10) == []
    await store.delete("b1")
    assert await store.get("b1", None, None) is None
