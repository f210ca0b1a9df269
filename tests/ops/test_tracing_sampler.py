"""A client's sampled flag never forces a trace, unless the operator trusts clients."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra")

from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from gateway.ops.tracing import sampler

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def decide(ratio: float, trust: bool, client_sampled: bool) -> Decision:
    flags = TraceFlags(TraceFlags.SAMPLED if client_sampled else TraceFlags.DEFAULT)
    parent = SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=True, trace_flags=flags)
    context = set_span_in_context(NonRecordingSpan(parent))
    result = sampler(ratio, trust).should_sample(context, TRACE_ID, "chat gemma-2b")
    return result.decision


def test_the_gateway_ratio_decides_whatever_the_client_says() -> None:
    assert decide(0.0, False, client_sampled=True) == Decision.DROP
    assert decide(1.0, False, client_sampled=False) == Decision.RECORD_AND_SAMPLE


def test_trusted_clients_decide() -> None:
    assert decide(0.0, True, client_sampled=True) == Decision.RECORD_AND_SAMPLE
    assert decide(1.0, True, client_sampled=False) == Decision.DROP
