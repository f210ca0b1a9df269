"""``/healthz`` and ``/readyz`` in process: draining and an unreachable upstream make it unready."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from gateway.config import Settings
from gateway.runtime import Runtime
from tests.inprocess import client as http_client
from tests.inprocess import started


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings() -> Settings:
    return Settings.model_validate(
        {
            "upstream": {
                "base_url": f"http://127.0.0.1:{closed_port()}",
                "connect_timeout": 1.0,
                "circuit_breaker": {"failure_threshold": 100},
            },
            "models": [{"name": "gemma-2b", "tag": "gemma:2b"}],
            "keys": [{"name": "alice", "key": "sk-test-alice-0123", "upstream_token": "tok-a"}],
            "ledger": {"url": "sqlite:///:memory:"},
        }
    )


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    async with started(settings()) as application:
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(app) as http:
        yield http


def runtime(app: Starlette) -> Runtime:
    rt: Runtime = app.state.runtime
    return rt


async def test_healthz_answers_whatever_the_upstream_does(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_while_the_upstream_answered_recently(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    runtime(app).note_upstream("ok")
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"config": True, "accepting": True, "upstream": True},
        # Informational only: they never decide readiness.
        "dependencies": {"ledger": True, "keys_db": True},
    }


async def test_unready_when_the_upstream_cannot_be_reached(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    response = await client.get("/readyz")  # never reached: probed, connection refused
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unready"
    assert body["checks"]["upstream"] is False and body["checks"]["config"] is True


async def test_a_failed_call_after_a_success_triggers_a_probe(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    rt = runtime(app)
    rt.note_upstream("ok")
    assert (await client.get("/readyz")).status_code == 200
    rt.note_upstream("connect_error")
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["upstream"] is False
    # An answered call, even a refusal, means the service is up again.
    rt.note_upstream("rejected")
    assert (await client.get("/readyz")).status_code == 200


async def test_a_stale_success_is_probed_again(app: Starlette, client: httpx.AsyncClient) -> None:
    rt = runtime(app)
    rt.last_upstream_ok = time.monotonic() - 3600
    assert (await client.get("/readyz")).status_code == 503


async def test_draining_makes_it_unready(app: Starlette, client: httpx.AsyncClient) -> None:
    rt = runtime(app)
    rt.note_upstream("ok")
    rt.begin_drain()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"config": True, "accepting": False, "upstream": True}
    assert (await client.get("/healthz")).status_code == 200
