"""The gateway's middleware on a small app over ASGITransport: in-flight counts for /metrics,
the header guard, the request id and the access line, in one ASGI hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.ops.metrics import Metrics, render_latest
from gateway.ops.middleware import GatewayMiddleware


def _value(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def _app(metrics: Metrics, seen: dict[str, float]) -> Starlette:
    async def plain(request: Request) -> Response:
        seen["requests"] = _value(metrics, "gateway_requests_in_flight")
        return JSONResponse({"ok": True})

    async def events(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            seen["streams"] = _value(metrics, "gateway_streams_active")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    return Starlette(
        routes=[
            Route("/v1/plain", plain),
            Route("/v1/events", events),
            Route("/v1/broken", broken),
            Route("/healthz", plain),
        ],
        middleware=[Middleware(GatewayMiddleware, metrics=metrics)],
    )


async def test_requests_and_streams_are_counted_while_in_flight_only() -> None:
    metrics = Metrics.create(CollectorRegistry())
    seen: dict[str, float] = {}
    transport = httpx.ASGITransport(app=_app(metrics, seen), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/v1/plain")).status_code == 200
        assert seen["requests"] == 1
        answer = await client.get("/v1/events")
        assert answer.text.endswith("[DONE]\n\n")
        assert seen["streams"] == 1
        assert (await client.get("/v1/broken")).status_code == 500
        await client.get("/healthz")  # probes are not API requests
    assert seen["requests"] == 0
    assert _value(metrics, "gateway_requests_in_flight") == 0
    assert _value(metrics, "gateway_streams_active") == 0


async def test_the_task_count_is_exported_when_rendered_on_the_loop() -> None:
    metrics = Metrics.create()
    _app(metrics, {}).build_middleware_stack()
    blockers = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    try:
        text = render_latest(metrics)[0].decode()
        line = next(x for x in text.splitlines() if x.startswith("gateway_event_loop_tasks "))
        assert float(line.split()[1]) >= 4  # this test's task and the three blockers
    finally:
        for task in blockers:
            task.cancel()


def test_a_second_app_on_the_same_metrics_does_not_clash() -> None:
    metrics = Metrics.create(CollectorRegistry())
    _app(metrics, {}).build_middleware_stack()
    _app(metrics, {}).build_middleware_stack()  # no "Duplicated timeseries" error


async def test_a_header_that_must_be_single_and_is_not_gets_a_400() -> None:
    metrics = Metrics.create(CollectorRegistry())
    transport = httpx.ASGITransport(app=_app(metrics, {}))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get(
            "/v1/plain", headers=[("authorization", "Bearer a"), ("authorization", "Bearer b")]
        )
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "duplicate_header" and "authorization" in error["message"]
        single = await client.get("/v1/plain", headers={"authorization": "Bearer a"})
        assert single.status_code == 200
        assert seen_ids(answer) == seen_ids(single) == 1


def seen_ids(answer: httpx.Response) -> int:
    """How many ids the answer carries, under both names, all equal."""
    ids = answer.headers.get_list("x-request-id")
    assert ids == answer.headers.get_list("request-id")
    return len(ids)


async def test_every_answer_carries_the_request_id_the_client_sent_if_sane() -> None:
    metrics = Metrics.create(CollectorRegistry())
    transport = httpx.ASGITransport(app=_app(metrics, {}), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        mine = await client.get("/v1/plain", headers={"x-request-id": "trace-1.2:3"})
        assert mine.headers["x-request-id"] == mine.headers["request-id"] == "trace-1.2:3"
        insane = await client.get("/v1/plain", headers={"x-request-id": "a b\x01"})
        assert insane.headers["x-request-id"].startswith("req_")
        missing = await client.get("/nowhere")
        assert missing.status_code == 404 and missing.headers["x-request-id"].startswith("req_")
        stream = await client.get("/v1/events")
        assert seen_ids(stream) == 1


async def test_the_access_line_names_the_route_status_and_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics.create(CollectorRegistry())
    transport = httpx.ASGITransport(app=_app(metrics, {}))
    with caplog.at_level("INFO", logger="gateway.access"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/v1/plain", headers={"x-request-id": "line-1"})
            await client.get(
                "/v1/plain",
                headers=[("x-api-key", "a"), ("x-api-key", "b"), ("x-request-id", "r2")],
            )
    lines = [r.__dict__ for r in caplog.records if r.name == "gateway.access"]
    assert [(x["request_id"], x["route"], x["status"]) for x in lines] == [
        ("line-1", "/v1/plain", 200),
        ("r2", "(unknown route)", 400),
    ]
