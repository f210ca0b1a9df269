"""OpenTelemetry traces, end to end: a real gateway exports to a real OTLP/HTTP receiver.

The receiver is a small HTTP server started by the test, decoding each export with
opentelemetry-proto as a collector would. With tracing off, OpenTelemetry is never imported.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.e2e.servers import ALICE_KEY, Server, gateway_config, running, start_gateway

pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra")
trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2", reason="needs opentelemetry-proto"
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECRET_PROMPT = "walrus-kumquat-5512 is the prompt"


class Receiver:
    """An OTLP/HTTP traces endpoint on loopback, keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = trace_service.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.paths.append(self.path)
                for resource_spans in request.resource_spans:
                    receiver.resources.append(attributes(resource_spans.resource.attributes))
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend(scope_spans.spans)
                answer = trace_service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        value = item.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[item.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[item.key] = getattr(value, kind)
    return out


@pytest.fixture(scope="module")
def traced(
    emulator: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Receiver]]:
    receiver = Receiver()
    config = gateway_config(
        emulator.url, tracing={"otlp_endpoint": receiver.url, "service_name": "gateway-under-test"}
    )
    try:
        with running(start_gateway(tmp_path_factory.mktemp("traced"), config)) as server:
            yield server, receiver
    finally:
        receiver.close()


def test_the_clients_sampled_flag_links_but_does_not_decide(
    traced: tuple[Server, Receiver],
) -> None:
    """Not sampled by the client, yet recorded at the gateway's ratio (1.0), in its trace."""
    gateway, receiver = traced
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "gemma-2b", "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "Authorization": f"Bearer {ALICE_KEY}",
            "traceparent": f"00-{trace_id}-{PARENT_ID}-00",
        },
        timeout=30,
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 15
    while not (roots := [s for s in list(receiver.spans) if s.trace_id.hex() == trace_id]):
        assert time.monotonic() < deadline, "the request was not traced"
        time.sleep(0.1)
    root = next(s for s in roots if s.name == "chat gemma-2b")
    assert root.parent_span_id.hex() == PARENT_ID


def test_a_streamed_request_is_one_trace_continuing_the_clients(
    traced: tuple[Server, Receiver],
) -> None:
    gateway, receiver = traced
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={
            "model": "gemma-2b",
            "stream": True,
            "messages": [{"role": "user", "content": SECRET_PROMPT}],
        },
        headers={
            "Authorization": f"Bearer {ALICE_KEY}",
            "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
        },
        timeout=30,
    )
    assert answer.status_code == 200 and "data: [DONE]" in answer.text
    job_id = answer.headers["x-job-id"]

    def ours() -> list[Any]:
        return [s for s in list(receiver.spans) if s.trace_id.hex() == TRACE_ID]

    deadline = time.monotonic() + 15
    while len(ours()) < 7:
        assert time.monotonic() < deadline, [s.name for s in ours()]
        time.sleep(0.1)
    spans = {s.name: s for s in ours()}
    root = spans["chat gemma-2b"]
    assert root.parent_span_id.hex() == PARENT_ID  # the client's trace, continued
    assert root.kind == root.SPAN_KIND_SERVER
    children = [
        "admission",
        "job slot wait",
        "submission",
        "queued upstream",
        "generation",
        "answer",
    ]
    assert set(spans) == {"chat gemma-2b", *children}
    for name in children:
        span = spans[name]
        assert span.parent_span_id == root.span_id, name
        assert root.start_time_unix_nano <= span.start_time_unix_nano, name
        assert span.start_time_unix_nano <= span.end_time_unix_nano <= root.end_time_unix_nano
    starts = [spans[name].start_time_unix_nano for name in children]
    assert starts == sorted(starts)  # the steps in the order the request took them
    generation = spans["generation"]
    assert [e.name for e in generation.events] == ["first_token"]

    attrs = attributes(root.attributes)
    assert attrs["gen_ai.system"] == "distributed_llm_service"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gemma-2b"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gateway.job_ids"] == [job_id]
    assert attrs["http.response.status_code"] == 200
    assert attrs["gateway.key"] == "alice"
    everything = str([list(s.attributes) for s in ours()])
    assert SECRET_PROMPT not in everything and ALICE_KEY not in everything
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert {"service.name": "gateway-under-test"}.items() <= receiver.resources[0].items()


def test_with_tracing_off_opentelemetry_is_not_even_imported() -> None:
    """A whole request through the app in process, then a look at what was imported.

    What the gateway's tracing loads (the SDK's tracer, the exporter, the W3C propagator) must
    be absent. (redis-py's own optional observability imports the OpenTelemetry API and
    metrics SDK when they are installed, whatever the gateway does; that is not ours.)"""
    script = """
import asyncio, sys
from gateway.config import parse_settings
from tests.inprocess import client, started

async def main():
    async with started(parse_settings({})) as app, client(app) as http:
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": "gemma-2b", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer sk-gateway-demo"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text

asyncio.run(main())
ours = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.trace.propagation.")
print(sorted(m for m in sys.modules if m.startswith(ours)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
