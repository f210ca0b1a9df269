"""Tails of a background run another gateway follows: one reader of the store per response.

A replica that does not own a run reads its progress from the store. However many clients
follow it here, the store is read as if one did (issue 22, item 5), and each tail gets a
keep-alive while nothing new comes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from gateway.openai.responses.background import Background
from gateway.openai.responses.store import ResponseStore, StoredResponse


class CountingStore(ResponseStore):
    """The real SQLite store, counting how often the run's events are read."""

    reads = 0

    async def events(self, response_id: str, after: int) -> list[dict[str, Any]]:
        self.reads += 1
        return await super().events(response_id, after)


def _record() -> StoredResponse:
    now = time.time()
    body = {"id": "resp_w", "object": "response", "status": "in_progress", "output": []}
    return StoredResponse(
        id="resp_w",
        key_id="key-alice",
        key_name="alice",
        created_at=now,
        expires_at=now + 3600,
        status="in_progress",
        background=True,
        body=body,
        owner="gw-elsewhere",
        lease_until=now + 60,
    )


async def _follow(background: Background, record: StoredResponse, seen: list[Any]) -> None:
    async for item in background.tail(record, -1, keepalive=0.3):
        seen.append(item)


async def test_many_tails_of_a_run_elsewhere_read_the_store_once(tmp_path: Path) -> None:
    store = CountingStore(f"sqlite:///{tmp_path}/r.db", "watch_test")
    await store.open()
    try:
        record = _record()
        await store.put(record, [])
        background = Background(store, lease=3.0, replan=lambda r, k: (None, None))  # type: ignore[arg-type,return-value]
        seen: list[list[Any]] = [[] for _ in range(20)]
        tails = [asyncio.create_task(_follow(background, record, s)) for s in seen]
        await asyncio.sleep(1.0)
        reads_with_20 = store.reads
        # The run goes on elsewhere: an event, then the end.
        event = {"type": "response.completed", "sequence_number": 0, "response": {}}
        record.status, record.seq = "completed", 1
        await store.update(record, [event], final=True)
        await asyncio.wait_for(asyncio.gather(*tails), timeout=5)
    finally:
        await store.close()
    # One reader every SAVE_INTERVAL (0.25 s) for the process, not one per tail (20 x 4 a s).
    assert reads_with_20 <= 8, reads_with_20
    for items in seen:
        assert None in items  # keep-alives while nothing came
        assert [i["type"] for i in items if i is not None] == ["response.completed"]
    assert background.watches == {}  # the reader stops with its last tail
