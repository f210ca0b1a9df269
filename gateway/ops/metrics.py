"""Prometheus instruments: one :class:`Metrics` object per process, rendered by ``/metrics``.

Every instrument lives on a registry handed to :meth:`Metrics.create` (a fresh private one by
default), never on prometheus-client's global registry, so tests and several apps in one process
do not collide.

Several worker processes (``gateway serve --workers N``) need prometheus-client's multiprocess
mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable directory *before* the workers start
(prometheus-client decides the mode when it is first imported). Each process then writes its
values to memory-mapped files in that directory and :func:`render_latest` merges all of them.
Counters and histograms are summed over processes; gauges say how in their ``multiprocess_mode``
(``livesum`` for counts of things in progress, ``livemax`` for flags), and ``live*`` gauges of a
process vanish once :meth:`Metrics.mark_process_dead` has run for it. Clear the directory when the
server starts (:func:`prepare_multiprocess_dir`): stale files from an earlier run would otherwise
be counted again.

Labels stay low-cardinality: ``route`` is the route template, ``model`` a configured model name,
``key`` a key's configured *name* and ``account`` a name given to an upstream token. A key, a
token or any other secret is never a label value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    multiprocess,
    platform_collector,
    process_collector,
    values,
)
from prometheus_client.context_managers import InprogressTracker
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics import MetricWrapperBase

UpstreamKind = Literal["submit", "status"]
#: ``cancelled``: the call was abandoned by the gateway (the client left, a probe timed out).
UpstreamOutcome = Literal[
    "ok", "http_error", "timeout", "connect_error", "bad_response", "rejected", "cancelled"
]

UPSTREAM_KINDS: tuple[str, ...] = get_args(UpstreamKind)
UPSTREAM_OUTCOMES: tuple[str, ...] = get_args(UpstreamOutcome)

#: Whole requests: a job can queue on a volunteer network and then generate for minutes.
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 240, 300, 450, 600)
#: Time to first token and queue wait: seconds to minutes.
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600)
#: One HTTP call to the jobs API.
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Job ids carried by one coalesced status request.
STATUS_ID_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
#: Inputs carried by one submission (batching at work).
SUBMIT_INPUT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

PACKAGE = "llm-gateway"


def multiprocess_enabled() -> bool:
    """True when prometheus-client stores values in ``PROMETHEUS_MULTIPROC_DIR`` files.

    Asks prometheus-client itself rather than the environment: the mode is fixed when the
    library is imported, so setting the variable later changes nothing.
    """
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def use_single_process_mode() -> None:
    """One worker has nothing to merge: keep metric values in memory, as prometheus-client does
    without ``PROMETHEUS_MULTIPROC_DIR``, even where the variable is set (the image sets it).

    Its multiprocess mode writes every observation to a memory-mapped file under a lock; the
    mode is chosen when the library is imported, so it is switched here, before any metric of
    this process is created (:meth:`Metrics.create`).
    """
    values.ValueClass = values.MutexValue


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` if needed and delete metric files left by an earlier run.

    Call it in the parent process before starting workers, never while workers run.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def _package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Metrics:
    """Every instrument the gateway exports, plus short helpers for the common call sites."""

    registry: CollectorRegistry
    multiprocess: bool
    requests: Counter
    request_duration: Histogram
    time_to_first_token: Histogram
    queue_wait: Histogram
    upstream_requests: Counter
    upstream_duration: Histogram
    jobs_in_flight: Gauge
    status_request_ids: Histogram
    rate_limited: Counter
    shared_polling: Counter
    tokens: Counter
    streams_active: Gauge
    log_rewrites: Counter
    limits_degraded: Gauge
    ledger_dropped: Counter
    slot_wait: Histogram
    keys_store_up: Gauge
    keys_loaded: Gauge
    circuit_open: Gauge
    build_info: Gauge
    submission_inputs: Histogram
    cache_lookups: Counter
    cache_bytes: Counter
    shared_joins: Counter
    jobs_saved: Counter
    tokens_saved: Counter
    #: Labelled children by metric and label values (as many as the registry holds).
    children: dict[tuple[int, tuple[str, ...]], Any] = field(
        default_factory=dict, repr=False, compare=False
    )

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: prometheus-client checks and joins the
        values on every call (1.2-1.8 us here, and a request makes about eight)."""
        key = (id(metric), values)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*values)
        return found

    @classmethod
    def create(
        cls, registry: CollectorRegistry | None = None, *, version: str | None = None
    ) -> Metrics:
        """Build the instruments on ``registry``.

        With no registry a private one is made, with the process, platform and GC collectors
        when in single-process mode (in multiprocess mode those would describe one worker only).
        """
        mp = multiprocess_enabled()
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            if not mp:
                process_collector.ProcessCollector(registry=registry)
                platform_collector.PlatformCollector(registry=registry)
                gc_collector.GCCollector(registry=registry)
        reg = registry
        metrics = cls(
            registry=reg,
            multiprocess=mp,
            requests=Counter(
                "gateway_requests_total",
                "Requests answered, by route template, model, key name and HTTP status.",
                ["route", "model", "key", "status"],
                registry=reg,
            ),
            request_duration=Histogram(
                "gateway_request_duration_seconds",
                "Time from request received to the last byte of the answer.",
                ["route", "model"],
                buckets=REQUEST_BUCKETS,
                registry=reg,
            ),
            time_to_first_token=Histogram(
                "gateway_time_to_first_token_seconds",
                "Time from request received to the first generated text.",
                ["model"],
                buckets=WAIT_BUCKETS,
                registry=reg,
            ),
            queue_wait=Histogram(
                "gateway_queue_wait_seconds",
                "Time from job submission until the job starts or its log first shows text.",
                ["model"],
                buckets=WAIT_BUCKETS,
                registry=reg,
            ),
            upstream_requests=Counter(
                "gateway_upstream_requests_total",
                "HTTP calls to the jobs API by kind (submit, status) and outcome.",
                ["kind", "outcome"],
                registry=reg,
            ),
            upstream_duration=Histogram(
                "gateway_upstream_request_duration_seconds",
                "Duration of HTTP calls to the jobs API.",
                ["kind"],
                buckets=UPSTREAM_BUCKETS,
                registry=reg,
            ),
            jobs_in_flight=Gauge(
                "gateway_jobs_in_flight",
                "Upstream jobs submitted and not yet finished, per upstream account name.",
                ["account"],
                multiprocess_mode="livesum",
                registry=reg,
            ),
            status_request_ids=Histogram(
                "gateway_status_request_ids",
                "Job ids carried by one status request (coalescing at work).",
                buckets=STATUS_ID_BUCKETS,
                registry=reg,
            ),
            shared_polling=Counter(
                "gateway_shared_polling_events_total",
                "Shared polling (Redis): leases taken after another process held them, leases "
                "lost to another process, and relayed jobs with a gap asked of the upstream.",
                ["event"],
                registry=reg,
            ),
            rate_limited=Counter(
                "gateway_rate_limited_total",
                "Requests refused by a limit, by key name and reason.",
                ["key", "reason"],
                registry=reg,
            ),
            tokens=Counter(
                "gateway_tokens_total",
                "Tokens counted, by key name, model and direction (prompt, completion).",
                ["key", "model", "direction"],
                registry=reg,
            ),
            streams_active=Gauge(
                "gateway_streams_active",
                "Server-sent event streams open to clients.",
                multiprocess_mode="livesum",
                registry=reg,
            ),
            log_rewrites=Counter(
                "gateway_log_rewrites_total",
                "Times a job log was rewritten rather than appended to.",
                registry=reg,
            ),
            limits_degraded=Gauge(
                "gateway_limits_degraded",
                "1 while Redis is unreachable and the limits failure policy applies.",
                multiprocess_mode="livemax",
                registry=reg,
            ),
            ledger_dropped=Counter(
                "gateway_ledger_dropped_total",
                "Usage records lost: held rows past ledger.queue_size (and the spill file) "
                "during a database outage, a row the database refused alone, or rows still "
                "held at shutdown.",
                registry=reg,
            ),
            slot_wait=Histogram(
                "gateway_job_slot_wait_seconds",
                "Time a request waited for its upstream account's job cap, by key.",
                ["key"],
                buckets=WAIT_BUCKETS,
                registry=reg,
            ),
            keys_store_up=Gauge(
                "gateway_keys_store_up",
                "1 while the key database answers; 0: serving the keys loaded before.",
                multiprocess_mode="livemin",
                registry=reg,
            ),
            keys_loaded=Gauge(
                "gateway_keys_loaded",
                "Database keys held in memory (revoked ones included).",
                multiprocess_mode="livemax",
                registry=reg,
            ),
            circuit_open=Gauge(
                "gateway_circuit_open",
                "1 while the circuit breaker for an upstream account is open.",
                ["account"],
                multiprocess_mode="livemax",
                registry=reg,
            ),
            build_info=Gauge(
                "gateway_build_info",
                "Always 1; the version label names the running gateway.",
                ["version"],
                multiprocess_mode="livemax",
                registry=reg,
            ),
            submission_inputs=Histogram(
                "gateway_submission_inputs",
                "Inputs (one job each) carried by one POST /jobs (batching at work).",
                buckets=SUBMIT_INPUT_BUCKETS,
                registry=reg,
            ),
            cache_lookups=Counter(
                "gateway_cache_lookups_total",
                "Response cache lookups by result (hit, miss).",
                ["result"],
                registry=reg,
            ),
            cache_bytes=Counter(
                "gateway_cache_bytes_total",
                "Bytes of stored answers served from the cache (hit) and written to it (store).",
                ["op"],
                registry=reg,
            ),
            shared_joins=Counter(
                "gateway_shared_joins_total",
                "Requests that joined the upstream jobs of an identical request in flight.",
                registry=reg,
            ),
            jobs_saved=Counter(
                "gateway_upstream_jobs_saved_total",
                "Upstream jobs not created thanks to cache hits and shared jobs.",
                registry=reg,
            ),
            tokens_saved=Counter(
                "gateway_cache_tokens_saved_total",
                "Tokens (prompt + completion) answered from the cache instead of the grid.",
                ["key", "model"],
                registry=reg,
            ),
        )
        metrics.build_info.labels(version=version or _package_version()).set(1)
        for kind in UPSTREAM_KINDS:
            metrics.upstream_duration.labels(kind=kind)
            for outcome in UPSTREAM_OUTCOMES:
                metrics.upstream_requests.labels(kind=kind, outcome=outcome)
        for result in ("hit", "miss"):
            metrics.cache_lookups.labels(result=result)
        return metrics

    def observe_request(
        self, route: str, model: str, key: str, status: int, seconds: float
    ) -> None:
        """Count one finished request and record its total duration."""
        self.child(self.requests, route, model, key, str(status)).inc()
        self.child(self.request_duration, route, model).observe(seconds)

    def observe_ttft(self, model: str, seconds: float) -> None:
        self.child(self.time_to_first_token, model).observe(seconds)

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        self.child(self.queue_wait, model).observe(seconds)

    def observe_upstream(
        self, kind: UpstreamKind, outcome: UpstreamOutcome, seconds: float
    ) -> None:
        """Count one call to the jobs API and record how long it took."""
        self.child(self.upstream_requests, kind, outcome).inc()
        self.child(self.upstream_duration, kind).observe(seconds)

    def observe_status_ids(self, count: int) -> None:
        self.status_request_ids.observe(count)

    def observe_submission_inputs(self, count: int) -> None:
        self.submission_inputs.observe(count)

    def observe_cache(self, event: str, size: int) -> None:
        """One cache event: ``hit`` / ``miss`` (a lookup), ``store`` (a write), ``join``."""
        if event in ("hit", "miss"):
            self.child(self.cache_lookups, event).inc()
        if event == "join":
            self.shared_joins.inc()
        elif event in ("hit", "store"):
            self.cache_bytes.labels(op=event).inc(size)

    def count_jobs_saved(self, jobs: int) -> None:
        self.jobs_saved.inc(jobs)

    def add_tokens_saved(self, key: str, model: str, tokens: int) -> None:
        self.tokens_saved.labels(key=key, model=model).inc(max(tokens, 0))

    def set_jobs_in_flight(self, account: str, count: int) -> None:
        self.jobs_in_flight.labels(account=account).set(count)

    def count_shared_polling(self, event: str, count: int = 1) -> None:
        """``event``: lease_taken, lease_lost or gap (gateway/upstream/relay.py)."""
        self.shared_polling.labels(event=event).inc(count)

    def count_rate_limited(self, key: str, reason: str) -> None:
        self.rate_limited.labels(key=key, reason=reason).inc()

    def add_tokens(self, key: str, model: str, prompt: int, completion: int) -> None:
        """Add a request's prompt and completion tokens; zero counts still create the series."""
        self.child(self.tokens, key, model, "prompt").inc(max(prompt, 0))
        self.child(self.tokens, key, model, "completion").inc(max(completion, 0))

    def track_stream(self) -> InprogressTracker:
        """``with metrics.track_stream(): ...`` keeps ``gateway_streams_active`` up to date."""
        return self.streams_active.track_inprogress()

    def count_log_rewrite(self) -> None:
        self.log_rewrites.inc()

    def set_limits_degraded(self, degraded: bool) -> None:
        self.limits_degraded.set(1 if degraded else 0)

    def observe_slot_wait(self, key: str, seconds: float) -> None:
        self.child(self.slot_wait, key).observe(seconds)

    def set_keys_store(self, up: bool, loaded: int) -> None:
        self.keys_store_up.set(1 if up else 0)
        self.keys_loaded.set(loaded)

    def count_ledger_dropped(self, count: int = 1) -> None:
        self.ledger_dropped.inc(count)

    def set_circuit_open(self, account: str, is_open: bool) -> None:
        self.circuit_open.labels(account=account).set(1 if is_open else 0)

    def init_accounts(self, accounts: Iterable[str]) -> None:
        """Show every upstream account at zero from the start, before it has any job."""
        for account in accounts:
            self.jobs_in_flight.labels(account=account).set(0)
            self.circuit_open.labels(account=account).set(0)

    def mark_process_dead(self, pid: int | None = None) -> None:
        """Drop the live gauges of a finished worker (this one by default) in multiprocess mode."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid() if pid is None else pid)  # type: ignore[no-untyped-call]


def render_latest(metrics: Metrics) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type (Prometheus text format 0.0.4).

    In multiprocess mode the values of all processes are merged from the files in
    ``PROMETHEUS_MULTIPROC_DIR``; otherwise the metrics' own registry is rendered.
    """
    if metrics.multiprocess:
        return render_merged()
    return generate_latest(metrics.registry), CONTENT_TYPE_PLAIN_0_0_4


def render_merged() -> tuple[bytes, str]:
    """Every process's values merged from ``PROMETHEUS_MULTIPROC_DIR`` (any process may ask)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
