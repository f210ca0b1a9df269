"""Background responses: the gateway follows the job itself, with no client connected.

The upstream is a queue of jobs on a volunteer grid, which is what ``background: true`` means.
A :class:`Follower` task per response follows its job through the coalescing poller, storing
the growing object and its stream events; ``GET`` reads them, ``cancel`` stops the task.
Each running follower holds a lease in the store and renews it; a gateway that starts (or
another replica) takes over any background run whose lease ran out, planning it again from
the stored request and following the stored job ids, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import KeySettings
from gateway.engine.events import KeepAlive
from gateway.engine.planning import Plan
from gateway.errors import GatewayError, InternalError, ServiceUnavailable
from gateway.keys.digests import owner
from gateway.openai.responses.run import TERMINAL, ResponseRun, StreamEvent
from gateway.openai.responses.store import ResponseStore, StoredResponse
from gateway.serving.charging import cut_by_shutdown
from gateway.serving.desk import Call, FrontDesk, Run

if TYPE_CHECKING:
    from gateway.runtime import Runtime

logger = logging.getLogger("gateway.responses")

#: Most seconds between two saves of a run's progress (other replicas read it from the store).
SAVE_INTERVAL = 0.25
ROUTE = "/v1/responses"


class Signal:
    """Wakes every waiter at once, each time something new was published."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    @property
    def next(self) -> asyncio.Event:
        """Set at the next :meth:`fire` (take it before reading what is new)."""
        return self._event


async def fired(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` was set within ``seconds``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


@dataclass(slots=True)
class Follower:
    """One background run followed by this process."""

    record: StoredResponse
    run: ResponseRun
    events: list[StreamEvent] = field(default_factory=list)
    changed: Signal = field(default_factory=Signal)
    task: asyncio.Task[None] | None = None
    cancelled: bool = False

    def publish(self, events: list[StreamEvent]) -> None:
        if events:
            self.events.extend(events)
            self.changed.fire()

    @property
    def done(self) -> bool:
        return self.run.status in TERMINAL


@dataclass(slots=True)
class Watch:
    """A run another gateway follows, read from the store once per process for every tail."""

    events: list[StreamEvent] = field(default_factory=list)
    changed: Signal = field(default_factory=Signal)
    done: bool = False
    users: int = 0
    task: asyncio.Task[None] | None = None


#: Plans a stored request again after a restart: (record, key) -> (plan, run).
Replanner = Callable[[StoredResponse, KeySettings], Awaitable[tuple[Plan, ResponseRun]]]


class Background:
    """The background runs this process follows, and the scan that adopts orphaned ones."""

    def __init__(
        self, store: ResponseStore, lease: float, replan: Replanner, submit_seconds: float = 0.0
    ) -> None:
        self.store = store
        self.lease = lease
        #: The longest a submission may take (a ``submitting`` row's lease outlasts it).
        self.submit_seconds = submit_seconds
        self.owner = "gw-" + secrets.token_hex(8)
        self.followers: dict[str, Follower] = {}
        self.watches: dict[str, Watch] = {}
        self._replan = replan
        self._scanner: asyncio.Task[None] | None = None

    @property
    def keepalive(self) -> float:
        """How often a run saves its progress with no news: it renews its lease then."""
        return max(0.5, self.lease / 3)

    def start(self, runtime: Runtime) -> None:
        self._scanner = asyncio.create_task(self._scan(runtime), name="responses-scan")

    async def aclose(self) -> None:
        """Stop following; the leases run out and another gateway takes the runs over."""
        tasks = [t for t in (self._scanner, *(f.task for f in self.followers.values())) if t]
        tasks += [w.task for w in self.watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _scan(self, runtime: Runtime) -> None:
        failing = False  # a database that is down is said once, and its return once
        while True:
            try:
                now = time.time()
                await self.store.purge(now)
                keys = runtime.key_service
                known = not keys.enabled or keys.registry.loaded  # else a run's key may be missing
                if known and not runtime.shutting_down:  # a draining gateway hands runs over
                    for record in await self.store.claim(self.owner, now, self.lease):
                        await self._adopt(FrontDesk(runtime), record)
                if failing:
                    logger.warning("the background scan works again")
                failing = False
            except Exception as exc:
                if not failing:
                    logger.warning(
                        "the background scan failed (%s: %s); retrying quietly until it works",
                        type(exc).__name__,
                        str(exc).strip() or "no detail",
                    )
                failing = True
            await asyncio.sleep(max(0.2, self.lease / 3))

    async def _adopt(self, desk: FrontDesk, record: StoredResponse) -> None:
        """Follow a run whose gateway is gone, charged to the key that created it."""
        key = desk.rt.keys.by_name(record.key_name)
        if key is not None and owner(key) != record.key_id:  # the name, reused by another key
            key = None
        try:
            if key is None:
                raise InternalError("The key that created this response no longer exists.")
            plan, response_run = await self._replan(record, key)
        except Exception as exc:  # it cannot be followed again: it ends, failed
            logger.warning("background response %s cannot be followed again: %s", record.id, exc)
            error = (
                exc
                if isinstance(exc, GatewayError)
                else InternalError("The gateway could not resume following this response.")
            )
            follower = Follower(record, ResponseRun.restore(record.body, record.seq))
            follower.task = asyncio.create_task(self._fail(follower, error))
            self.followers[record.id] = follower
            return
        logger.warning(
            "following background response %s again (jobs %s)", record.id, ",".join(record.job_ids)
        )
        # Under the request id that created it: its ledger row replaces the first gateway's.
        call = self.call(desk, key, record.request_id or "resumed-" + record.id)
        run = desk.resume(call, plan, record.job_ids)
        run.exchange.stream = False
        follower = self.follow(record, response_run, run)
        if record.seq == 0:  # lost before its first save: its stream starts here
            follower.publish(response_run.opening())

    def call(self, desk: FrontDesk, key: KeySettings, request_id: str) -> Call:
        """How a background run is asked of the desk: no deadline but the longest one, and
        a keep-alive (a save, renewing the lease) at least every third of the lease."""
        timeout = desk.rt.settings.limits.max_deadline
        return Call(key, ROUTE, request_id, timeout=timeout, keepalive=self.keepalive)

    async def _fail(self, follower: Follower, error: GatewayError) -> None:
        try:
            follower.publish(follower.run.fail(error, 0, 0))
            await self._save_final(follower)
        finally:
            self.followers.pop(follower.record.id, None)

    def follow(self, record: StoredResponse, response_run: ResponseRun, run: Run) -> Follower:
        """Follow ``run`` (admitted and started by the desk) with no client; it finishes it."""
        follower = Follower(record, response_run)
        self.followers[record.id] = follower
        follower.task = asyncio.create_task(self._follow(follower, run), name=f"follow-{record.id}")
        return follower

    async def _follow(self, follower: Follower, run: Run) -> None:
        response = follower.run
        plan = run.plan
        loop = asyncio.get_running_loop()
        saved = loop.time()
        try:
            async for event in run.events:
                if not isinstance(event, KeepAlive):
                    run.exchange.mark_text()
                    follower.publish(response.start())
                    follower.publish(response.feed(event))
                if loop.time() - saved >= SAVE_INTERVAL or isinstance(event, KeepAlive):
                    run.end()  # what it cost so far, in case it is cut now
                    self._note_jobs(follower, run)
                    if not await self._save(follower):
                        follower.cancelled = True  # cancelled (or deleted) elsewhere
                        run.end(None, outcome="cancelled")
                        return
                    saved = loop.time()
            run.end()
            self._note_jobs(follower, run)
            follower.publish(response.start())
            follower.publish(response.finish(plan.prompt_tokens, run.exchange.completion_tokens))
        except asyncio.CancelledError:
            if follower.cancelled:
                run.end(None, outcome="cancelled")
            else:  # shutting down: another gateway takes over at once
                await self._hand_over(follower, run)
            raise
        except ServiceUnavailable as exc:
            if not cut_by_shutdown(exc):
                run.end(exc)
                follower.publish(response.fail(exc, plan.prompt_tokens, _done(run)))
            else:
                await self._hand_over(follower, run)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, GatewayError)
                else InternalError(
                    "The gateway failed while following this response; it has been logged."
                )
            )
            if not isinstance(exc, GatewayError):
                logger.exception("background response %s failed", follower.record.id)
            run.end(error)
            follower.publish(response.fail(error, plan.prompt_tokens, _done(run)))
        finally:
            with contextlib.suppress(Exception):
                await run.events.aclose()  # type: ignore[attr-defined]
            if follower.done and not follower.cancelled:
                with contextlib.suppress(Exception):
                    await self._save_final(follower)
            follower.changed.fire()
            self.followers.pop(follower.record.id, None)
            await run.finish()

    @staticmethod
    def _note_jobs(follower: Follower, run: Run) -> None:
        jobs = [j for c in run.choices for j in c.job_ids]
        if jobs:
            follower.record.job_ids = jobs[-1:]

    async def _hand_over(self, follower: Follower, run: Run) -> None:
        """Leave the run to the next gateway: progress saved with no lease left. The limits
        keep its estimate; the gateway that finishes it records (and corrects) its usage."""
        self._note_jobs(follower, run)
        run.hand_over()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._save(follower, release=True), timeout=5)

    async def _save_final(self, follower: Follower) -> None:
        """The last save, retried while the database is away (up to about one lease); if it
        never lands, the lease runs out and a gateway follows the stored jobs to the end."""
        deadline = time.monotonic() + self.lease
        delay = 0.2
        while not await self._save(follower, final=True, retry=False):
            if time.monotonic() + delay > deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _save(
        self, follower: Follower, *, final: bool = False, release: bool = False, retry: bool = True
    ) -> bool:
        """Save progress and renew the lease (or give it up: ``final``, ``release``).

        The object, the next sequence number and the new events go in one transaction; the
        record advances only once it committed, so a failed save is retried whole by the next
        one (no hole in the stored stream). A failure answers ``retry`` (True: carry on)."""
        record = follower.record
        new = [e for e in follower.events if e["sequence_number"] >= record.seq]
        saved = (record.body, record.status, record.seq, record.lease_until)
        record.body = follower.run.snapshot()
        record.status = follower.run.status
        record.seq = follower.run.seq
        if final or release:
            record.lease_until = 0.0
        else:
            record.lease_until = time.time() + self.lease
        try:
            return await self.store.update(record, new, final=final)
        except Exception:
            record.body, record.status, record.seq, record.lease_until = saved
            logger.exception("could not save background response %s", record.id)
            return retry

    async def cancel(self, response_id: str) -> Follower | None:
        """Stop following a local run; its object is marked cancelled."""
        follower = self.followers.get(response_id)
        if follower is None or follower.task is None:
            return None
        follower.cancelled = True
        follower.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower.task
        follower.run.cancel()
        return follower

    async def tail(
        self, record: StoredResponse, after: int, keepalive: float
    ) -> AsyncIterator[StreamEvent | None]:
        """A background run's stream events after ``after``, until it ends; ``None`` after
        ``keepalive`` seconds with nothing new (a queued run is silent for a while)."""
        last = after
        follower = self.followers.get(record.id)
        if follower is not None and follower.events:  # a run resumed here: older events stored
            first = follower.events[0]["sequence_number"]
            for event in await self.store.events(record.id, last):
                if event["sequence_number"] >= first:
                    break
                last = event["sequence_number"]
                yield event
        while (follower := self.followers.get(record.id)) is not None:
            signal = follower.changed.next
            for event in follower.events:
                if event["sequence_number"] > last:
                    last = event["sequence_number"]
                    yield event
            if follower.done or follower.cancelled:
                return
            if not await fired(signal, keepalive):
                yield None
        async for item in self._watched(record, last, keepalive):
            yield item

    async def _watched(
        self, record: StoredResponse, last: int, keepalive: float
    ) -> AsyncIterator[StreamEvent | None]:
        """A run followed by another gateway: one reader of the store per response id in this
        process, shared by all of its tails."""
        watch = self.watches.get(record.id)
        if watch is None:
            watch = self.watches[record.id] = Watch()
            watch.task = asyncio.create_task(self._watch(record, watch), name=f"watch-{record.id}")
        watch.users += 1
        try:
            while True:
                signal = watch.changed.next
                for event in watch.events:
                    if event["sequence_number"] > last:
                        last = event["sequence_number"]
                        yield event
                if watch.done:
                    return
                if not await fired(signal, keepalive):
                    yield None
        finally:
            watch.users -= 1
            if watch.users == 0 and self.watches.get(record.id) is watch:
                del self.watches[record.id]
                if watch.task is not None:
                    watch.task.cancel()

    async def _watch(self, record: StoredResponse, watch: Watch) -> None:
        last = -1
        rounds = 0
        try:
            while True:
                for event in await self.store.events(record.id, last):
                    last = event["sequence_number"]
                    watch.events.append(event)
                    watch.changed.fire()
                    if event["type"] in _FINAL_EVENTS:
                        return
                rounds += 1
                if rounds % 4 == 0:  # the status now and then: a cancel writes no event
                    fresh = await self.store.get(record.id, record.key_id, time.time())
                    if fresh is None or fresh.status in TERMINAL:
                        for event in await self.store.events(record.id, last):
                            watch.events.append(event)
                        return
                await asyncio.sleep(SAVE_INTERVAL)
        except Exception:
            logger.exception("following stored response %s failed", record.id)
        finally:
            watch.done = True
            watch.changed.fire()


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _done(run: Run) -> int:
    return run.exchange.completion_tokens
