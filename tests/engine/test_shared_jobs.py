"""Shared jobs without sockets: identical requests in flight join one submission's jobs.

The jobs API is the emulator app in process (httpx.ASGITransport).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.config import KeySettings, LimitSettings, ModelSettings, Settings, UpstreamSettings
from gateway.emulator import reply_for
from gateway.emulator.app import create_emulator_app
from gateway.emulator.engine import EmulatorConfig, Engine
from gateway.emulator.faults import parse_faults
from gateway.engine.catalog import ModelCatalog
from gateway.engine.choices import ChoiceState
from gateway.engine.conversation import Conversation, Message
from gateway.engine.events import TextDelta
from gateway.engine.planning import Plan, plan_conversation
from gateway.engine.service import Completions, Submitted
from gateway.errors import UpstreamError
from gateway.upstream.client import JobsClient
from gateway.upstream.poller import PollerHub

TOKEN = "upstream-token"
KEY = KeySettings(name="k", key="sk-test-0123456789", upstream_token=TOKEN)


@dataclass
class World:
    engine: Engine
    completions: Completions
    catalog: ModelCatalog


@pytest.fixture
async def world() -> AsyncIterator[World]:
    upstream = UpstreamSettings(base_url="http://emulator", poll_interval=0.01)
    settings = Settings(
        upstream=upstream, models=(ModelSettings(name="m", tag="m:1"),), keys=(KEY,)
    )
    engine = Engine(
        EmulatorConfig(tokens=frozenset({TOKEN}), queue_seconds=0.05, words_per_second=200.0)
    )
    transport = httpx.ASGITransport(app=create_emulator_app(engine.config, engine))
    client = JobsClient(upstream, "http://emulator", transport=transport)
    hub = PollerHub(client, upstream, "http://emulator")
    yield World(engine, Completions(settings, client, hub), ModelCatalog(settings.models))
    await hub.aclose()
    await client.aclose()


def plan_of(world: World, text: str, stream: bool = False) -> Plan:
    conversation = Conversation(model="m", messages=[Message("user", text)], stream=stream)
    return plan_conversation(conversation, world.catalog, LimitSettings())


async def follow(world: World, plan: Plan, jobs: Submitted, deadline: float) -> str:
    choices = [ChoiceState(i, job, plan, True) for i, job in enumerate(jobs.ids)]
    text = ""
    try:
        async for event in world.completions.events(plan, jobs, deadline, choices):
            if isinstance(event, TextDelta):
                text += event.text
    finally:
        jobs.release()
    return text


async def test_identical_requests_join_the_first_ones_jobs_and_each_gets_the_whole_answer(
    world: World,
) -> None:
    deadline = asyncio.get_running_loop().time() + 20

    async def one(stream: bool) -> tuple[Submitted, str]:
        plan = plan_of(world, "Shared [[emulate:words 12]]", stream)
        jobs = await world.completions.submit(KEY, "team", plan, deadline, share="same")
        return jobs, await follow(world, plan, jobs, deadline)

    results = await asyncio.gather(*(one(i % 2 == 0) for i in range(6)))
    assert world.engine.stats.jobs_created == 1
    assert sum(not jobs.shared for jobs, _ in results) == 1
    prompt = plan_of(world, "Shared [[emulate:words 12]]").prompts[0]
    assert {text for _, text in results} == {reply_for(prompt)}
    # Once every request is done, an identical one submits again.
    plan = plan_of(world, "Shared [[emulate:words 12]]")
    later = await world.completions.submit(KEY, "team", plan, deadline, share="same")
    assert not later.shared
    later.release()


async def test_when_the_first_submission_fails_a_waiting_request_submits_its_own(
    world: World,
) -> None:
    world.engine.faults.add(
        "submit", parse_faults({"submit": {"http": 503, "delay": 0.05}})["submit"]
    )
    deadline = asyncio.get_running_loop().time() + 20
    plan = plan_of(world, "Retried by the next one [[emulate:words 3]]")
    first = asyncio.ensure_future(world.completions.submit(KEY, "team", plan, deadline, share="x"))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(world.completions.submit(KEY, "team", plan, deadline, share="x"))
    with pytest.raises(UpstreamError):
        await first
    jobs = await second
    assert not jobs.shared and world.engine.stats.jobs_created == 1
    assert await follow(world, plan, jobs, deadline) == reply_for(plan.prompts[0])


async def test_a_joined_job_is_followed_after_the_first_request_left(world: World) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    plan = plan_of(world, "Left early [[emulate:words 30]]")
    leader = await world.completions.submit(KEY, "team", plan, deadline, share="y")
    joiner = await world.completions.submit(KEY, "team", plan, deadline, share="y")
    assert joiner.shared and joiner.ids == leader.ids
    leader.release()  # the first client went away before any text
    assert await follow(world, plan, joiner, deadline) == reply_for(plan.prompts[0])
    assert world.engine.stats.jobs_created == 1
