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
from gateway.engine.choices import ChoiceState
from gateway.engine.events import KeepAlive
from gateway.engine.planning import Plan
from gateway.engine.service import Submitted
from gateway.errors import GatewayError, InternalError, ServiceUnavailable
from gateway.http.exchange import Exchange
from gateway.keys.digests import owner
from gateway.openai.responses.run import TERMINAL, ResponseRun, StreamEvent
from gateway.openai.responses.store import ResponseStore, StoredResponse

if TYPE_CHECKING:
    from gateway.runtime import Runtime

logger = logging.getLogger("gateway.responses")

#: Most seconds between two saves of a run's progress (other replicas read it from the store).
SAVE_INTERVAL = 0.25


@dataclass(slots=True)
class Follower:
    """One background run followed by this process."""

    record: StoredResponse
    run: ResponseRun
    events: list[StreamEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cancelled: bool = False

    def publish(self, events: list[StreamEvent]) -> None:
        if events:
            self.events.extend(events)
            self.changed.set()

    @property
    def done(self) -> bool:
        return self.run.status in TERMINAL


#: Plans a stored request again after a restart: (record, key) -> (plan, run).
Replanner = Callable[[StoredResponse, KeySettings], Awaitable[tuple[Plan, ResponseRun]]]


class Background:
    """The background runs this process follows, and the scan that adopts orphaned ones."""

    def __init__(self, store: ResponseStore, lease: float, replan: Replanner) -> None:
        self.store = store
        self.lease = lease
        self.owner = "gw-" + secrets.token_hex(8)
        self.followers: dict[str, Follower] = {}
        self._replan = replan
        self._scanner: asyncio.Task[None] | None = None

    def start(self, runtime: Runtime) -> None:
        self._scanner = asyncio.create_task(self._scan(runtime), name="responses-scan")

    async def aclose(self) -> None:
        """Stop following; the leases run out and another gateway takes the runs over."""
        tasks = [t for t in (self._scanner, *(f.task for f in self.followers.values())) if t]
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
                if not runtime.shutting_down:  # a draining gateway hands runs over
                    for record in await self.store.claim(self.owner, now, self.lease):
                        await self._adopt(runtime, record)
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

    async def _adopt(self, runtime: Runtime, record: StoredResponse) -> None:
        key = next((k for k in runtime.settings.keys if k.name == record.key_name), None)
        if key is not None and owner(key) != record.key_id:  # the name, reused by another key
            key = None
        follower: Follower | None = None
        try:
            if key is None:
                raise InternalError("The key that created this response no longer exists.")
            plan, run = await self._replan(record, key)
        except Exception as exc:  # it cannot be followed again: it ends, failed
            logger.warning("background response %s cannot be followed again: %s", record.id, exc)
            error = (
                exc
                if isinstance(exc, GatewayError)
                else InternalError("The gateway could not resume following this response.")
            )
            run = ResponseRun.restore(record.body, record.seq)
            follower = Follower(record, run)
            follower.task = asyncio.create_task(self._fail(follower, error))
            self.followers[record.id] = follower
            return
        logger.warning(
            "following background response %s again (jobs %s)", record.id, ",".join(record.job_ids)
        )
        token = key.upstream_token
        jobs = Submitted(
            list(record.job_ids),
            runtime.hub.poller(token, runtime.account(key)),
            runtime.completions.slots(token),
            released=True,  # its job slots were held by the gateway that submitted it
            token=token,
        )
        exchange = Exchange("resumed-" + record.id, "/v1/responses")
        exchange.key_name, exchange.model = key.name, plan.model.name
        exchange.prompt_tokens, exchange.stream = plan.prompt_tokens, False
        exchange.job_ids = list(record.job_ids)
        follower = self.follow(runtime, record, run, plan, jobs, exchange)
        if record.seq == 0:  # lost before its first save: its stream starts here
            follower.publish(run.opening())

    async def _fail(self, follower: Follower, error: GatewayError) -> None:
        try:
            follower.publish(follower.run.fail(error, 0, 0))
            await self._save_final(follower)
        finally:
            self.followers.pop(follower.record.id, None)

    def follow(
        self,
        runtime: Runtime,
        record: StoredResponse,
        run: ResponseRun,
        plan: Plan,
        jobs: Submitted,
        exchange: Exchange,
    ) -> Follower:
        follower = Follower(record, run)
        self.followers[record.id] = follower
        follower.task = asyncio.create_task(
            self._follow(runtime, follower, plan, jobs, exchange), name=f"follow-{record.id}"
        )
        return follower

    async def _follow(
        self,
        runtime: Runtime,
        follower: Follower,
        plan: Plan,
        jobs: Submitted,
        exchange: Exchange,
    ) -> None:
        settings = runtime.settings
        run = follower.run
        choices = [
            ChoiceState(i, job_id, plan, settings.upstream.strip_ansi)
            for i, job_id in enumerate(jobs.ids)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.limits.max_deadline
        events = runtime.completions.events(
            plan, jobs, deadline, choices, keepalive=max(0.5, self.lease / 3)
        )
        saved = loop.time()
        try:
            async for event in events:
                if not isinstance(event, KeepAlive):
                    exchange.mark_text()
                    follower.publish(run.start())
                    follower.publish(run.feed(event))
                if loop.time() - saved >= SAVE_INTERVAL or isinstance(event, KeepAlive):
                    _settle(exchange, follower, choices)
                    if not await self._save(follower):
                        follower.cancelled = True
                        return  # cancelled (or deleted) elsewhere
                    saved = loop.time()
            _settle(exchange, follower, choices)
            follower.publish(run.start())
            follower.publish(run.finish(plan.prompt_tokens, exchange.completion_tokens))
        except asyncio.CancelledError:
            _settle(exchange, follower, choices)
            if follower.cancelled:
                exchange.status, exchange.outcome = 499, "cancelled"
            else:  # shutting down: another gateway takes over at once
                await self._hand_over(follower, exchange)
            raise
        except ServiceUnavailable as exc:
            if exc.code != "server_shutdown":
                raise
            _settle(exchange, follower, choices)
            await self._hand_over(follower, exchange)
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
            _settle(exchange, follower, choices)
            exchange.status, exchange.outcome = error.status_code, error.code or "error"
            follower.publish(run.fail(error, plan.prompt_tokens, exchange.completion_tokens))
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            jobs.release()
            if follower.done and not follower.cancelled:
                with contextlib.suppress(Exception):
                    await self._save_final(follower)
            follower.changed.set()
            self.followers.pop(follower.record.id, None)
            await runtime.finish(exchange)

    async def _hand_over(self, follower: Follower, exchange: Exchange) -> None:
        """Leave the run to the next gateway: progress saved with no lease left. The gateway
        that finishes it records its whole usage, so this one records none."""
        exchange.status, exchange.outcome = 503, "handed_over"
        exchange.prompt_tokens = exchange.completion_tokens = 0
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

    async def tail(self, record: StoredResponse, after: int) -> AsyncIterator[StreamEvent]:
        """A background run's stream events after ``after``, until it ends."""
        last = after
        follower = self.followers.get(record.id)
        if follower is not None and follower.events:  # a run resumed here: older events stored
            first = follower.events[0]["sequence_number"]
            for event in await self.store.events(record.id, last):
                if event["sequence_number"] >= first:
                    break
                last = event["sequence_number"]
                yield event
        while True:
            follower = self.followers.get(record.id)
            if follower is not None:
                follower.changed.clear()
                for event in follower.events:
                    if event["sequence_number"] > last:
                        last = event["sequence_number"]
                        yield event
                if follower.done or follower.cancelled:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(follower.changed.wait(), timeout=self.lease)
                continue
            for event in await self.store.events(record.id, last):
                last = event["sequence_number"]
                yield event
                if event["type"] in _FINAL_EVENTS:
                    return
            fresh = await self.store.get(record.id, record.key_id, time.time())
            if fresh is None or fresh.status in TERMINAL:
                for event in await self.store.events(record.id, last):
                    yield event
                return
            await asyncio.sleep(SAVE_INTERVAL)


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _settle(exchange: Exchange, follower: Follower, choices: list[ChoiceState]) -> None:
    exchange.completion_tokens = sum(c.completion_tokens for c in choices)
    jobs = [j for c in choices for j in c.job_ids]
    follower.record.job_ids = jobs[-1:] if jobs else follower.record.job_ids
    for job in jobs:
        if job not in exchange.job_ids:
            exchange.job_ids.append(job)
