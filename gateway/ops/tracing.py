"""OpenTelemetry traces: one per completion request, exported over OTLP/HTTP (optional).

Off by default, and then OpenTelemetry is not even imported: :func:`build_tracing` returns
:class:`NoTracing`. With ``tracing.otlp_endpoint`` set (and the ``otel`` extra installed:
``pip install -e '.[otel]'``) each finished exchange becomes a trace, built afterwards from the
instants the request lifecycle marked on its :class:`~gateway.http.exchange.Exchange`, so the
data path carries no tracing code beyond those marks::

    chat gemma-2b                      SERVER span: GenAI attributes, status, job ids
    ├── admission                      per-key limits and budgets
    ├── job slot wait                  the upstream account's cap of jobs in flight
    ├── submission                     the jobs API's submit call
    ├── queued upstream                submitted until the log's first text
    ├── generation                     first text (event "first_token") until the last
    └── answer                         the last event until the answer is written

The client's W3C ``traceparent`` (and ``tracestate``) is continued: the trace links to the
client's. Whether it is sampled is the gateway's own decision (``sample_ratio`` on the trace
id), never the client's flag, unless ``tracing.trust_client_sampling`` is on: otherwise any
client could make every request it sends cost a trace. Spans go out from the
SDK's batch processor on its own thread: exporting never blocks the event loop. No prompt or
output text is recorded unless ``logging.log_prompts`` is on (then the prompt is).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from gateway.config import TracingSettings
    from gateway.http.exchange import Exchange

logger = logging.getLogger("gateway.tracing")
GEN_AI_SYSTEM = "distributed_llm_service"
#: The child spans: (name, mark where it starts, mark where it ends).
PHASES = (
    ("admission", "planned", "admitted"),
    ("job slot wait", "admitted", "slot"),
    ("submission", "slot", "submitted"),
    ("queued upstream", "submitted", "first_text"),
    ("generation", "first_text", "generated"),
    ("answer", "generated", "finished"),
)
_OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion"}


class RequestTracing(Protocol):
    """What the runtime calls: once per finished exchange, and once at shutdown."""

    def record(self, exchange: Exchange) -> None: ...

    def close(self) -> None: ...


class NoTracing:
    """Tracing off: nothing recorded, nothing imported."""

    def record(self, exchange: Exchange) -> None:
        return None

    def close(self) -> None:
        return None


def traces_url(endpoint: str) -> str:
    """A collector's base URL gets OTLP/HTTP's ``/v1/traces``; a full URL is kept."""
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


def sampler(ratio: float, trust_client: bool) -> Any:
    """The gateway's ratio on the trace id; the parent's flag decides only when trusted."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    own = TraceIdRatioBased(ratio)
    return ParentBased(own) if trust_client else own


def build_tracing(settings: TracingSettings, log_prompts: bool) -> RequestTracing:
    if settings.otlp_endpoint is None:
        return NoTracing()
    return OtelTracing(settings, log_prompts)


class OtelTracing:
    """Spans through the OpenTelemetry SDK, to one OTLP/HTTP endpoint."""

    def __init__(self, settings: TracingSettings, log_prompts: bool) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from gateway import __version__

        assert settings.otlp_endpoint is not None
        self.log_prompts = log_prompts
        self.provider = TracerProvider(
            resource=Resource.create(
                {"service.name": settings.service_name, "service.version": __version__}
            ),
            sampler=sampler(settings.sample_ratio, settings.trust_client_sampling),
        )
        exporter = OTLPSpanExporter(
            endpoint=traces_url(settings.otlp_endpoint), headers=dict(settings.headers)
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=2000))
        self.tracer = self.provider.get_tracer("gateway", __version__)
        self.propagator = TraceContextTextMapPropagator()

    def record(self, exchange: Exchange) -> None:
        try:
            self._record(exchange)
        except Exception:  # a tracing bug must never fail a request
            logger.exception("could not record the request's trace")

    def _record(self, exchange: Exchange) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        marks = dict(exchange.marks)
        start = exchange.epoch_ns(exchange.started)
        end = exchange.epoch_ns(marks.get("finished", exchange.started))
        parent = self.propagator.extract(exchange.trace_headers)
        operation = _OPERATIONS.get(exchange.route, "chat")
        root = self.tracer.start_span(
            f"{operation} {exchange.model or '-'}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=start,
            attributes=self._attributes(exchange, operation),
        )
        if exchange.status >= 500:
            root.set_status(Status(StatusCode.ERROR, exchange.outcome))
        inside = trace.set_span_in_context(root)
        for name, begins, ends in PHASES:
            if begins in marks and ends in marks:
                span = self.tracer.start_span(
                    name, context=inside, start_time=exchange.epoch_ns(marks[begins])
                )
                if name == "generation":
                    span.add_event("first_token", timestamp=exchange.epoch_ns(marks[begins]))
                span.end(end_time=exchange.epoch_ns(marks[ends]))
        root.end(end_time=end)

    def _attributes(self, exchange: Exchange, operation: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.system": GEN_AI_SYSTEM,
            "gen_ai.operation.name": operation,
            "gen_ai.usage.input_tokens": exchange.prompt_tokens,
            "gen_ai.usage.output_tokens": exchange.completion_tokens,
            "gateway.job_ids": list(exchange.job_ids),
            "gateway.request_id": exchange.request_id,
            "gateway.outcome": exchange.outcome,
            "gateway.stream": exchange.stream,
            "http.route": exchange.route,
            "http.response.status_code": exchange.status,
        }
        if exchange.model is not None:
            attributes["gen_ai.request.model"] = exchange.model
            attributes["gen_ai.response.model"] = exchange.model
        if exchange.key_name is not None:
            attributes["gateway.key"] = exchange.key_name  # the key's name, never the secret
        if self.log_prompts and exchange.prompt_text is not None:
            attributes["gen_ai.prompt"] = exchange.prompt_text
        return attributes

    def close(self) -> None:
        """Export what is left (blocking: run it off the event loop)."""
        self.provider.shutdown()
