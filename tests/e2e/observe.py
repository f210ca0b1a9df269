"""Reading a running gateway's in-flight state from ``/metrics`` (e2e helpers, no tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.servers import Server


def metric_samples(gateway: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(gateway: Server, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return metric_samples(gateway).get((name, frozenset(labels.items())), 0.0)


@dataclass(frozen=True)
class InFlight:
    jobs: float
    streams: float
    requests: float
    tasks: float

    @property
    def idle(self) -> bool:
        return self.jobs == 0 and self.streams == 0 and self.requests == 0


def in_flight(gateway: Server) -> InFlight:
    samples = metric_samples(gateway)
    jobs = sum(v for (name, _), v in samples.items() if name == "gateway_jobs_in_flight")
    return InFlight(
        jobs=jobs,
        streams=samples.get(("gateway_streams_active", frozenset()), 0.0),
        requests=samples.get(("gateway_requests_in_flight", frozenset()), 0.0),
        tasks=samples.get(("gateway_event_loop_tasks", frozenset()), 0.0),
    )


def settle(gateway: Server, tasks: float | None = None, limit: float = 10.0) -> InFlight:
    """Wait until nothing is in flight (and the task count is back to ``tasks``, if given).

    The client may see an answer's last byte a moment before the gateway has finished its
    bookkeeping, so this polls; it returns the last reading either way, for the assertion.
    """
    deadline = time.monotonic() + limit
    while True:
        state = in_flight(gateway)
        if (state.idle and (tasks is None or state.tasks <= tasks)) or (
            time.monotonic() > deadline
        ):
            return state
        time.sleep(0.05)


def status_requests(emulator: Server) -> int:
    count: int = httpx.get(emulator.url + "/emulator/stats").json()["status_requests"]
    return count
