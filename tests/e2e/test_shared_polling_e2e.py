"""End to end: three gateway replicas sharing Redis poll each upstream account once per tick,
every stream's text is exact, and when the polling replica is killed the others take over."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

REDIS_URL = os.environ.get("REDIS_URL")
pytestmark = pytest.mark.skipif(
    not REDIS_URL, reason="set REDIS_URL (e.g. redis://127.0.0.1:6379/0) to test shared polling"
)
INTERVAL = 0.1


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("shared-emulator")
    extra = ("--queue-seconds", "0.3", "--words-per-second", "20")
    with running(start_emulator(tmp, *extra)) as server:
        yield server


def replicas(tmp: Path, emulator: Server, count: int) -> list[Server]:
    prefix = f"test-shared-{uuid.uuid4().hex[:8]}:"
    config = gateway_config(
        emulator.url,
        upstream={"base_url": emulator.url, "poll_interval": INTERVAL},
        redis={"url": REDIS_URL, "prefix": prefix},
    )
    return [start_gateway(tmp, config) for _ in range(count)]


async def stream(gateway: Server, prompt: str) -> str:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    try:
        text = ""
        chunks = await client.chat.completions.create(
            model="gemma-2b", messages=[{"role": "user", "content": prompt}], stream=True
        )
        async for chunk in chunks:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return text
    finally:
        await client.close()


async def stats(emulator: Server) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        answer: dict[str, int] = (await http.get(emulator.url + "/emulator/stats")).json()
    return answer


async def test_three_replicas_make_one_status_request_per_tick_and_exact_streams(
    emulator: Server, tmp_path: Path
) -> None:
    servers = replicas(tmp_path, emulator, 3)
    try:
        for server in servers:  # each replica's account poller exists and the lease is taken
            await stream(server, "warm up [[emulate:words 1]]")
        async with httpx.AsyncClient() as http:
            await http.post(emulator.url + "/emulator/stats/reset")
        prompts = [f"Stream {i} [[emulate:words 40]]" for i in range(30)]
        started = time.monotonic()
        texts = await asyncio.gather(*(stream(servers[i % 3], p) for i, p in enumerate(prompts)))
        elapsed = time.monotonic() - started
        counts = await stats(emulator)
    finally:
        for server in servers:
            server.stop()
    for text in texts:
        assert len(text.split()) == 40, text
    ticks = elapsed / INTERVAL
    # Alone, each replica would poll once per tick: about 3 x ticks requests.
    assert counts["status_requests"] <= ticks * 1.4 + 5, (counts, ticks)


async def test_killing_the_polling_replica_leaves_every_other_stream_whole(
    emulator: Server, tmp_path: Path
) -> None:
    servers = replicas(tmp_path, emulator, 3)
    try:
        await stream(servers[0], "warm up [[emulate:words 1]]")  # the first takes the lease
        await asyncio.sleep(INTERVAL * 3)
        for server in servers[1:]:
            await stream(server, "warm up [[emulate:words 1]]")
        prompts = [f"Survivor {i} [[emulate:words 60]]" for i in range(10)]
        survivors = [
            asyncio.ensure_future(stream(servers[1 + i % 2], p)) for i, p in enumerate(prompts)
        ]
        await asyncio.sleep(1.0)
        os.kill(servers[0].process.pid, signal.SIGKILL)  # the poller dies without a word
        texts = await asyncio.wait_for(asyncio.gather(*survivors), 60)
    finally:
        for server in servers:
            server.stop()
    for text in texts:
        assert len(text.split()) == 60, text
