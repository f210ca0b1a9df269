"""A wrong upstream is visible in the server log: one line per kind of failure, with the host,
what happened and a hint, rate-limited and without the token (issue 27, item 6)."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.failurelog import FailureLog

TOKEN = "upstream-secret-token-0123456789"


def answering(status: int) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, text="Method Not Allowed"))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.upstream"]


async def test_a_base_url_with_a_wrong_path_is_said_once_with_a_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.upstream")
    client = JobsClient(
        UpstreamSettings(base_url="http://jobs.example:8090/v1"),
        "http://jobs.example:8090/v1",
        transport=answering(405),
    )
    try:
        for _ in range(3):
            with pytest.raises(UpstreamFailure):
                await client.submit(TOKEN, ["hello"], "gemma:2b")
    finally:
        await client.aclose()
    (line,) = warnings(caplog)
    assert "upstream submit call to http://jobs.example:8090/v1 failed" in line
    assert "HTTP 405" in line and "is upstream.base_url right?" in line
    assert TOKEN not in caplog.text


def test_each_kind_of_failure_is_said_again_after_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.upstream")
    now = [0.0]
    log = FailureLog("http://127.0.0.1:9/", interval=60, clock=lambda: now[0])
    refused = UpstreamFailure("connect_error", "cannot connect (ConnectError)", reached=False)
    denied = UpstreamFailure("http_error", "HTTP 401", status_code=401)
    for _ in range(5):
        log.note("status", refused)
    log.note("submit", denied)
    now[0] = 61.0
    log.note("status", refused)
    lines = warnings(caplog)
    assert len(lines) == 3, lines
    assert "nothing answers there" in lines[0] and "check upstream_token" in lines[1]
    assert "(4 more like it since the last line)" in lines[2]
    log.note("submit", UpstreamFailure("circuit_open", "open", reached=False))
    assert len(warnings(caplog)) == 3  # no call was made: nothing new to say
