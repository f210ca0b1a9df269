"""The batch runner's metrics, on the gateway's registry (``/metrics``).

- ``gateway_batch_lines_queued``: lines not yet answered in the batches this gateway runs
  (refreshed at each scan);
- ``gateway_batch_lines_in_flight``: lines being answered now (planned, submitted, followed);
- ``gateway_batch_lines_total{outcome}``: lines ended, ``done`` (in the output), ``failed``
  (in the error file), and tries ``retried``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = ("done", "failed", "retried")


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    queued: Gauge
    in_flight: Gauge
    lines: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> BatchMetrics:
        reg = registry or CollectorRegistry()
        metrics = cls(
            queued=Gauge(
                "gateway_batch_lines_queued",
                "Lines not yet answered in the batches this gateway runs.",
                multiprocess_mode="livesum",
                registry=reg,
            ),
            in_flight=Gauge(
                "gateway_batch_lines_in_flight",
                "Batch lines being answered now (planned, submitted or followed).",
                multiprocess_mode="livesum",
                registry=reg,
            ),
            lines=Counter(
                "gateway_batch_lines_total",
                "Batch lines ended (done: answered; failed: in the error file) or retried.",
                ["outcome"],
                registry=reg,
            ),
        )
        for outcome in OUTCOMES:
            metrics.lines.labels(outcome=outcome)
        return metrics

    def count(self, outcome: str) -> None:
        self.lines.labels(outcome=outcome).inc()
