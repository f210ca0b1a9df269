"""Shared polling across processes: several hubs (as several processes would hold) share one
Redis; one polls, the others are handed their jobs' news, and a successor takes over."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.config import UpstreamSettings
from gateway.emulator.app import create_emulator_app
from gateway.emulator.engine import EmulatorConfig, Engine
from gateway.upstream.client import JobsClient
from gateway.upstream.models import JobSnapshot
from gateway.upstream.poller import PollerHub
from gateway.upstream.relay import RelayFactory

REDIS_URL = os.environ.get("REDIS_URL")
pytestmark = pytest.mark.skipif(
    not REDIS_URL, reason="set REDIS_URL (e.g. redis://127.0.0.1:6379/0) to test shared polling"
)
TOKEN = "upstream-token"
TAG = "gemma:2b"
INTERVAL = 0.05


@dataclass
class Process:
    """What one gateway process holds: its client and its hub with a relay on Redis."""

    hub: PollerHub
    client: JobsClient
    relays: RelayFactory

    async def follow(self, job_id: str, limit: float = 20.0) -> JobSnapshot:
        """Watch ``job_id`` until it ends; the last snapshot."""
        poller = self.hub.poller(TOKEN, "alice")
        async with asyncio.timeout(limit):
            with poller.watch([job_id]) as watch:
                while True:
                    for snapshot in await watch.changes(1.0):
                        if snapshot.phase.terminal:
                            return snapshot

    async def aclose(self) -> None:
        await self.hub.aclose()
        await self.client.aclose()


@pytest.fixture
async def world() -> AsyncIterator[tuple[Engine, list[Process]]]:
    engine = Engine(
        EmulatorConfig(tokens=frozenset({TOKEN}), queue_seconds=0.2, words_per_second=40)
    )
    app = create_emulator_app(engine.config, engine)
    settings = UpstreamSettings(base_url="http://emulator", poll_interval=INTERVAL)
    prefix = f"test-relay-{uuid.uuid4().hex[:8]}:"
    processes = []
    for _ in range(3):
        client = JobsClient(settings, "http://emulator", transport=httpx.ASGITransport(app=app))
        assert REDIS_URL is not None
        relays = RelayFactory(REDIS_URL, prefix, client, INTERVAL, timeout=2.0)
        hub = PollerHub(client, settings, "http://emulator", relay_factory=relays)
        processes.append(Process(hub, client, relays))
    yield engine, processes
    for process in processes:
        await process.aclose()


def final_text(engine: Engine, job_id: str) -> str:
    job = engine.status(TOKEN, [job_id])[job_id]
    return str(job["states"]["default"]["log"])


async def test_one_process_polls_and_every_process_gets_its_jobs_whole(
    world: tuple[Engine, list[Process]],
) -> None:
    engine, processes = world
    ids = engine.submit(TOKEN, [f"question {i} [[emulate:words 30]]" for i in range(9)], TAG)
    engine.stats.status_requests = 0
    started = asyncio.get_running_loop().time()
    snapshots = await asyncio.gather(
        *(processes[i % 3].follow(job_id) for i, job_id in enumerate(ids))
    )
    elapsed = asyncio.get_running_loop().time() - started
    for job_id, snapshot in zip(ids, snapshots, strict=True):
        assert snapshot.log == final_text(engine, job_id)
        assert len(snapshot.log.split()) == 30
    # Three processes polling alone would ask three times per tick; one poller asks once
    # (plus the first tick each process polls before Redis has answered, and a gap re-ask).
    ticks = elapsed / INTERVAL
    assert engine.stats.status_requests <= ticks * 1.5 + 6, (engine.stats.status_requests, ticks)
    relays = [p.hub.poller(TOKEN, "alice").relay for p in processes]
    assert sum(1 for r in relays if r is not None and r.leading) == 1
    # Every entry extended what its reader held: none overtook another, none was lost.
    assert sum(getattr(r, "gaps", 0) for r in relays) == 0


async def test_when_the_polling_process_dies_another_takes_over(
    world: tuple[Engine, list[Process]],
) -> None:
    engine, processes = world
    first, second, third = processes
    warm = engine.submit(TOKEN, ["warm [[emulate:words 2]]"], TAG)
    await first.follow(warm[0])  # the first process takes the lease
    await asyncio.sleep(INTERVAL * 3)
    assert first.hub.poller(TOKEN, "alice").relay.leading  # type: ignore[union-attr]
    ids = engine.submit(TOKEN, [f"long {i} [[emulate:words 60]]" for i in range(2)], TAG)
    followers = [
        asyncio.ensure_future(p.follow(j)) for p, j in zip((second, third), ids, strict=True)
    ]
    await asyncio.sleep(0.5)
    await first.aclose()  # its lease is released; a successor polls from the next tick
    snapshots = await asyncio.gather(*followers)
    for job_id, snapshot in zip(ids, snapshots, strict=True):
        assert snapshot.log == final_text(engine, job_id)
    processes.remove(first)


async def test_without_a_reachable_redis_each_process_polls_alone() -> None:
    engine = Engine(EmulatorConfig(tokens=frozenset({TOKEN}), queue_seconds=0.0))
    app = create_emulator_app(engine.config, engine)
    settings = UpstreamSettings(base_url="http://emulator", poll_interval=INTERVAL)
    client = JobsClient(settings, "http://emulator", transport=httpx.ASGITransport(app=app))
    relays = RelayFactory("redis://127.0.0.1:1/0", "x:", client, INTERVAL, timeout=0.2)
    process = Process(
        PollerHub(client, settings, "http://emulator", relay_factory=relays), client, relays
    )
    try:
        ids = engine.submit(TOKEN, ["alone [[emulate:words 5]]"], TAG)
        snapshot = await process.follow(ids[0])
        assert snapshot.log == final_text(engine, ids[0])
    finally:
        await process.aclose()
