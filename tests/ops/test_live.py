"""The live view's memory stays bounded, and its figures say what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.config import Settings
from gateway.http.exchange import Exchange
from gateway.ops.recent import FAILURES, SAMPLES, LiveView, circuit_state, percentile
from gateway.upstream.breaker import CircuitBreaker
from tests.inprocess import client as http_client
from tests.inprocess import started

ADMIN = "sk-test-admin-0123456789"


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_rings_are_bounded() -> None:
    view = LiveView()
    for i in range(SAMPLES + 10):
        view.observe_upstream("ok" if i % 2 else "timeout", 0.01)
    for i in range(FAILURES + 10):
        failed = Exchange(f"req_{i}", "/v1/chat/completions", key_name="alice")
        failed.status, failed.outcome = 429, "rate_limited"
        view.finished(failed)
    assert len(view.samples) == SAMPLES
    assert len(view.failures) == FAILURES
    upstream = view.upstream()
    assert upstream["calls_recent"] == SAMPLES
    assert upstream["errors_recent"] == SAMPLES // 2
    assert view.failures[-1]["key"] == "alice"


def test_jobs_show_queued_then_generating_and_leave_when_finished() -> None:
    view = LiveView()
    exchange = Exchange("req_1", "/v1/chat/completions", key_name="bob", model="gemma-2b")
    exchange.job_ids = ["a" * 32]
    view.following(exchange)
    assert [j["state"] for j in view.jobs(60)] == ["queued"]
    exchange.mark_text()
    assert [j["state"] for j in view.jobs(60)] == ["generating"]
    view.finished(exchange)
    assert view.jobs(60) == []
    assert list(view.failures) == []  # a 200 is no failure


def test_two_requests_with_one_client_request_id_are_both_listed() -> None:
    view = LiveView()
    first, second = (Exchange("req_same", "/v1/chat/completions") for _ in range(2))
    first.job_ids, second.job_ids = ["c" * 32], ["d" * 32]
    view.following(first)
    view.following(second)
    view.finished(first)
    assert [j["job_id"] for j in view.jobs(60)] == ["d" * 32]


def test_an_exchange_that_never_finished_is_dropped_when_stale() -> None:
    view = LiveView()
    exchange = Exchange("req_1", "/v1/chat/completions")
    exchange.job_ids = ["b" * 32]
    exchange.started -= 100
    view.following(exchange)
    assert view.jobs(stale_after=50) == []
    assert view.open == {}


def test_circuit_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(1, 10.0, clock=lambda: now[0])
    assert circuit_state(breaker) == "closed"
    breaker.failure()
    assert circuit_state(breaker) == "open"
    now[0] = 11.0
    assert circuit_state(breaker) == "half_open"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.model_validate(
        {
            "upstream": {"base_url": "http://127.0.0.1:9", "max_jobs_per_token": 3},
            "models": [{"name": "gemma-2b", "tag": "gemma:2b"}],
            "keys": [
                {
                    "name": "alice",
                    "key": "sk-test-alice-0123",
                    "upstream_token": "tok-secret-a",
                    "rpm": 7,
                    "daily_tokens": 1000,
                }
            ],
            "ledger": {"url": "sqlite:///:memory:"},
            "admin": {"key": ADMIN},
        }
    )
    async with started(settings) as app, http_client(app) as http:
        yield http


async def test_admin_live_needs_an_admin_key_and_names_no_token(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/admin/live")).status_code == 401
    user = await client.get("/admin/live", headers={"authorization": "Bearer sk-test-alice-0123"})
    assert user.status_code in (401, 403)
    answer = await client.get("/admin/live", headers={"authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200
    live = answer.json()
    assert live["accounts"] == [
        {
            "account": "alice",
            "jobs_in_flight": 0,
            "queued": 0,
            "max_jobs": 3,
            "status_requests_per_tick": 0,
            "circuit": "closed",
        }
    ]
    assert live["jobs"] == [] and live["recent_failures"] == []
    assert "tok-secret-a" not in answer.text


async def test_own_usage_states_the_keys_limits(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/usage", headers={"authorization": "Bearer sk-test-alice-0123"})
    assert answer.status_code == 200
    limits = answer.json()["limits"]
    assert limits["rpm"] == 7 and limits["daily_tokens"] == 1000
    assert limits["tpm"] is None and limits["models"] is None
    assert "tok-secret-a" not in answer.text and "sk-test-alice" not in answer.text
