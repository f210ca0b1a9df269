"""Who may read /metrics: the token, and the separate port (issue 12, item 9)."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.config import parse_settings
from gateway.ops.metrics_access import MetricsServer, token_matches
from tests.inprocess import client

TOKEN = "metrics-token-0123456789"


@pytest.mark.parametrize(
    ("expected", "given", "ok"),
    [
        (None, None, True),
        (TOKEN, None, False),
        (TOKEN, "", False),
        (TOKEN, f"Bearer {TOKEN}", True),
        (TOKEN, f"bearer {TOKEN}", True),
        (TOKEN, f"Basic {TOKEN}", False),
        (TOKEN, f"Bearer {TOKEN}x", False),
        (TOKEN, "Bearer ", False),
    ],
)
def test_token_matches(expected: str | None, given: str | None, ok: bool) -> None:
    assert token_matches(expected, given) is ok


async def test_the_api_port_wants_the_token_when_one_is_set() -> None:
    app = create_app(parse_settings({"server": {"metrics_token": TOKEN}}))
    async with client(app) as http:
        refused = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
        allowed = await http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_token"
    assert "gateway_" not in refused.text
    assert allowed.status_code == 200 and "gateway_requests_total" in allowed.text


async def test_with_its_own_port_metrics_leave_the_api_port() -> None:
    app = create_app(parse_settings({"server": {"metrics_port": 0}}))
    async with client(app) as http:
        assert (await http.get("/metrics")).status_code == 404


def test_the_metrics_port_serves_metrics_behind_the_token() -> None:
    server = MetricsServer("127.0.0.1", 0, lambda: (b"gateway_x 1\n", "text/plain"), TOKEN)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(base + "/metrics").status_code == 401
        assert (
            httpx.get(base + "/other", headers={"authorization": f"Bearer {TOKEN}"}).status_code
            == 404
        )
        ok = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.text == "gateway_x 1\n"
    finally:
        server.close()
