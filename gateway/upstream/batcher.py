"""Batched submissions by group commit: requests for one account and model share a POST.

The jobs API takes a list of inputs and answers one id per input, in order. Each submission
costs the service (and the gateway) a request, so submissions for the same upstream token and
tag are gathered into one ``POST /jobs``; each member gets its own ids back, sliced in order.

Gathering follows the group-commit rule of databases, so it waits for nothing when idle and
gathers under load:

- when no submission for that token and tag is in flight, a batch goes *at once* (on the next
  turn of the event loop, so requests that arrive together still share it);
- while one is in flight, newcomers gather; the gathered batch goes when the submission in
  flight ends (once it is ``min_age`` old), when it is full (``max_inputs`` inputs or
  :data:`MAX_BATCH_CHARS` characters), or when it has waited ``window``, whichever is first.

So a lone request pays no wait, and the number of submissions follows the upstream's round
trip, not the arrival rate: against a 50 ms round trip, 100 concurrent requests make a handful.

The retry rules stay the client's (:meth:`JobsClient.submit`): a batch is resent only when it
certainly never arrived. A batch the service *refused* (``success: false``, or a 4xx that says
the body was read and rejected) created no job, so its members are sent again one by one, once:
one bad input then fails only its own request. Any other failure fails every member, since
some jobs may exist.

A member that leaves (client gone, deadline) before its batch is sent is taken out of it; one
that leaves while the batch is in flight may leave a job behind, as a single submission could.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure

#: A batch is sent at once when its prompts reach this many characters: the service's limit on
#: a body is unknown, and one very large body would hold every member back if it were refused.
MAX_BATCH_CHARS = 1_000_000
#: Statuses of an answer that refused the whole submission after reading it (no job made).
REFUSED_STATUSES = frozenset({400, 413, 422})

#: Called once per POST /jobs that got ids: the number of inputs it carried.
SubmissionHook = Callable[[int], None]


def refused_whole(failure: UpstreamFailure) -> bool:
    """True when the service read the submission and turned it down: no job was created."""
    if failure.kind == "rejected":
        return True
    return failure.kind == "http_error" and failure.status_code in REFUSED_STATUSES


@dataclass(slots=True)
class _Member:
    inputs: Sequence[str]
    deadline: float | None
    future: asyncio.Future[list[str]]


@dataclass(slots=True)
class _Batch:
    token: str
    tag: str
    account: str
    opened: float
    members: list[_Member] = field(default_factory=list)
    inputs: int = 0
    chars: int = 0
    timer: asyncio.Handle | None = None


@dataclass(slots=True)
class _Lane:
    """One token and tag: its submissions in flight and the batch gathering behind them."""

    in_flight: int = 0
    gathering: _Batch | None = None


class SubmitBatcher:
    """Gathers submissions per (token, tag) by group commit, at most ``max_inputs`` each.

    ``window`` (seconds) is the longest a request waits behind a submission in flight; with
    ``window`` 0 every submission goes out on its own, as before batching existed.
    ``min_age`` (seconds) is how long a batch gathers at least once the one in flight ended.
    """

    def __init__(
        self,
        client: JobsClient,
        window: float,
        max_inputs: int,
        *,
        min_age: float = 0.0,
        on_submission: SubmissionHook | None = None,
    ) -> None:
        self._client = client
        self.window = window
        self.max_inputs = max_inputs
        self.min_age = min(min_age, window)
        self._on_submission = on_submission
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._sending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls,
        client: JobsClient,
        upstream: UpstreamSettings,
        on_submission: SubmissionHook | None = None,
    ) -> SubmitBatcher:
        """The batcher the config asks for (its times are in milliseconds)."""
        return cls(
            client,
            upstream.submit_batch_window / 1000,
            upstream.submit_batch_max_inputs,
            min_age=upstream.submit_batch_min_age / 1000,
            on_submission=on_submission,
        )

    async def submit(
        self,
        token: str,
        tag: str,
        inputs: Sequence[str],
        *,
        account: str = "",
        deadline: float | None = None,
    ) -> list[str]:
        """The job ids of ``inputs``, in order; raises :class:`UpstreamFailure` like the client."""
        if self.window <= 0 or len(inputs) >= self.max_inputs:
            return await self._send_alone(token, tag, inputs, account, deadline)
        loop = asyncio.get_running_loop()
        size = sum(len(text) for text in inputs)
        lane = self._lanes.setdefault((token, tag), _Lane())
        batch = lane.gathering
        if batch is not None and (
            batch.inputs + len(inputs) > self.max_inputs or batch.chars + size > MAX_BATCH_CHARS
        ):
            self._flush(batch)  # no room: the gathered batch goes now, this one starts the next
            batch = None
        if batch is None:
            batch = _Batch(token, tag, account, loop.time())
            lane.gathering = batch
            if lane.in_flight:  # wait behind the submission in flight, at most one window
                batch.timer = loop.call_later(self.window, self._flush, batch)
            else:  # nothing in flight: go at once, with whoever arrives in this same turn
                batch.timer = loop.call_soon(self._flush, batch)
        member = _Member(inputs, deadline, loop.create_future())
        batch.members.append(member)
        batch.inputs += len(inputs)
        batch.chars += size
        if batch.inputs >= self.max_inputs or batch.chars >= MAX_BATCH_CHARS:
            self._flush(batch)
        # Leaving (cancellation) cancels only this member's future: the batch goes on.
        return await member.future

    def _flush(self, batch: _Batch) -> None:
        """Close ``batch`` to newcomers and send it in a task of its own."""
        key = (batch.token, batch.tag)
        lane = self._lanes.get(key)
        if lane is None or lane.gathering is not batch:
            return  # already sent (a timer that fired after a flush for another reason)
        lane.gathering = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        lane.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(lambda _: self._landed(key))

    def _landed(self, key: tuple[str, str]) -> None:
        """A submission of ``key`` ended: the batch gathered behind it may go."""
        lane = self._lanes.get(key)
        if lane is None:
            return
        lane.in_flight -= 1
        batch = lane.gathering
        if lane.in_flight or batch is None:
            if not lane.in_flight and batch is None:
                del self._lanes[key]  # idle: nothing kept per token and tag
            return
        loop = asyncio.get_running_loop()
        wait = batch.opened + self.min_age - loop.time()
        if wait <= 0:
            self._flush(batch)
        else:
            if batch.timer is not None:
                batch.timer.cancel()
            batch.timer = loop.call_later(wait, self._flush, batch)

    async def _send(self, batch: _Batch) -> None:
        members = [m for m in batch.members if not m.future.done()]
        if not members:
            return
        inputs = [text for m in members for text in m.inputs]
        deadlines = [m.deadline for m in members if m.deadline is not None]
        try:
            ids = await self._client.submit(
                batch.token,
                batch.tag,
                inputs,
                account=batch.account,
                deadline=min(deadlines) if len(deadlines) == len(members) else None,
            )
        except UpstreamFailure as failure:
            if len(members) > 1 and refused_whole(failure):
                await asyncio.gather(*(self._retry_alone(batch, m) for m in members))
            else:
                for member in members:
                    _fail(member, failure)
            return
        except BaseException as exc:  # cancelled at shutdown, or a bug: nobody may hang
            for member in members:
                _fail(member, UpstreamFailure("connect_error", f"submission abandoned ({exc!r})"))
            raise
        self._count(len(inputs))
        at = 0
        for member in members:
            own = ids[at : at + len(member.inputs)]
            at += len(member.inputs)
            if not member.future.done():
                member.future.set_result(own)

    async def _retry_alone(self, batch: _Batch, member: _Member) -> None:
        if member.future.done():
            return
        try:
            ids = await self._client.submit(
                batch.token,
                batch.tag,
                member.inputs,
                account=batch.account,
                deadline=member.deadline,
            )
        except UpstreamFailure as failure:
            _fail(member, failure)
            return
        self._count(len(member.inputs))
        if not member.future.done():
            member.future.set_result(ids)

    async def _send_alone(
        self,
        token: str,
        tag: str,
        inputs: Sequence[str],
        account: str,
        deadline: float | None,
    ) -> list[str]:
        ids = await self._client.submit(token, tag, inputs, account=account, deadline=deadline)
        self._count(len(inputs))
        return ids

    def _count(self, inputs: int) -> None:
        if self._on_submission is not None:
            self._on_submission(inputs)

    async def aclose(self) -> None:
        """Send what is still gathered and wait for the submissions under way."""
        for lane in list(self._lanes.values()):
            if lane.gathering is not None:
                self._flush(lane.gathering)
        while self._sending:  # a submission that lands may send the batch behind it
            for task in list(self._sending):
                with contextlib.suppress(BaseException):
                    await task
            await asyncio.sleep(0)  # let the done callbacks run


def _fail(member: _Member, failure: UpstreamFailure) -> None:
    if not member.future.done():
        member.future.set_exception(failure)
