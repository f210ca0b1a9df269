"""Batched submissions (group commit) against the emulator app in process: ids in order,
refusals, departures, no wait when idle, gathering behind a submission in flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import respx

from gateway.config import UpstreamSettings
from gateway.emulator.app import create_emulator_app
from gateway.emulator.engine import EmulatorConfig, Engine
from gateway.emulator.faults import parse_faults
from gateway.upstream.batcher import SubmitBatcher, refused_whole
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure

TOKEN = "upstream-token"
OTHER = "other-token"
REJECT = "[[emulate:reject]]"


@dataclass
class World:
    engine: Engine
    client: JobsClient
    sizes: list[int]

    def batcher(
        self, window: float = 0.05, max_inputs: int = 64, min_age: float = 0.0
    ) -> SubmitBatcher:
        return SubmitBatcher(
            self.client, window, max_inputs, min_age=min_age, on_submission=self.sizes.append
        )

    def slow_submissions(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` submissions take ``seconds`` to be answered."""
        delays = parse_faults({"submit": [{"delay": seconds}] * count})["submit"]
        self.engine.faults.add("submit", delays)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    engine = Engine(EmulatorConfig(tokens=frozenset({TOKEN, OTHER}), queue_seconds=0.0))
    transport = httpx.ASGITransport(app=create_emulator_app(engine.config, engine))
    settings = UpstreamSettings(base_url="http://emulator")
    client = JobsClient(settings, "http://emulator", transport=transport)
    yield World(engine, client, [])
    await client.aclose()


def prompt_of(world: World, job_id: str) -> str:
    timeline = world.engine.timeline(job_id)
    assert timeline is not None
    return str(timeline["prompt"])


async def test_submissions_arriving_together_share_one_post_and_get_their_own_ids(
    world: World,
) -> None:
    batcher = world.batcher()
    prompts = [[f"question {i}"] for i in range(9)] + [["two a", "two b"]]
    results = await asyncio.gather(*(batcher.submit(TOKEN, "m:1", p) for p in prompts))
    assert world.engine.stats.submit_requests == 1
    assert world.sizes == [11]
    for sent, ids in zip(prompts, results, strict=True):
        assert len(ids) == len(sent)
        assert [prompt_of(world, i) for i in ids] == sent


async def test_batches_are_per_token_and_tag_and_capped_in_inputs(world: World) -> None:
    batcher = world.batcher(max_inputs=4)
    calls = [(TOKEN, "m:1", f"a{i}") for i in range(6)]
    calls += [(TOKEN, "m:2", "b"), (OTHER, "m:1", "c")]
    results = await asyncio.gather(*(batcher.submit(t, tag, [p]) for t, tag, p in calls))
    assert sorted(world.sizes) == [1, 1, 2, 4]
    for (_, tag, sent), ids in zip(calls, results, strict=True):
        assert prompt_of(world, ids[0]) == sent
        assert world.engine.status(TOKEN if sent != "c" else OTHER, ids)[ids[0]]["tag"] == tag


async def test_a_refused_batch_is_retried_one_by_one_so_one_bad_input_fails_alone(
    world: World,
) -> None:
    batcher = world.batcher()
    prompts = ["fine 1", f"bad {REJECT}", "fine 2"]
    results = await asyncio.gather(
        *(batcher.submit(TOKEN, "m:1", [p]) for p in prompts), return_exceptions=True
    )
    assert world.engine.stats.submit_requests == 1 + 3  # the batch, then each member once
    assert isinstance(results[1], UpstreamFailure) and results[1].kind == "rejected"
    for index in (0, 2):
        ids = results[index]
        assert isinstance(ids, list)
        assert prompt_of(world, ids[0]) == prompts[index]
    assert world.sizes == [1, 1]


async def test_a_refusal_of_the_retry_is_not_retried_again(world: World) -> None:
    refusals = parse_faults({"submit": [{"success_false": "busy"}] * 3})["submit"]
    world.engine.faults.add("submit", refusals)
    batcher = world.batcher()
    results = await asyncio.gather(
        *(batcher.submit(TOKEN, "m:1", [f"p{i}"]) for i in range(2)), return_exceptions=True
    )
    # The batch and both retries were refused; nothing is sent a third time.
    assert world.engine.stats.submit_requests == 3
    assert all(isinstance(r, UpstreamFailure) and r.kind == "rejected" for r in results)


async def test_a_failure_that_may_have_created_jobs_fails_every_member_unrepeated(
    world: World,
) -> None:
    world.engine.faults.add("submit", parse_faults({"submit": {"http": 503}})["submit"])
    batcher = world.batcher()
    results = await asyncio.gather(
        *(batcher.submit(TOKEN, "m:1", [f"p{i}"]) for i in range(3)), return_exceptions=True
    )
    assert world.engine.stats.submit_requests == 1
    assert all(isinstance(r, UpstreamFailure) and r.status_code == 503 for r in results)


async def test_a_member_that_leaves_before_the_batch_goes_is_not_sent(world: World) -> None:
    world.slow_submissions(0.2)
    batcher = world.batcher(window=1.0)
    first = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["first"]))
    await asyncio.sleep(0.05)  # the first is in flight: the next two gather behind it
    leaving = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["gone"]))
    staying = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["kept"]))
    await asyncio.sleep(0.01)
    leaving.cancel()
    ids = await staying
    await first
    assert world.sizes == [1, 1]
    assert prompt_of(world, ids[0]) == "kept"
    assert world.engine.stats.jobs_created == 2


async def test_a_lone_submission_on_an_idle_batcher_goes_at_once(world: World) -> None:
    batcher = world.batcher(window=5.0, min_age=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.submit(TOKEN, "m:1", ["alone"])
    # No window is waited: only the in-process round trip (a 5 s window would show).
    assert loop.time() - started < 2.0
    assert world.sizes == [1]


async def test_arrivals_during_a_submission_in_flight_gather_into_the_next_one(
    world: World,
) -> None:
    world.slow_submissions(0.3)
    batcher = world.batcher(window=5.0)
    first = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["first"]))
    await asyncio.sleep(0.05)
    later = []
    for i in range(5):  # spread out, as requests arrive through the gateway's own work
        later.append(asyncio.ensure_future(batcher.submit(TOKEN, "m:1", [f"later {i}"])))
        await asyncio.sleep(0.02)
    results = await asyncio.gather(first, *later)
    # Two POSTs: the first alone, then everyone who arrived while it was in flight.
    assert world.sizes == [1, 5]
    assert [prompt_of(world, ids[0]) for ids in results[1:]] == [f"later {i}" for i in range(5)]


async def test_a_gathered_batch_waits_at_most_one_window_behind_a_slow_submission(
    world: World,
) -> None:
    world.slow_submissions(2.0)
    batcher = world.batcher(window=0.05)
    first = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["slow"]))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.submit(TOKEN, "m:1", ["next"])
    assert loop.time() - started < 1.5  # the window (50 ms), not the 2 s submission ahead
    assert not first.done()
    await first
    assert world.sizes == [1, 1]


async def test_after_the_submission_in_flight_lands_the_batch_gathers_its_minimum_age(
    world: World,
) -> None:
    world.slow_submissions(0.1)
    batcher = world.batcher(window=5.0, min_age=0.3)
    first = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["first"]))
    await asyncio.sleep(0.02)
    second = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["second"]))
    await first  # landed at ~0.1 s; the batch behind it is ~0.08 s old: it keeps gathering
    await asyncio.sleep(0.1)
    third = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["third"]))
    await asyncio.gather(second, third)
    assert world.sizes == [1, 2]


async def test_aclose_sends_what_is_gathered_behind_a_submission_in_flight(world: World) -> None:
    world.slow_submissions(0.2)
    batcher = world.batcher(window=5.0)
    first = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["first"]))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(batcher.submit(TOKEN, "m:1", ["second"]))
    await asyncio.sleep(0)
    await batcher.aclose()
    assert first.done() and second.done()
    assert world.sizes == [1, 1]


async def test_a_zero_window_sends_each_submission_alone(world: World) -> None:
    batcher = world.batcher(window=0)
    await asyncio.gather(*(batcher.submit(TOKEN, "m:1", [f"p{i}"]) for i in range(3)))
    assert world.engine.stats.submit_requests == 3


@respx.mock
async def test_a_connection_refused_batch_is_resent_whole_by_the_client() -> None:
    """Today's retry rule holds for a batch: resent only when it cannot have arrived."""
    base = "https://upstream.test"
    route = respx.post(f"{base}/jobs")
    route.side_effect = [
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"success": True, "ids": ["a" * 32, "b" * 32]}),
    ]
    client = JobsClient(UpstreamSettings(base_url=base, submit_retries=1), base)
    batcher = SubmitBatcher(client, 0.02, 64)
    first, second = await asyncio.gather(
        batcher.submit(TOKEN, "m:1", ["x"]), batcher.submit(TOKEN, "m:1", ["y"])
    )
    assert (first, second) == (["a" * 32], ["b" * 32])
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    await client.aclose()


@pytest.mark.parametrize(
    ("failure", "whole"),
    [
        (UpstreamFailure("rejected", "Invalid input format"), True),
        (UpstreamFailure("http_error", "413", status_code=413), True),
        (UpstreamFailure("http_error", "503", status_code=503), False),
        (UpstreamFailure("timeout", "read timeout"), False),
        (UpstreamFailure("bad_response", "not JSON"), False),
    ],
)
def test_only_an_answer_that_refused_the_body_counts_as_refused_whole(
    failure: UpstreamFailure, whole: bool
) -> None:
    assert refused_whole(failure) is whole
