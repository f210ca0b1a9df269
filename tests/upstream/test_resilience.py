"""Retries, the circuit breaker and the in-flight count under faults, against respx."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence

import httpx
import pytest
import respx

from gateway.config import UpstreamSettings
from gateway.upstream.breaker import CircuitBreaker
from gateway.upstream.client import JobsClient, may_resubmit
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.poller import PollerHub

BASE = "https://upstream.test/v2"
JOB = "a" * 32


def _settings(**overrides: object) -> UpstreamSettings:
    return UpstreamSettings(base_url=BASE, poll_interval=0.01, **overrides)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.failure()
    assert not breaker.allow()
    clock.now = 11.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one probe at a time
    breaker.abandon()  # the probe was cancelled: no verdict
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open


@pytest.mark.parametrize(
    ("failure", "retry"),
    [
        (UpstreamFailure("connect_error", "refused", reached=False), True),
        (UpstreamFailure("http_error", "429", status_code=429), True),
        (UpstreamFailure("http_error", "503", status_code=503), False),
        (UpstreamFailure("timeout", "read timeout"), False),
        (UpstreamFailure("connect_error", "reset after sending"), False),
        (UpstreamFailure("bad_response", "not JSON"), False),
        (UpstreamFailure("circuit_open", "open", reached=False, retry_after=3), False),
    ],
)
def test_only_what_cannot_have_created_a_job_is_resubmitted(
    failure: UpstreamFailure, retry: bool
) -> None:
    assert may_resubmit(failure) is retry


@respx.mock
async def test_an_open_circuit_fails_a_submission_at_once() -> None:
    client = JobsClient(
        _settings(submit_retries=3, circuit_breaker={"failure_threshold": 1, "reset_seconds": 60}),
        BASE,
    )
    route = respx.post(f"{BASE}/jobs").respond(503)
    with pytest.raises(UpstreamFailure):
        await client.submit("t", "gemma:2b", ["x"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamFailure) as info:
        await client.submit("t", "gemma:2b", ["x"])
    assert info.value.kind == "circuit_open"
    assert loop.time() - started < 1.0  # not the 5 s a retry would have waited
    assert route.call_count == 1
    await client.aclose()


@respx.mock
async def test_submit_retries_stop_at_the_deadline() -> None:
    client = JobsClient(_settings(submit_retries=5), BASE)
    route = respx.post(f"{BASE}/jobs").respond(429, headers={"retry-after": "3"})
    loop = asyncio.get_running_loop()
    with pytest.raises(UpstreamFailure) as info:
        await client.submit("t", "gemma:2b", ["x"], deadline=loop.time() + 1.0)
    assert info.value.status_code == 429
    assert route.call_count == 1  # a 3 s wait would pass the deadline: give up now
    await client.aclose()


@respx.mock
async def test_a_long_retry_after_is_passed_on_rather_than_waited_out() -> None:
    client = JobsClient(_settings(submit_retries=5), BASE)
    route = respx.post(f"{BASE}/jobs").respond(429, headers={"retry-after": "60"})
    with pytest.raises(UpstreamFailure) as info:
        await client.submit("t", "gemma:2b", ["x"])
    assert info.value.to_gateway_error().headers["retry-after"] == "60"
    assert route.call_count == 1
    await client.aclose()


@respx.mock
async def test_the_circuit_metric_names_the_account_never_the_token() -> None:
    changes: list[tuple[str, bool]] = []
    client = JobsClient(
        _settings(circuit_breaker={"failure_threshold": 1, "reset_seconds": 60}),
        BASE,
        on_circuit_change=lambda account, is_open: changes.append((account, is_open)),
    )
    respx.get(re.compile(rf"{BASE}/jobs/.*")).respond(503)
    with pytest.raises(UpstreamFailure):
        await client.status("secret-token", [JOB], account="team-a")
    assert changes == [("team-a", True)]
    await client.aclose()


@respx.mock
async def test_a_cancelled_probe_does_not_keep_the_circuit_open() -> None:
    client = JobsClient(
        _settings(circuit_breaker={"failure_threshold": 1, "reset_seconds": 0.01}), BASE
    )
    route = respx.get(re.compile(rf"{BASE}/jobs/.*"))
    route.respond(503)
    with pytest.raises(UpstreamFailure):
        await client.status("t", [JOB])
    await asyncio.sleep(0.02)
    stalled = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        stalled.set()
        await asyncio.sleep(30)
        return httpx.Response(200)

    route.side_effect = slow
    probe = asyncio.create_task(client.status("t", [JOB]))
    await stalled.wait()
    probe.cancel()  # e.g. the client left while the probe was out
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    route.side_effect = None
    route.respond(json={"success": True, "jobs": {}})
    assert await client.status("t", [JOB]) == {}  # a new probe went out and closed it
    assert not client.breaker("t").is_open
    await client.aclose()


@respx.mock
async def test_the_in_flight_count_reaches_zero_when_the_last_watch_closes() -> None:
    settings = _settings()
    client = JobsClient(settings, BASE)
    counts: list[int] = []

    def on_tick(account: str, jobs: int, chunks: Sequence[int]) -> None:
        counts.append(jobs)

    hub = PollerHub(client, settings, BASE, on_tick=on_tick)
    respx.get(re.compile(rf"{BASE}/jobs/.*")).respond(json={"success": True, "jobs": {}})
    poller = hub.poller("t", "alice")
    with poller.watch([JOB]) as watch:
        await watch.changes(0.05)  # a few ticks with the job in flight
    assert counts and counts[0] == 1
    assert counts[-1] == 0  # reported at once, not at a next tick that never comes
    assert hub.jobs_in_flight == 0
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_a_job_stays_polled_while_another_request_still_waits_on_it() -> None:
    settings = _settings()
    client = JobsClient(settings, BASE)
    hub = PollerHub(client, settings, BASE)
    polled: list[list[str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        ids = request.url.path.rsplit("/", 1)[1].split(",")
        polled.append(ids)
        job = {"vmStatus": "running", "states": {"default": {"status": "running", "log": "x"}}}
        return httpx.Response(200, json={"success": True, "jobs": dict.fromkeys(ids, job)})

    respx.get(re.compile(rf"{BASE}/jobs/.*")).mock(side_effect=answer)
    poller = hub.poller("t", "alice")

    async def polls(count: int) -> None:
        target = len(polled) + count
        async with asyncio.timeout(5):
            while len(polled) < target:  # noqa: ASYNC110 (the poller's own task advances it)
                await asyncio.sleep(0.005)

    with poller.watch([JOB]) as staying:
        with poller.watch([JOB]):
            await polls(1)
        # One of the two requests left (its client went away): the other still gets news.
        await polls(2)
        assert polled[-1] == [JOB] and poller.jobs_in_flight == 1
        assert await staying.changes(1.0)
    # The last one left: the job is out at once and no status request names it again.
    assert poller.jobs_in_flight == 0
    count = len(polled)
    await asyncio.sleep(0.05)  # five poll intervals
    assert len(polled) == count
    await hub.aclose()
    await client.aclose()
