"""What the upstream is doing right now, remembered for ``GET /admin/live`` (gateway.admin.live).

:class:`LiveView` keeps only bounded memory: a ring of recent upstream call timings, a ring of
recent failed requests, and the completions currently following jobs (each one leaves when its
exchange finishes). The answer names accounts by their configured names, never by token.

With several workers each one's view covers its own requests only; ``gateway.ops.live_share``
hands every worker the others' (:meth:`LiveView.share`), and :meth:`LiveView.answer` merges them.
"""

from __future__ import annotations

import collections
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.http.exchange import Exchange
from gateway.ops.live_share import merge, merge_accounts

#: Upstream calls kept for the latency percentiles and the error count.
SAMPLES = 1024
#: Failed requests kept for the live view.
FAILURES = 50
#: How far back "recent" reaches, in seconds, for upstream errors.
RECENT_SECONDS = 300.0


class _Slots(Protocol):
    capacity: int | None
    in_use: int

    @property
    def waiting(self) -> int: ...


class _Breaker(Protocol):
    @property
    def is_open(self) -> bool: ...

    def retry_after(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AccountState:
    """One account's figures, gathered by the runtime (which knows tokens) for the view."""

    account: str
    jobs_in_flight: int
    slots: _Slots
    status_requests_per_tick: int
    breaker: _Breaker | None


def circuit_state(breaker: _Breaker | None) -> str:
    """closed, open, or half_open (open, but the next call would be let through as a probe)."""
    if breaker is None or not breaker.is_open:
        return "closed"
    return "half_open" if breaker.retry_after() <= 0 else "open"


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile of ``values`` (sorted here), None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class LiveView:
    """Bounded rings of recent events and the completions in flight."""

    samples: collections.deque[tuple[float, float, bool]] = field(
        default_factory=lambda: collections.deque(maxlen=SAMPLES)
    )
    failures: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=FAILURES)
    )
    #: By object identity: a request id may come from the client, so two may share one.
    open: dict[int, Exchange] = field(default_factory=dict)

    def observe_upstream(self, outcome: str, seconds: float) -> None:
        self.samples.append((time.monotonic(), seconds, outcome == "ok"))

    def following(self, exchange: Exchange) -> None:
        """A completion's jobs were submitted: show them until the exchange finishes."""
        self.open[id(exchange)] = exchange

    def finished(self, exchange: Exchange) -> None:
        self.open.pop(id(exchange), None)
        if exchange.status >= 400:
            self.failures.append(
                {
                    "at": _iso(exchange.wall_started),
                    "route": exchange.route,
                    "status": exchange.status,
                    "outcome": exchange.outcome,
                    "key": exchange.key_name,
                }
            )

    def upstream(self) -> dict[str, Any]:
        return _upstream(self._recent_samples())

    def _recent_samples(self) -> list[list[Any]]:
        """Recent upstream calls as ``[milliseconds, ok]``."""
        horizon = time.monotonic() - RECENT_SECONDS
        return [[seconds * 1000, ok] for at, seconds, ok in self.samples if at >= horizon]

    def jobs(self, stale_after: float) -> list[dict[str, Any]]:
        """One row per job in flight; exchanges older than ``stale_after`` seconds are dropped
        (a request that never reached ``finish`` must not stay listed for ever)."""
        now = time.perf_counter()
        rows: list[dict[str, Any]] = []
        for ident, exchange in list(self.open.items()):
            if now - exchange.started > stale_after:
                del self.open[ident]
                continue
            state = "queued" if exchange.first_text_at is None else "generating"
            for job_id in exchange.job_ids:
                rows.append(
                    {
                        "job_id": job_id,
                        "key": exchange.key_name,
                        "model": exchange.model,
                        "state": state,
                        "since": _iso(exchange.wall_started),
                        "stream": exchange.stream,
                    }
                )
        return rows

    def share(self, accounts: Iterable[AccountState], stale_after: float) -> dict[str, Any]:
        """What this worker sees, in a form views of several workers merge from."""
        return {
            "worker": os.getpid(),
            "accounts": [_account_row(a) for a in accounts],
            "samples": self._recent_samples(),
            "failures": list(self.failures),
            "jobs": self.jobs(stale_after),
        }

    def answer(
        self,
        accounts: Iterable[AccountState],
        stale_after: float,
        others: Iterable[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """The ``/admin/live`` answer: this worker's view merged with ``others`` (the other
        workers' shared views, see ``gateway.ops.live_share``). Job rows name their worker."""
        views = merge(self.share(accounts, stale_after), others)
        failures = sorted((f for v in views for f in v["failures"]), key=lambda f: f["at"])
        return {
            "object": "live",
            "at": _iso(datetime.now(UTC)),
            "workers": [{"worker": v["worker"], "jobs": len(v["jobs"])} for v in views],
            "accounts": merge_accounts(views),
            "upstream": _upstream([s for v in views for s in v["samples"]]),
            "recent_failures": list(reversed(failures[-FAILURES:])),
            "jobs": [{**row, "worker": v["worker"]} for v in views for row in v["jobs"]],
        }


def _upstream(samples: list[list[Any]]) -> dict[str, Any]:
    """Latency percentiles and error count of recent upstream calls (``[ms, ok]`` each)."""
    times = [ms for ms, _ in samples]
    p50, p99 = percentile(times, 0.50), percentile(times, 0.99)
    return {
        "latency_ms_p50": None if p50 is None else round(p50, 1),
        "latency_ms_p99": None if p99 is None else round(p99, 1),
        "calls_recent": len(samples),
        "errors_recent": sum(1 for _, ok in samples if not ok),
        "recent_seconds": RECENT_SECONDS,
    }


def _account_row(state: AccountState) -> dict[str, Any]:
    return {
        "account": state.account,
        "jobs_in_flight": state.jobs_in_flight,
        "queued": state.slots.waiting,
        "max_jobs": state.slots.capacity,
        "status_requests_per_tick": state.status_requests_per_tick,
        "circuit": circuit_state(state.breaker),
    }
