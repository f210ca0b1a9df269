"""One request's record as it passes through the gateway: who, what, how long, how much.

Routes fill it in. What the request holds (its concurrency slot, its jobs' places in the
per-token cap) is let go by :meth:`Exchange.release` as soon as the answer is complete and
*before* its last bytes are written, so a client that sends its next request the moment it
reads ``[DONE]`` never finds its own previous slot still taken. When the exchange is over the
runtime's ``finish`` turns the record into a log line, metrics and a ledger row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

logger = logging.getLogger("gateway.access")


@dataclass(slots=True)
class Exchange:
    request_id: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    wall_started: datetime = field(default_factory=lambda: datetime.now(UTC))
    key_name: str | None = None
    model: str | None = None
    stream: bool = False
    job_ids: list[str] = field(default_factory=list)
    submitted_at: float | None = None
    first_text_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 200
    outcome: str = "ok"
    prompt_text: str | None = None
    log_rewrites: int = 0
    ignored: list[str] = field(default_factory=list)  # request fields accepted, not forwarded
    cached: bool = False  # answered from the response cache
    #: Follows jobs another process submitted (a resumed run): its final ledger row replaces
    #: that process's rows of the request (in-flight, or final for the same jobs).
    resumed: bool = False
    tokens_saved: int = 0  # tokens the grid did not generate again for this answer
    jobs_saved: int = 0  # upstream jobs not created: a hit's choices, or jobs joined
    cleanups: list[Callable[[Exchange], Awaitable[None]]] = field(default_factory=list)
    #: perf_counter instants of the lifecycle's steps ("planned", "admitted", "slot", ...),
    #: from which a trace is drawn afterwards (gateway/ops/tracing.py).
    marks: dict[str, float] = field(default_factory=dict)
    trace_headers: dict[str, str] = field(default_factory=dict)  # traceparent, tracestate

    def mark(self, step: str) -> None:
        self.marks.setdefault(step, time.perf_counter())

    def epoch_ns(self, instant: float) -> int:
        """A perf_counter instant of this exchange as Unix nanoseconds."""
        return int((self.wall_started.timestamp() + instant - self.started) * 1e9)

    async def release(self) -> None:
        """Run each cleanup once; the runtime's ``finish`` always calls this again for what is
        left. A failing cleanup is logged and does not stop the others; one cancelled midway
        leaves the rest to that later call."""
        while self.cleanups:
            cleanup = self.cleanups.pop(0)
            try:
                await cleanup(self)
            except Exception:
                logger.exception("request cleanup failed")

    def mark_text(self) -> None:
        if self.first_text_at is None:
            self.first_text_at = time.perf_counter()
            self.marks["first_text"] = self.first_text_at

    @property
    def duration(self) -> float:
        return time.perf_counter() - self.started

    @property
    def ttft(self) -> float | None:
        return None if self.first_text_at is None else self.first_text_at - self.started

    @property
    def queue_wait(self) -> float | None:
        """From submission until the job's log first showed text."""
        if self.first_text_at is None or self.submitted_at is None:
            return None
        return self.first_text_at - self.submitted_at
