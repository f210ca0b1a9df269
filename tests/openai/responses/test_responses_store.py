"""The response store on SQLite, and on PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.openai.responses.rows import Dumped, dumps
from gateway.openai.responses.store import ResponseStore, StoredResponse

DATABASE_URL = os.environ.get("DATABASE_URL")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres", marks=pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")
        ),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResponseStore]:
    table = f"resp_test_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp_path}/r.db" if request.param == "sqlite" else str(DATABASE_URL)
    store = ResponseStore(url, table)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        if request.param == "postgres":
            conn = await asyncpg.connect(DATABASE_URL)
            try:
                for suffix in ("", "_items", "_events"):
                    await conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
            finally:
                await conn.close()


def _record(rid: str, key: str = "alice", **fields: object) -> StoredResponse:
    now = time.time()
    base: dict[str, object] = {
        "id": rid,
        "key_id": key,
        "key_name": key,
        "created_at": now,
        "expires_at": now + 60,
        "status": "completed",
        "background": False,
        "body": {"id": rid, "status": "completed", "output": [{"id": "msg_1", "type": "message"}]},
    }
    base.update(fields)
    return StoredResponse(**base)  # type: ignore[arg-type]


async def test_a_response_is_visible_to_its_key_only(store: ResponseStore) -> None:
    await store.put(_record("resp_1"), [{"id": "in_1", "type": "message", "role": "user"}])
    now = time.time()
    got = await store.get("resp_1", "alice", now)
    assert got is not None and got.body["status"] == "completed"
    assert await store.get("resp_1", "bob", now) is None
    assert [i["id"] for i in await store.items("resp_1")] == ["in_1"]
    assert [i["id"] for i in await store.items("resp_1", role="output")] == ["msg_1"]
    assert set(await store.find_items(["in_1", "msg_1"], "alice")) == {"in_1", "msg_1"}
    assert await store.find_items(["in_1"], "bob") == {}
    assert not await store.delete("resp_1", "bob")
    assert await store.delete("resp_1", "alice")
    assert await store.get("resp_1", "alice", now) is None


async def test_retention_hides_then_purges(store: ResponseStore) -> None:
    await store.put(_record("resp_old", expires_at=time.time() - 1), [])
    assert await store.get("resp_old", "alice", time.time()) is None
    assert await store.purge(time.time()) == 1


async def test_background_progress_leases_and_cancel(store: ResponseStore) -> None:
    record = _record(
        "resp_bg",
        status="queued",
        background=True,
        lease_until=time.time() + 60,
        body={"id": "resp_bg", "status": "queued", "output": []},
    )
    await store.put(record, [])
    assert await store.claim("other", time.time(), 5) == []  # its lease is live
    record.status, record.seq, record.job_ids = "in_progress", 3, ["job1"]
    events = [{"type": "x", "sequence_number": n} for n in range(3)]
    assert await store.update(record, events)
    assert [e["sequence_number"] for e in await store.events("resp_bg", 0)] == [1, 2]
    record.lease_until = time.time() - 1  # the gateway that followed it died
    assert await store.update(record)
    claimed = await store.claim("other", time.time(), 5)
    assert [(r.id, r.owner, r.job_ids, r.seq) for r in claimed] == [
        ("resp_bg", "other", ["job1"], 3)
    ]
    assert await store.claim("third", time.time(), 5) == []  # taken once
    assert await store.cancel("resp_bg", "alice", {"id": "resp_bg", "status": "cancelled"})
    assert not await store.update(record)  # its runner learns it was cancelled
    got = await store.get("resp_bg", "alice", time.time())
    assert got is not None and got.status == "cancelled"


async def test_a_chain_is_referenced_once_and_a_deleted_turn_is_left_out(
    store: ResponseStore,
) -> None:
    def turn(n: int, previous: str | None) -> StoredResponse:
        body = {"id": f"r{n}", "status": "completed", "output": [{"id": f"out{n}"}]}
        return _record(f"r{n}", body=body, previous_id=previous)

    previous = None
    for n in range(4):
        await store.put(turn(n, previous), [{"id": f"in{n}"}], chain=[f"r{m}" for m in range(n)])
        previous = f"r{n}"
    history, ids = await store.chain("r3", "alice")
    assert [i["id"] for i in history] == [
        "in0", "out0", "in1", "out1", "in2", "out2", "in3", "out3"
    ]  # fmt: skip
    assert ids == ["r3", "r2", "r1", "r0"]
    assert await store.delete("r1", "alice")
    history, _ = await store.chain("r3", "alice")
    assert [i["id"] for i in history] == ["in0", "out0", "in2", "out2", "in3", "out3"]
    assert await store.get("r1", "alice", time.time()) is None
    assert not await store.delete("r1", "alice")  # once
    assert await store.chain("r3", "bob") == ([], [])  # another key's chain is not there


async def test_stored_bytes_count_everything_stored_once(store: ResponseStore) -> None:
    big = {"id": "ws_1", "type": "web_search_call", "extra": "x" * 10_000}
    record = _record("r_big", body={"id": "r_big", "status": "completed", "output": []})
    stored = await store.put(record, [big])
    assert 10_000 < stored < 11_000  # the item once: not in the request, not in a history
    assert await store.stored_bytes("alice", time.time()) == stored
    assert await store.stored_bytes("bob", time.time()) == 0
    await store.delete("r_big", "alice")
    assert await store.stored_bytes("alice", time.time()) == 0


async def test_text_is_stored_as_utf8_and_counted_in_bytes(store: ResponseStore) -> None:
    """Non-ASCII text is stored as it is (not as ``\\u`` escapes, six bytes a character) and
    counted by the bytes it takes: a two-byte character counts two, not one."""
    item = {"id": "m_1", "type": "message", "role": "user", "content": "\u00e9" * 1000}
    record = _record("r_utf8", body={"id": "r_utf8", "status": "completed", "output": []})
    stored = await store.put(record, [item])
    assert 2000 < stored < 2600, stored
    assert (await store.items("r_utf8", role="input"))[0]["content"] == "\u00e9" * 1000
    assert await store.stored_bytes("alice", time.time()) == stored


async def test_text_counted_before_the_run_is_the_text_stored(store: ResponseStore) -> None:
    """The door counts the request and its inputs against the caps before the run, and hands
    that text to the store: written as counted, not made again."""
    item = {"id": "m_2", "type": "message", "role": "user", "content": "hello"}
    record = _record("r_dumped", body={"id": "r_dumped", "status": "completed", "output": []})
    counted = Dumped(dumps(record.request), ['{"id":"m_2","note":"as counted"}'])
    stored = await store.put(record, [item], dumped=counted)
    assert (await store.items("r_dumped", role="input")) == [{"id": "m_2", "note": "as counted"}]
    alone = await store.put(_record("r_alone", body=record.body), [item])
    assert stored - alone == len(counted.inputs[0]) - len(dumps(item))


async def test_the_quota_sum_reads_an_index_not_the_stored_rows(tmp_path: Path) -> None:
    """A key's stored bytes are summed from an index that holds them: the sum does not read
    each stored response (its body) as the key's responses grow; an older gateway's index on
    the key alone is replaced."""
    older = ResponseStore(f"sqlite:///{tmp_path}/q.db", "q")
    await older.open()
    await older.db.execute("CREATE INDEX q_key ON q (key_id)")  # as an older gateway left it
    await older.close()
    store = ResponseStore(f"sqlite:///{tmp_path}/q.db", "q")
    await store.open()
    try:
        plan = await store.db.fetch(
            "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(bytes), 0) FROM q "
            "WHERE key_id = ? AND expires_at >= ?",
            ["alice", 0.0],
        )
        assert any("COVERING INDEX q_key_bytes" in str(row[-1]) for row in plan), plan
        names = {r[0] for r in await store.db.fetch("SELECT name FROM sqlite_master")}
        assert "q_key" not in names and "q_key_bytes" in names
    finally:
        await store.close()


async def test_only_runs_still_going_are_indexed_for_the_claim(tmp_path: Path) -> None:
    """The claim of abandoned background runs reads an index of the runs still going; a
    finished response (most of them) adds no entry to it. An older gateway's index of every
    row by status is replaced."""
    older = ResponseStore(f"sqlite:///{tmp_path}/c.db", "c")
    await older.open()
    try:
        await older.db.execute("CREATE INDEX c_active ON c (status, lease_until)")  # as it was
        await older.db.execute(  # and as it was next, with an IN list
            "CREATE INDEX c_running ON c (lease_until) "
            "WHERE status IN ('submitting', 'queued', 'in_progress')"
        )
    finally:
        await older.close()
    store = ResponseStore(f"sqlite:///{tmp_path}/c.db", "c")
    await store.open()
    try:
        await store.put(_record("done"), [])
        await store.put(_record("going", status="queued", background=True, lease_until=1.0), [])
        plan = await store.db.fetch(
            "EXPLAIN QUERY PLAN SELECT id FROM c WHERE background = 1 AND (status = "
            "'submitting' OR status = 'queued' OR status = 'in_progress') AND lease_until < ?",
            [time.time()],
        )
        assert any("INDEX c_going" in str(row[-1]) for row in plan), plan
        names = {r[0] for r in await store.db.fetch("SELECT name FROM sqlite_master")}
        assert "c_active" not in names and "c_running" not in names
        claimed = await store.claim("me", time.time(), 30)
        assert [r.id for r in claimed] == ["going"]
    finally:
        await store.close()


async def test_storing_a_response_builds_no_temporary_table(tmp_path: Path) -> None:
    """The partial index's condition is evaluated on every insert: written as an IN list,
    SQLite built a temporary table for it each time (a fifth of a stored response's cost)."""
    store = ResponseStore(f"sqlite:///{tmp_path}/e.db", "e")
    await store.open()
    try:
        program = await store.db.fetch(
            "EXPLAIN INSERT INTO e (id, key_name, created_at, expires_at, status, background, "
            "body, history, request, job_ids, seq, lease_until) "
            "VALUES ('r', 'k', 0, 0, 'completed', 0, '{}', '[]', '{}', '[]', 0, 0)"
        )
        opcodes = {str(row[1]) for row in program}
        assert "IdxInsert" in opcodes  # the program was read (its index inserts are there)
        assert "OpenEphemeral" not in opcodes
    finally:
        await store.close()


async def test_the_quota_check_asks_the_database_only_when_it_matters(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh figure plus this process's own writes answers while it leaves room; a stale
    one, or one that would refuse, is read again (deletes only lower the truth)."""
    asked: list[str] = []
    exact = store.stored_bytes

    async def counted(key_id: str, now: float) -> int:
        asked.append(key_id)
        return await exact(key_id, now)

    monkeypatch.setattr(store, "stored_bytes", counted)
    now = time.time()
    assert await store.quota_used("alice", now, 100, 10**9) == 0
    first = await store.put(_record("q1"), [{"id": "in_1", "type": "message"}])
    second = await store.put(_record("q2"), [])
    assert await store.quota_used("alice", now, 100, 10**9) == first + second  # from memory
    assert asked == ["alice"]
    await store.delete("q1", "alice")
    cap = first + second + 50  # the remembered figure would refuse 100 more: ask again
    assert await store.quota_used("alice", now, 100, cap) == second
    assert asked == ["alice", "alice"]
    later = now + 2  # stale: read again, whatever the room
    assert await store.quota_used("alice", later, 1, 10**9) == second
    assert asked == ["alice"] * 3
    assert await store.quota_used("bob", now, 1, 10**9) == 0  # each key its own
    assert asked == ["alice"] * 3 + ["bob"]


async def test_quota_checks_arriving_during_a_read_share_it(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty checks of one key with nothing remembered make one read of its sum, not fifty
    queued one after another on the database (which held each request back in turn); a check
    the shared figure would refuse still reads for itself, and a failed read fails only its
    own check."""
    await store.put(_record("s1"), [{"id": "in_1", "type": "message"}])
    asked: list[str] = []
    exact = store.stored_bytes

    async def slow(key_id: str, now: float) -> int:
        asked.append(key_id)
        await asyncio.sleep(0.05)
        return await exact(key_id, now)

    monkeypatch.setattr(store, "stored_bytes", slow)
    now = time.time()
    used = await asyncio.gather(*(store.quota_used("alice", now, 10, 10**9) for _ in range(50)))
    assert asked == ["alice"] and len(set(used)) == 1 and used[0] > 0
    tight = used[0] + 5  # 10 more would pass it: refused only on a read of its own
    assert await store.quota_used("alice", now, 10, tight) == used[0]
    assert asked == ["alice", "alice"]

    async def failing(key_id: str, now: float) -> int:
        asked.append(key_id)
        await asyncio.sleep(0.05)
        if len(asked) == 3:
            raise OSError("database away")
        return await exact(key_id, now)

    monkeypatch.setattr(store, "stored_bytes", failing)
    later = now + 5
    first = asyncio.ensure_future(store.quota_used("alice", later, 1, 10**9))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(store.quota_used("alice", later, 1, 10**9))
    with pytest.raises(OSError):
        await first
    assert await second == used[0]  # read alone after the shared read failed
    assert asked == ["alice"] * 4


async def test_puts_arriving_together_share_one_transaction(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[str]] = []
    write = store._write_puts

    async def counted(batch: Any) -> None:
        batches.append([p.record.id for p in batch])
        await write(batch)

    monkeypatch.setattr(store._puts, "_write", counted)
    sizes = await asyncio.gather(
        *(store.put(_record(f"g{n}"), [{"id": f"in_g{n}", "type": "message"}]) for n in range(5))
    )
    assert batches == [[f"g{n}" for n in range(5)]]  # one commit for the five
    for n, size in enumerate(sizes):
        got = await store.get(f"g{n}", "alice", time.time())
        assert got is not None and got.status == "completed" and size > 0
    assert await store.stored_bytes("alice", time.time()) == sum(sizes)


async def test_a_refused_put_fails_alone_and_the_others_of_its_batch_are_stored(
    store: ResponseStore,
) -> None:
    await store.put(_record("dup"), [])
    results = await asyncio.gather(
        store.put(_record("ok1"), []),
        store.put(_record("dup"), []),  # the same id again: the database refuses it
        store.put(_record("ok2"), []),
        return_exceptions=True,
    )
    assert isinstance(results[1], Exception)
    assert all(isinstance(r, int) for r in (results[0], results[2]))
    for rid in ("ok1", "ok2", "dup"):
        assert await store.get(rid, "alice", time.time()) is not None


async def test_background_progress_and_events_commit_together(store: ResponseStore) -> None:
    record = _record(
        "resp_tx",
        status="queued",
        background=True,
        body={"id": "resp_tx", "status": "queued", "output": []},
    )
    await store.put(record, [])
    record.status, record.seq = "in_progress", 2
    events = [{"type": "x", "sequence_number": n} for n in range(2)]
    await store.db.execute(f"DROP TABLE {store.t}_events")  # the events write fails
    with pytest.raises(Exception):  # noqa: B017 - either engine's own error
        await store.update(record, events)
    got = await store.get("resp_tx", "alice", time.time())
    assert got is not None and (got.status, got.seq) == ("queued", 0)  # nothing half-saved


async def test_150_runs_writing_and_reading_at_once(store: ResponseStore) -> None:
    """The default SQLite store serialises its writers: no sqlite3.InterfaceError, no hang."""

    async def one(n: int) -> None:
        body = {"id": f"r{n}", "status": "queued", "output": []}
        record = _record(f"r{n}", status="queued", background=True, body=body)
        await store.put(record, [{"id": f"in{n}", "type": "message"}])
        for seq in range(10):
            record.status, record.seq = "in_progress", seq + 1
            assert await store.update(record, [{"sequence_number": seq, "type": "x"}])
            assert await store.get(f"r{n}", "alice", time.time()) is not None
            assert len(await store.events(f"r{n}", -1)) == seq + 1
        record.status = "completed"
        record.body = {"id": f"r{n}", "status": "completed", "output": [{"id": f"o{n}"}]}
        assert await store.update(record, final=True)

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(150))), timeout=120)
    got = await store.get("r149", "alice", time.time())
    assert got is not None and got.body["output"] == [{"id": "o149"}]
