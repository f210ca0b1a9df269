"""A tick of several status requests hands out each answer as soon as it arrives."""

from __future__ import annotations

import asyncio
import re

import httpx
import respx

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient
from gateway.upstream.models import JobPhase
from gateway.upstream.poller import PollerHub

BASE = "https://upstream.test/v2"


def _job(log: str) -> dict[str, object]:
    return {"vmStatus": "running", "states": {"default": {"status": "running", "log": log}}}


@respx.mock
async def test_a_chunk_is_dispatched_while_another_is_still_out() -> None:
    first = [f"{i:032x}" for i in range(3)]
    second = [f"{i:032x}" for i in range(3, 6)]
    release = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        ids = request.url.path.rsplit("/", 1)[1].split(",")
        if ids[0] in second:
            await release.wait()  # the second chunk's answer is slow
        jobs = {i: _job(f"text of {i}") for i in ids}
        return httpx.Response(200, json={"success": True, "jobs": jobs})

    respx.get(re.compile(rf"{BASE}/jobs/.*")).mock(side_effect=answer)
    settings = UpstreamSettings(base_url=BASE, poll_interval=0.01, status_max_ids=3)
    client = JobsClient(settings, BASE)
    hub = PollerHub(client, settings, BASE)
    poller = hub.poller("token", "alice")
    try:
        with poller.watch(first) as early, poller.watch(second) as late:
            changed = await early.changes(5.0)
            assert sorted(s.id for s in changed) == first
            assert all(s.phase is JobPhase.PENDING and s.log for s in changed)
            assert await late.changes(0.05) == []  # its answer is still held back
            release.set()
            assert sorted(s.id for s in await late.changes(5.0)) == second
    finally:
        await hub.aclose()
        await client.aclose()
