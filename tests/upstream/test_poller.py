"""The coalescing poller against respx: one status request per tick for all jobs of an account."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import httpx
import pytest
import respx

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient
from gateway.upstream.models import JobPhase, JobSnapshot
from gateway.upstream.poller import PollerHub

BASE = "https://upstream.test/v2"


def _job(status: str, log: str) -> dict[str, object]:
    return {"vmStatus": status, "states": {"default": {"status": status, "log": log}}}


class FakeJobs:
    """Answers status requests from a table the test edits; records every request's ids."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, object]] = {}
        self.requests: list[list[str]] = []
        self.fail_next = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        ids = request.url.path.rsplit("/", 1)[1].split(",")
        self.requests.append(ids)
        if self.fail_next:
            self.fail_next -= 1
            return httpx.Response(503)
        return httpx.Response(
            200, json={"success": True, "jobs": {i: self.jobs[i] for i in ids if i in self.jobs}}
        )


def _hub(**overrides: object) -> tuple[PollerHub, JobsClient]:
    fields: dict[str, object] = {"base_url": BASE, "poll_interval": 0.01, **overrides}
    settings = UpstreamSettings(**fields)  # type: ignore[arg-type]
    client = JobsClient(settings, BASE)
    return PollerHub(client, settings, BASE), client


async def _until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll a condition the poller's own task will make true (no event to wait on here)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.fixture
def fake() -> FakeJobs:
    jobs = FakeJobs()
    respx.get(re.compile(rf"{BASE}/jobs/.*")).mock(side_effect=jobs)
    return jobs


@respx.mock
async def test_many_watches_share_one_status_request_per_tick(fake: FakeJobs) -> None:
    hub, client = _hub()
    poller = hub.poller("token", "alice")
    ids = [f"{i:032x}" for i in range(50)]
    for i in ids:
        fake.jobs[i] = _job("running", "")
    watches = [poller.watch([i]) for i in ids]
    opened = [w.__enter__() for w in watches]
    await _until(lambda: len(fake.requests) >= 3)
    assert all(sorted(r) == sorted(ids) for r in fake.requests[:3])
    for w in opened:  # each watch saw its running job once
        assert [s.phase for s in await w.changes(0)] == [JobPhase.PENDING]
    for i in ids:
        fake.jobs[i] = _job("completed", f"answer {i}")
    results = await asyncio.gather(*(w.changes(5) for w in opened))
    for job_id, changed in zip(ids, results, strict=True):
        assert [s.id for s in changed] == [job_id]
        assert changed[0].phase is JobPhase.FINISHED and changed[0].log == f"answer {job_id}"
    await _until(lambda: poller.jobs_in_flight == 0)  # finished jobs leave the poller
    for w in watches:
        w.__exit__(None, None, None)
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_long_lists_are_split_into_chunks_that_keep_the_url_short(fake: FakeJobs) -> None:
    # A tick long enough that a loaded machine cannot fit a lane's second poll into it.
    hub, client = _hub(status_url_max_length=400, poll_interval=0.5)
    poller = hub.poller("token", "alice")
    ids = [f"{i:032x}" for i in range(30)]
    with poller.watch(ids):
        await _until(lambda: len(fake.requests) >= 3)
        sizes = [len(lane) for lane in poller.lanes]
    budget = 400 - len(BASE) - len("/jobs/")
    for ids_in_request in fake.requests:
        assert len(",".join(ids_in_request)) <= budget
    # 11 ids of 32 characters fit the budget: three lanes, each polled once per tick.
    assert sizes == [11, 11, 8]
    assert sorted(i for request in fake.requests[:3] for i in request) == sorted(ids)
    assert poller.jobs_in_flight == 0
    await _until(lambda: len(poller.lanes) == 0)  # each emptied lane closes when next due
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_a_job_nobody_watches_leaves_the_poller(fake: FakeJobs) -> None:
    hub, client = _hub()
    poller = hub.poller("token", "alice")
    a, b = "a" * 32, "b" * 32
    fake.jobs[a] = fake.jobs[b] = _job("running", "x")
    with poller.watch([a]):
        with poller.watch([b]):
            await _until(lambda: len(fake.requests) >= 1)
            assert poller.jobs_in_flight == 2
        assert poller.jobs_in_flight == 1
        count = len(fake.requests)
        await _until(lambda: len(fake.requests) >= count + 2)
        assert fake.requests[-1] == [a]
    assert poller.jobs_in_flight == 0
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_two_watches_on_one_job_both_get_it(fake: FakeJobs) -> None:
    hub, client = _hub()
    poller = hub.poller("token", "alice")
    a = "a" * 32
    fake.jobs[a] = _job("completed", "done")
    with poller.watch([a]) as w1, poller.watch([a]) as w2:
        one, two = await asyncio.gather(w1.changes(5), w2.changes(5))
    assert one[0].log == two[0].log == "done"
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_failed_polls_back_off_without_failing_the_job(fake: FakeJobs) -> None:
    hub, client = _hub(poll_backoff_max=0.05)
    poller = hub.poller("token", "alice")
    a = "a" * 32
    fake.jobs[a] = _job("completed", "finally")
    fake.fail_next = 3
    with poller.watch([a]) as watch:
        changed = await watch.changes(5)
        assert changed[0].log == "finally"
    assert len(fake.requests) >= 4
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_poll_errors_are_visible_to_the_waiting_request(fake: FakeJobs) -> None:
    hub, client = _hub(poll_backoff_max=0.02)
    poller = hub.poller("token", "alice")
    fake.fail_next = 10**6
    with poller.watch(["a" * 32]) as watch:
        await _until(lambda: watch.poll_error is not None)
        assert watch.poll_error is not None and watch.poll_error.status_code == 503
        assert await watch.changes(0.05) == []
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_a_job_missing_from_answers_fails_after_the_configured_ticks(fake: FakeJobs) -> None:
    hub, client = _hub(missing_job_ticks=3)
    poller = hub.poller("token", "alice")
    with poller.watch(["d" * 32]) as watch:
        changed = await watch.changes(5)
    assert changed[0].phase is JobPhase.FAILED
    assert "stopped reporting" in (changed[0].error or "")
    assert len(fake.requests) == 3
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_accounts_poll_separately_with_their_own_token(fake: FakeJobs) -> None:
    hub, client = _hub()
    seen: list[str] = []
    original = fake.__call__

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return original(request)

    respx.get(re.compile(rf"{BASE}/jobs/.*")).mock(side_effect=record)
    with (
        hub.poller("tok-a", "alice").watch(["a" * 32]),
        hub.poller("tok-b", "bob").watch(["b" * 32]),
    ):
        # Until each account has polled (on a busy machine one may poll twice first).
        await _until(lambda: {"Bearer tok-a", "Bearer tok-b"} <= set(seen))
    assert set(seen) == {"Bearer tok-a", "Bearer tok-b"}
    await hub.aclose()
    await client.aclose()


@respx.mock
async def test_closing_the_hub_leaves_no_task(fake: FakeJobs) -> None:
    hub, client = _hub()
    poller = hub.poller("token", "alice")
    watch_cm = poller.watch(["a" * 32])
    watch_cm.__enter__()
    await asyncio.sleep(0.03)
    await hub.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("poller:")]
    await client.aclose()


@respx.mock
async def test_a_job_with_nothing_new_is_answered_with_its_last_snapshot(fake: FakeJobs) -> None:
    """Same status and log length: the client hands back the last snapshot, unparsed."""
    _, client = _hub()
    a = "a" * 32
    fake.jobs[a] = _job("running", "one")
    first = (await client.status("token", [a]))[a]
    assert (await client.status("token", [a], previous={a: first}))[a] is first
    fake.jobs[a] = _job("running", "one two")  # the log grew
    grown = (await client.status("token", [a], previous={a: first}))[a]
    assert grown is not first and grown.log == "one two"
    fake.jobs[a] = _job("completed", "one two")  # same log, new status
    done = (await client.status("token", [a], previous={a: grown}))[a]
    assert done is not grown and done.phase is JobPhase.FINISHED
    await client.aclose()


@respx.mock
async def test_a_watch_joining_a_job_with_nothing_new_still_gets_it(fake: FakeJobs) -> None:
    """The poller skips unchanged jobs, but a newcomer is handed the job at the next poll."""
    hub, client = _hub()
    poller = hub.poller("token", "alice")
    a = "a" * 32
    fake.jobs[a] = _job("running", "so far")
    with poller.watch([a]) as first:
        assert [s.log for s in await first.changes(5)] == ["so far"]
        count = len(fake.requests)
        await _until(lambda: len(fake.requests) >= count + 3)
        assert await first.changes(0) == []  # polled again, nothing new: nothing handed
        with poller.watch([a]) as second:
            assert [s.log for s in await second.changes(5)] == ["so far"]
    await hub.aclose()
    await client.aclose()


async def test_a_wait_ends_after_its_own_limit_whatever_waits_came_before() -> None:
    """One timer serves a watch's waits: a wait with a far limit after one with a near limit
    is not ended early by the near one's timer, and a nearer limit after a far one is kept."""
    hub, client = _hub(poll_interval=60.0)  # nothing is polled while the test waits
    poller = hub.poller("token", "alice")
    loop = asyncio.get_running_loop()
    with poller.watch(["a" * 32]) as watch:
        started = loop.time()
        assert await watch.changes(0.05) == []
        assert loop.time() - started >= 0.045
        watch.latest.clear()
        # The first wait's timer is due at once; this wait must last its own 0.3 s.
        started = loop.time()
        assert await watch.changes(0.3) == []
        assert loop.time() - started >= 0.29
        # Far first (its timer stays armed after the news), then near: the near limit holds.
        waiting = asyncio.ensure_future(watch.changes(5.0))
        await asyncio.sleep(0.01)
        watch.wake()
        assert await waiting == []  # woken with nothing changed
        started = loop.time()
        assert await asyncio.wait_for(watch.changes(0.05), 2.0) == []
        assert loop.time() - started < 1.0
    await hub.aclose()
    await client.aclose()


async def test_news_ends_a_wait_at_once_and_closing_leaves_no_timer() -> None:
    hub, client = _hub(poll_interval=60.0)
    poller = hub.poller("token", "alice")
    with poller.watch(["a" * 32]) as watch:
        waiting = asyncio.ensure_future(watch.changes(30.0))
        await asyncio.sleep(0.01)
        snapshot = JobSnapshot("a" * 32, JobPhase.PENDING, "running", "Hello")
        watch.deliver(snapshot)
        assert await asyncio.wait_for(waiting, 1.0) == [snapshot]
        assert watch._timer is not None  # kept for the next wait
    assert watch._timer is None
    await hub.aclose()
    await client.aclose()
