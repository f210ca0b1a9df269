"""The file and batch stores on SQLite, and on PostgreSQL when DATABASE_URL is set: the same
SQL on both, one connection shared by the two stores, leases, line states and counts; files
and batches owned by a key's identity, never its name, and tables of an older gateway."""

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
#: Key identities (``gateway.keys.digests.owner``) of database keys.
ALICE, BOB = "db:alice:1000.0", "db:bob:1000.0"
#: A key made later with the name of a removed ``alice``: another identity.
ALICE_AGAIN = "db:alice:2000.0"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres", marks=pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")
        ),
    ]
)
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A database URL and a table prefix of this test's own (its PostgreSQL tables dropped)."""
    prefix = f"bt_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp_path}/b.db" if request.param == "sqlite" else str(DATABASE_URL)
    yield url, prefix
    if request.param == "postgres":
        conn = await asyncpg.connect(DATABASE_URL)
        try:
            for table in ("files", "files_chunks", "batches", "batches_lines"):
                await conn.execute(f"DROP TABLE IF EXISTS {prefix}_{table}")
        finally:
            await conn.close()


@pytest.fixture
async def stores(place: tuple[str, str]) -> AsyncIterator[tuple[FileStore, BatchStore]]:
    url, prefix = place
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


async def test_a_file_is_visible_once_whole_and_only_to_its_key(
    stores: tuple[FileStore, BatchStore],
) -> None:
    files, _ = stores
    now = time.time()
    record = StoredFile(
        "file-1", "alice", "a.jsonl", "batch", 0, 0, now, now + 60, "uploading", key_id=ALICE
    )
    await files.begin(record)
    await files.append("file-1", 0, '{"a": 1}\n')
    assert await files.get("file-1", ALICE) is None  # not yet committed
    await files.append("file-1", 1, '{"b": 2}\n')
    record.bytes, record.lines, record.status = 18, 2, "processed"
    await files.commit(record)
    assert (await files.get("file-1", ALICE)) == record
    assert await files.get("file-1", BOB) is None
    assert [c async for c in files.chunks("file-1")] == ['{"a": 1}\n', '{"b": 2}\n']
    assert [f.id for f in await files.page(ALICE, purpose=None, after=None, limit=5,
                                            order="desc")] == ["file-1"]  # fmt: skip
    assert await files.purge(now + 120) == 1
    assert [c async for c in files.chunks("file-1")] == []


async def test_batches_leases_lines_and_counts(stores: tuple[FileStore, BatchStore]) -> None:
    _, store = stores
    now = time.time()
    await store.add_lines([Line("b1", n, f"c{n}", {"n": n}) for n in range(4)])
    await store.put(
        StoredBatch("b1", "alice", "openai", "validating", now, now + 60, {"x": 1}, key_id=ALICE)
    )
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
    batch = await store.get("b1", ALICE, "openai")
    assert batch is not None and await store.get("b1", BOB, "openai") is None
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


async def _a_file(files: FileStore, file_id: str, key_name: str, key_id: str | None) -> None:
    now = time.time()
    record = StoredFile(
        file_id, key_name, "a.jsonl", "batch", 9, 1, now, now + 60, "processed", key_id=key_id
    )
    await files.put(record, ['{"a": 1}\n'])


async def test_files_and_batches_belong_to_an_identity_not_a_name(
    stores: tuple[FileStore, BatchStore],
) -> None:
    files, store = stores
    now = time.time()
    await _a_file(files, "file-old", "alice", ALICE)
    for door in ("openai", "anthropic"):
        batch = StoredBatch(
            f"b-{door}", "alice", door, "completed", now, now + 60, {}, key_id=ALICE
        )
        await store.put(batch)
    # A new key named alice (the first one removed) finds nothing of the first one's.
    assert await files.get("file-old", ALICE_AGAIN) is None
    assert await files.page(ALICE_AGAIN, purpose=None, after=None, limit=5, order="desc") == []
    assert not await files.delete("file-old", ALICE_AGAIN)
    for door in ("openai", "anthropic"):
        assert await store.get(f"b-{door}", ALICE_AGAIN, door) is None
        assert await store.page(ALICE_AGAIN, door, after=None, limit=5) == []
        assert await store.page(ALICE_AGAIN, door, after=f"b-{door}", limit=5) == []
    # Its own are its own; the first key's stay the first key's, under the same name.
    await _a_file(files, "file-new", "alice", ALICE_AGAIN)
    listed = await files.page(ALICE_AGAIN, purpose=None, after=None, limit=5, order="desc")
    assert [f.id for f in listed] == ["file-new"]
    got = await files.get("file-old", ALICE)
    assert got is not None and (got.key_name, got.key_id) == ("alice", ALICE)
    found = await store.get("b-openai", ALICE, "openai")
    assert found is not None and (found.key_name, found.key_id) == ("alice", ALICE)
    # The admin views read every key's: by name, both identities' batches.
    await store.put(
        StoredBatch("b-again", "alice", "openai", "completed", now + 1, now + 60, {},
                    key_id=ALICE_AGAIN)
    )  # fmt: skip
    by_name = await store.page(None, None, after=None, limit=5, key_name="alice")
    assert [b.id for b in by_name] == ["b-again", "b-openai", "b-anthropic"]
    assert await store.page(None, None, after=None, limit=5, key_name="bob") == []
    assert (await files.get("file-old", None)) == got
    assert await files.delete("file-old", ALICE)


#: The tables as the gateway before identities made them (no ``key_id``).
OLD_TABLES = (
    """CREATE TABLE {p}_files (
        id TEXT PRIMARY KEY, key_name TEXT NOT NULL, filename TEXT NOT NULL,
        purpose TEXT NOT NULL, bytes BIGINT NOT NULL, lines BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL)""",
    "CREATE INDEX {p}_files_key ON {p}_files (key_name, created_at)",
    """CREATE TABLE {p}_files_chunks (
        file_id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (file_id, seq))""",
    """CREATE TABLE {p}_batches (
        id TEXT PRIMARY KEY, key_name TEXT NOT NULL, door TEXT NOT NULL,
        status TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, owner TEXT,
        lease_until DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE {p}_batches_lines (
        batch_id TEXT NOT NULL, n INTEGER NOT NULL, custom_id TEXT NOT NULL,
        request TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
        job_ids TEXT NOT NULL, kind TEXT, result TEXT,
        PRIMARY KEY (batch_id, n))""",
    "INSERT INTO {p}_files VALUES ('file-legacy', 'alice', 'a.jsonl', 'batch', 9, 1, {now}, "
    "{later}, 'processed')",
    "INSERT INTO {p}_files_chunks VALUES ('file-legacy', 0, '{{}}')",
    "INSERT INTO {p}_batches VALUES ('b-legacy', 'alice', 'openai', 'in_progress', {now}, "
    "{later}, '{{}}', NULL, 0)",
)


async def test_an_older_gateways_rows_belong_to_no_key(place: tuple[str, str]) -> None:
    """Tables made before identities get their ``key_id`` column; their rows, which knew only
    a name, are found by no key (the admin views still see them), and new rows work."""
    url, prefix = place
    databases = Databases()
    old = databases.get(url)
    await old.open()
    now = time.time()
    async with old.transaction() as tx:
        for sql in OLD_TABLES:
            await tx.execute(sql.format(p=prefix, now=now, later=now + 60))
    files = FileStore(url, FileSettings(table=f"{prefix}_files", chunk_bytes=1024), databases)
    store = BatchStore(url, f"{prefix}_batches", databases)
    await files.open()
    await store.open()
    try:
        assert await files.get("file-legacy", ALICE) is None
        assert await files.page(ALICE, purpose=None, after=None, limit=5, order="desc") == []
        assert not await files.delete("file-legacy", ALICE)
        legacy = await files.get("file-legacy", None)  # the admin view
        assert legacy is not None and (legacy.key_name, legacy.key_id) == ("alice", None)
        assert await store.get("b-legacy", ALICE, "openai") is None
        assert await store.page(ALICE, "openai", after=None, limit=5) == []
        batch = await store.get("b-legacy", None, None)  # the runner, and the admin views
        assert batch is not None and batch.key_id is None
        assert await store.claimable("gw", now) == ["b-legacy"]  # resumed: the runner ends it
        await _a_file(files, "file-new", "alice", ALICE)
        assert (await files.get("file-new", ALICE)) is not None
        await store.put(
            StoredBatch("b-new", "alice", "openai", "validating", now, now + 60, {}, key_id=ALICE)
        )
        assert [b.id for b in await store.page(ALICE, "openai", after=None, limit=5)] == ["b-new"]
        await files.close()
        await store.close()
        await files.open()  # opening again (a restart) leaves the table as it is
        await store.open()
        assert (await files.get("file-new", ALICE)) is not None
    finally:
        await store.close()
        await files.close()
        await old.close()
