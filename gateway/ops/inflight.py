"""What is in flight right now, for ``/metrics``: requests, event streams, event-loop tasks.

These let an operator (and the fault tests) see that nothing is left behind once traffic
stops: ``gateway_requests_in_flight`` and ``gateway_streams_active`` return to zero and
``gateway_event_loop_tasks`` to its idle baseline. ``gateway_jobs_in_flight`` (the poller)
completes the picture.

The task count is read when ``/metrics`` is rendered, on the event loop's own thread; with
several workers (multiprocess mode) it is not exported, as it would describe one worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Paths whose requests are counted: the API, not probes or metric scrapes.
COUNTED_PREFIXES = ("/v1/", "/admin/")


class LoopTasks(Collector):
    """``gateway_event_loop_tasks``: asyncio tasks alive on the serving loop."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count = len(asyncio.all_tasks())
        except RuntimeError:  # rendered outside the loop (a test): nothing to say
            return
        yield GaugeMetricFamily(
            "gateway_event_loop_tasks",
            "Asyncio tasks alive on the event loop (idle baseline plus one per request).",
            value=count,
        )


def register_once(registry: CollectorRegistry, collector: Collector) -> None:
    # A second app on the same registry: the first one's collector already reports.
    with contextlib.suppress(ValueError):
        registry.register(collector)


def requests_gauge(registry: CollectorRegistry) -> Gauge:
    """``gateway_requests_in_flight``, registered once per registry."""
    name = "gateway_requests_in_flight"
    doc = "API requests received and not yet answered in full (streams included)."
    try:
        return Gauge(name, doc, multiprocess_mode="livesum", registry=registry)
    except ValueError:  # already on this registry (second app): count, export once
        return Gauge(name, doc, multiprocess_mode="livesum", registry=None)


def is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    """Does an ``http.response.start`` message's headers open an event stream?

    A stream counts in ``gateway_streams_active`` from its first byte until the exchange
    ends, whether it completed, failed or the client left (``gateway.ops.middleware``).
    """
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.startswith(b"text/event-stream")
    return False
