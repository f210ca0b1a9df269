"""Completion use cases, free of HTTP: submit a plan's jobs, follow them to the end.

:meth:`Completions.submit` creates one upstream job per choice (within the account's job
cap); :meth:`Completions.events` watches those jobs through the coalescing poller and yields
the choices' events (and :data:`~gateway.engine.choices.KEEPALIVE` while nothing happens), asking
again for an answer that does not fit. Streaming and non-streaming answers are both built
from these events (:mod:`gateway.serving.answers`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from gateway.config import KeySettings, Settings
from gateway.engine.choices import KEEPALIVE, ChoiceState, Event
from gateway.engine.planning import Plan
from gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    ServiceUnavailable,
)
from gateway.upstream.batcher import SubmitBatcher
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.models import JobSnapshot
from gateway.upstream.poller import AccountPoller, PollerHub
from gateway.upstream.slots import JobSlots, Share

logger = logging.getLogger("gateway.service")


@dataclass(slots=True)
class Submitted:
    ids: list[str]
    poller: AccountPoller
    slots: JobSlots
    released: bool = False
    token: str = field(default="", repr=False)  # the upstream token, to ask again
    #: True for a request that joined another's jobs (it holds no place in the job cap).
    shared: bool = False
    on_release: Callable[[], None] | None = field(default=None, repr=False)
    #: Its slots were taken as a batch line's (see :class:`~gateway.upstream.slots.Share`).
    batch: bool = False

    def release(self) -> None:
        """Give back this request's share of the account's job cap (once)."""
        if not self.released:
            self.released = True
            self.slots.release(len(self.ids), batch=self.batch)
        if self.on_release is not None:
            done, self.on_release = self.on_release, None
            done()

    def joined(self) -> Submitted:
        """The same jobs for another request: it follows them from the start, through the
        same poller (so they are polled once for all), and holds no place in the job cap."""
        return Submitted(
            list(self.ids), self.poller, self.slots, released=True, token=self.token, shared=True
        )


class Completions:
    """Submits a plan's jobs and follows them to the end."""

    def __init__(
        self,
        settings: Settings,
        client: JobsClient,
        hub: PollerHub,
        batcher: SubmitBatcher | None = None,
        on_slot_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self._settings = settings
        self._hub = hub
        upstream = settings.upstream
        #: Every submission goes through the batcher (a window of 0 sends each on its own).
        self.batcher = batcher or SubmitBatcher.from_settings(client, upstream)
        self._on_slot_wait = on_slot_wait
        self._slots: dict[str, JobSlots] = {}
        #: Jobs in flight that identical requests may join, by cache key; None: not submitted.
        self._shared: dict[str, asyncio.Future[Submitted | None]] = {}
        #: Loop time at which a draining gateway cuts the requests still running.
        self.drain_deadline = math.inf

    def slots(self, token: str) -> JobSlots:
        slots = self._slots.get(token)
        if slots is None:
            upstream = self._settings.upstream
            slots = JobSlots(
                upstream.max_jobs_per_token,
                upstream.queue_size_per_token,
                self._on_slot_wait,
                batch_share=self._settings.batches.share,
            )
            self._slots[token] = slots
        return slots

    def begin_drain(self, grace: float) -> None:
        """Shutting down: requests still running ``grace`` seconds from now end with an error;
        requests still waiting for a job slot end now."""
        self.drain_deadline = asyncio.get_running_loop().time() + grace
        for slots in self._slots.values():
            slots.refuse_waiting(_shutting_down())
        self._hub.wake_all()

    async def submit(
        self,
        key: KeySettings,
        account: str,
        plan: Plan,
        deadline: float,
        *,
        share: str | None = None,
        fair: Share | None = None,
        on_slot: Callable[[], None] | None = None,
    ) -> Submitted:
        """Submit ``plan``'s jobs; with ``share`` (a cache key), join the jobs of an identical
        request in flight instead, or let later identical requests join these. ``fair`` says
        how the request waits for its account's job cap (see :mod:`gateway.upstream.slots`);
        ``on_slot`` is called once the cap grants the choices' places (traces time the wait)."""
        if self.drain_deadline != math.inf:
            raise _shutting_down()
        if share is None:
            return await self._submit(key, account, plan, deadline, fair, on_slot)
        while (pending := self._shared.get(share)) is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    leader = await asyncio.shield(pending)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"The upstream did not accept the job within the request's deadline of "
                    f"{plan.timeout:g} s."
                ) from None
            if leader is not None:
                return leader.joined()
            # The request that was submitting failed: try again, perhaps as the one submitting.
        pending = asyncio.get_running_loop().create_future()
        self._shared[share] = pending
        try:
            submitted = await self._submit(key, account, plan, deadline, fair, on_slot)
        except BaseException:
            self._forget(share, pending)
            raise
        pending.set_result(submitted)
        submitted.on_release = lambda: self._forget(share, pending)
        return submitted

    def _forget(self, share: str, pending: asyncio.Future[Submitted | None]) -> None:
        """Identical requests arriving from now on submit jobs of their own."""
        if self._shared.get(share) is pending:
            del self._shared[share]
        if not pending.done():
            pending.set_result(None)

    async def _submit(
        self,
        key: KeySettings,
        account: str,
        plan: Plan,
        deadline: float,
        fair: Share | None = None,
        on_slot: Callable[[], None] | None = None,
    ) -> Submitted:
        if self.drain_deadline != math.inf:  # also for a request that waited to join
            raise _shutting_down()
        slots = self.slots(key.upstream_token)
        wait = deadline - asyncio.get_running_loop().time()
        fair = fair or Share(key.name, key.team, key.weight, priority=key.priority)
        await slots.acquire(plan.n_choices, max(wait, 0.0), fair)
        if on_slot is not None:
            on_slot()
        try:
            async with asyncio.timeout_at(deadline):
                ids = await self.batcher.submit(
                    key.upstream_token,
                    plan.model.tag,
                    plan.prompts,
                    account=account,
                    deadline=deadline,
                )
        except UpstreamFailure as failure:
            slots.release(plan.n_choices, batch=fair.batch)
            raise failure.to_gateway_error() from None
        except TimeoutError:
            slots.release(plan.n_choices, batch=fair.batch)
            raise DeadlineExceeded(
                "The upstream did not accept the job within the request's deadline of "
                f"{plan.timeout:g} s."
            ) from None
        except BaseException:
            slots.release(plan.n_choices, batch=fair.batch)
            raise
        poller = self._hub.poller(key.upstream_token, account)
        return Submitted(ids, poller, slots, token=key.upstream_token, batch=fair.batch)

    async def resubmit(self, plan: Plan, jobs: Submitted, choice: ChoiceState) -> None:
        """Ask again for ``choice``'s answer, which did not fit; its job then follows the new one.

        The new job takes the finished job's place in the account's job cap: the request
        still holds one slot per choice, so ``jobs.release`` stays right.
        """
        misfit = choice.retry
        assert misfit is not None
        if plan.reprompt is None or self.drain_deadline != math.inf:
            raise misfit.error
        prompt = plan.reprompt(misfit.problem)
        try:
            ids = await self.batcher.submit(
                jobs.token, plan.model.tag, [prompt], account=jobs.poller.account
            )
        except UpstreamFailure as failure:
            raise failure.to_gateway_error() from None
        logger.warning(
            "choice %d did not fit the requested format (%s); asked again as job %s",
            choice.index,
            misfit.error.code,
            ids[0],
        )
        choice.restart(ids[0])

    async def events(
        self,
        plan: Plan,
        jobs: Submitted,
        deadline: float,
        choices: list[ChoiceState] | None = None,
        keepalive: float | None = None,
    ) -> AsyncIterator[Event]:
        """Follow the jobs until every choice ended; raise a GatewayError if that fails.

        ``keepalive`` (default ``limits.keepalive_interval``) is the longest silence: a
        :data:`KEEPALIVE` is yielded after it.
        """
        loop = asyncio.get_running_loop()
        strip = self._settings.upstream.strip_ansi
        if choices is None:
            choices = [ChoiceState(i, job_id, plan, strip) for i, job_id in enumerate(jobs.ids)]
        keepalive = keepalive or self._settings.limits.keepalive_interval
        while True:
            open_jobs = {c.job_id: c for c in choices if not c.done}
            if not open_jobs:
                return
            retrying: list[ChoiceState] = []
            with jobs.poller.watch(list(open_jobs)) as watch:
                while open_jobs and not retrying:
                    now = loop.time()
                    if now >= self.drain_deadline:
                        raise _shutting_down()
                    if now >= deadline:
                        raise _deadline_error(plan, watch.poll_error, choices)
                    limit = min(deadline, self.drain_deadline) - now
                    changed = await watch.changes(min(keepalive, limit))
                    if not changed:
                        if loop.time() < min(deadline, self.drain_deadline):
                            yield KEEPALIVE
                        continue
                    for snapshot in changed:
                        choice = open_jobs.get(snapshot.id)
                        if choice is None:
                            continue
                        for event in await self._update(plan, choice, snapshot):
                            yield event
                        if choice.retry is not None:
                            retrying.append(choice)
                        if choice.done or choice.retry is not None:
                            del open_jobs[snapshot.id]
                            watch.release(snapshot.id)
                # Asked again while the other jobs are still watched; the loop then watches
                # the new jobs with them.
                for choice in retrying:
                    await self.resubmit(plan, jobs, choice)

    @staticmethod
    async def _update(plan: Plan, choice: ChoiceState, snapshot: JobSnapshot) -> list[Event]:
        """``choice.update``; in a worker thread when it may check the answer against a
        client's schema, so that a slow check (bounded by its own budget) never holds the loop.
        """
        if plan.output is not None and plan.output.checks_schemas:
            return await asyncio.to_thread(choice.update, snapshot)
        return choice.update(snapshot)


def _shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The gateway is shutting down and could not finish this answer in its grace period; "
        "please retry.",
        code="server_shutdown",
        headers={"retry-after": "1"},
    )


def _deadline_error(
    plan: Plan, poll_error: UpstreamFailure | None, choices: list[ChoiceState]
) -> GatewayError:
    message = f"The request did not complete within its deadline of {plan.timeout:g} s"
    if poll_error is not None:
        message += f"; the upstream status requests are failing ({poll_error.message})"
    elif not any(c.started for c in choices):
        message += "; the upstream job had not started (it may still be queued)"
    return DeadlineExceeded(message + ".")
