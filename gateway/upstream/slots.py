"""A cap on jobs in flight per upstream account, shared fairly by the keys waiting for it.

Protects an upstream account from a burst: requests beyond the cap wait (up to their deadline)
and are refused at once with 429 when the line is full. Who goes next is decided fairly, not
first come first served:

1. **Priority classes.** Waiters of a higher ``priority`` always go before lower ones.
2. **Teams**, within a class: each team (a key without a team is a team of its own) has a
   virtual clock, the job slots granted to it divided by its ``weight``; the team with the
   smallest clock goes next. A team that starts waiting joins at the clock of the last grant,
   so it goes next but gains nothing from having been idle.
3. **Keys**, within a team: the same rule with each key's ``weight``; a key's own requests go in
   arrival order.

So a key with 500 queued requests holds back another key's single request by one grant at
most: the newcomer's clock starts just below the busy key's. With weights 2 and 1, two keys
that both keep requests waiting get two and one slots of every three.

**Batches** (``Share.batch``) wait in a class below every live request, and hold at most
``batch_share`` of the cap between them: the rest is always there for live requests, so a live
request never waits for a slot that a batch took (the upstream cannot cancel a running job, so
a slot, once given, stays given until its job ends).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import RateLimited


@dataclass(slots=True, eq=False)
class _Waiter:
    n: int
    future: asyncio.Future[None]
    since: float
    batch: bool = False


@dataclass(slots=True, eq=False)
class _Flow:
    """One key's waiting requests, in arrival order."""

    key: str
    weight: float
    served: float = 0.0
    waiters: collections.deque[_Waiter] = field(default_factory=collections.deque)


@dataclass(slots=True, eq=False)
class _Group:
    """A team's keys that have requests waiting."""

    weight: float
    served: float = 0.0
    clock: float = 0.0
    flows: dict[str, _Flow] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Class:
    clock: float = 0.0
    groups: dict[str, _Group] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Share:
    """Who a request waits as: its key and team, their weights, and its priority class."""

    key: str = ""
    team: str | None = None
    weight: float = 1.0
    team_weight: float = 1.0
    priority: int = 0
    #: A line of a batch: waits below every live request, within ``batch_share`` of the cap.
    batch: bool = False

    @property
    def order(self) -> float:
        """The class it waits in: batches below any live priority."""
        return float("-inf") if self.batch else float(self.priority)


def _head_since(flow: _Flow) -> float:
    return flow.waiters[0].since


class JobSlots:
    def __init__(
        self,
        capacity: int | None,
        queue_size: int,
        on_wait: Callable[[str, float], None] | None = None,
        batch_share: float = 1.0,
    ) -> None:
        self.capacity = capacity
        self.queue_size = queue_size
        self.in_use = 0
        #: Slots held by batch lines, and the most they may hold together.
        self.batch_in_use = 0
        self.batch_capacity = (
            None if capacity is None else max(1, int(capacity * min(1.0, batch_share)))
        )
        #: Called with (key, seconds waited) when a request gets its slots.
        self.on_wait = on_wait
        self._waiting = 0
        self._classes: dict[float, _Class] = {}

    @property
    def waiting(self) -> int:
        return self._waiting

    def _fits(self, n: int, batch: bool = False) -> bool:
        assert self.capacity is not None
        batch_full = (
            batch
            and self.batch_capacity is not None
            and self.batch_in_use > 0
            and self.batch_in_use + n > self.batch_capacity
        )
        if batch_full:
            return False
        # A request larger than the whole cap may still run alone rather than never.
        return self.in_use + n <= self.capacity or self.in_use == 0

    def _take(self, n: int, batch: bool) -> None:
        self.in_use += n
        if batch:
            self.batch_in_use += n

    async def acquire(self, n: int, wait: float, share: Share | None = None) -> None:
        share = share or Share()
        key, team, priority = share.key, share.team, share.order
        if self.capacity is None:
            self._take(n, share.batch)
            return
        if not self._waiting and self._fits(n, share.batch):
            self._take(n, share.batch)
            self._observe(key, 0.0)
            return
        if self._waiting >= self.queue_size:
            raise RateLimited(
                "The upstream account is at its cap of jobs in flight and the waiting line is "
                "full; try again shortly.",
                retry_after=1.0,
                code="upstream_capacity",
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(n, loop.create_future(), loop.time(), share.batch)
        group_name = f"team:{team}" if team else f"key:{key}"
        group_weight = share.team_weight if team else share.weight
        flow = self._enqueue(priority, group_name, group_weight, key, share.weight)
        flow.waiters.append(waiter)
        self._waiting += 1
        # Those waiting may be batch lines held at their share: then a live request goes now.
        self._grant()
        try:
            async with asyncio.timeout(wait):
                await waiter.future
        except BaseException as exc:
            if not waiter.future.done() or waiter.future.cancelled():
                self._remove(priority, group_name, flow, waiter)
            elif waiter.future.exception() is None:
                self.release(n, batch=share.batch)  # granted just as we gave up: hand them on
            if isinstance(exc, TimeoutError):
                raise RateLimited(
                    "The upstream account stayed at its cap of jobs in flight for the whole wait.",
                    retry_after=1.0,
                    code="upstream_capacity",
                ) from None
            raise
        # Granted: release() already counted our slots in ``in_use``.

    def _enqueue(
        self, priority: float, group_name: str, group_weight: float, key: str, weight: float
    ) -> _Flow:
        cls = self._classes.get(priority)
        if cls is None:
            cls = self._classes[priority] = _Class()
        group = cls.groups.get(group_name)
        if group is None:
            group = cls.groups[group_name] = _Group(group_weight, served=cls.clock)
        flow = group.flows.get(key)
        if flow is None:
            flow = group.flows[key] = _Flow(key, weight, served=group.clock)
        return flow

    def _remove(self, priority: float, group_name: str, flow: _Flow, waiter: _Waiter) -> None:
        if waiter in flow.waiters:
            flow.waiters.remove(waiter)
            self._waiting -= 1
        self._prune(priority, group_name, flow)

    def _prune(self, priority: float, group_name: str, flow: _Flow) -> None:
        if flow.waiters:
            return
        cls = self._classes.get(priority)
        if cls is None:
            return
        group = cls.groups.get(group_name)
        if group is None:
            return
        if group.flows.get(flow.key) is flow:
            del group.flows[flow.key]
        if not group.flows:
            del cls.groups[group_name]
        if not cls.groups:
            del self._classes[priority]

    def _next(self) -> tuple[float, str, _Group, _Flow] | None:
        """The waiter that goes next: highest class, then smallest clocks, then oldest."""
        if not self._classes:
            return None
        priority = max(self._classes)
        cls = self._classes[priority]
        name, group = min(
            cls.groups.items(),
            key=lambda item: (item[1].served, min(map(_head_since, item[1].flows.values()))),
        )
        flow = min(group.flows.values(), key=lambda f: (f.served, _head_since(f)))
        return priority, name, group, flow

    def refuse_waiting(self, error: BaseException) -> None:
        """Fail every request still in line with ``error`` (the gateway is shutting down)."""
        classes, self._classes = self._classes, {}
        self._waiting = 0
        for cls in classes.values():
            for group in cls.groups.values():
                for flow in group.flows.values():
                    for waiter in flow.waiters:
                        if not waiter.future.done():
                            waiter.future.set_exception(error)

    def release(self, n: int, *, batch: bool = False) -> None:
        self.in_use = max(0, self.in_use - n)
        if batch:
            self.batch_in_use = max(0, self.batch_in_use - n)
        self._grant()

    def _grant(self) -> None:
        """Give free slots to waiters, highest class first, fairly within a class."""
        while (chosen := self._next()) is not None:
            priority, name, group, flow = chosen
            waiter = flow.waiters[0]
            if waiter.future.done():  # cancelled; its task removes nothing more
                flow.waiters.popleft()
                self._waiting -= 1
                self._prune(priority, name, flow)
                continue
            if not self._fits(waiter.n, waiter.batch):
                break  # the class below (batches) never goes before this one
            flow.waiters.popleft()
            self._waiting -= 1
            cls = self._classes[priority]
            cls.clock = group.served
            group.served += waiter.n / group.weight
            group.clock = flow.served
            flow.served += waiter.n / flow.weight
            self._prune(priority, name, flow)
            self._take(waiter.n, waiter.batch)
            waiter.future.set_result(None)
            self._observe(flow.key, asyncio.get_running_loop().time() - waiter.since)

    def _observe(self, key: str, seconds: float) -> None:
        if self.on_wait is not None and key:
            self.on_wait(key, seconds)
