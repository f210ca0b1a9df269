"""End to end: a client that leaves before its answer ends is still charged (issue 12, item 6).

The upstream has no cancel, so a departed client's job runs on; the gateway charges such a
request at least its admission estimate. A gateway of this module's own, with keys whose
tokens-per-minute limit holds two abandoned requests but not a third.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.servers import ALICE_TOKEN, Server, gateway_config, start_gateway

STREAM_KEY = "sk-test-leaver-stream-0123456789"
JSON_KEY = "sk-test-leaver-json-0123456789"
LIMITED_KEY = "sk-test-leaver-capped-0123456789"
ESTIMATE = 256  # limits.completion_estimate (the default): completion tokens assumed
TPM = 700  # two requests of ~20 prompt tokens + 256 fit, a third does not
LONG = "[[emulate:words 400]] [[emulate:wps 10]] Tell me a long story."
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keys = [
        {"name": name, "key": secret, "upstream_token": ALICE_TOKEN, "tpm": TPM}
        for name, secret in (("stream", STREAM_KEY), ("json", JSON_KEY), ("capped", LIMITED_KEY))
    ]
    gateway = start_gateway(
        tmp_path_factory.mktemp("abandoned"), gateway_config(emulator.url, keys=keys)
    )
    try:
        yield gateway
    finally:
        gateway.stop()


def _body(stream: bool, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": LONG}]
    return {"model": "gemma-2b", "messages": messages, "stream": stream, **extra}


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _leave(server: Server, key: str, stream: bool, **extra: Any) -> None:
    """Send a request for a long answer and leave before it ends."""
    if stream:
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST", server.url + CHAT, json=_body(True, **extra), headers=_auth(key)
            ) as answer,
        ):
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # some text came: leave
        return
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(server.url + CHAT, json=_body(False, **extra), headers=_auth(key), timeout=0.8)


def _access_lines(server: Server, key_name: str, count: int) -> list[dict[str, Any]]:
    """The access lines of ``key_name``, once there are ``count``."""
    deadline = time.monotonic() + 15
    while True:
        lines = []
        for raw in server.output().splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("logger") == "gateway.access" and line.get("key") == key_name:
                    lines.append(line)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("key", "name", "stream"), [(STREAM_KEY, "stream", True), (JSON_KEY, "json", False)]
)
def test_abandoned_requests_are_charged_their_estimate(
    server: Server, key: str, name: str, stream: bool
) -> None:
    _leave(server, key, stream)
    _leave(server, key, stream)
    lines = _access_lines(server, name, 2)
    assert [line["outcome"] for line in lines] == ["abandoned", "abandoned"], lines
    assert all(line["status"] == 499 for line in lines)
    assert all(line["completion_tokens"] >= ESTIMATE for line in lines), lines
    # The tokens-per-minute window holds both charges: a third request does not fit.
    third = httpx.post(server.url + CHAT, json=_body(False), headers=_auth(key), timeout=30)
    assert third.status_code == 429, third.text
    assert "token" in third.json()["error"]["message"].lower()


def test_an_abandoned_request_with_max_tokens_is_charged_max_tokens(server: Server) -> None:
    _leave(server, LIMITED_KEY, True, max_tokens=300)
    (line,) = _access_lines(server, "capped", 1)
    assert line["outcome"] == "abandoned"
    assert line["completion_tokens"] == 300
