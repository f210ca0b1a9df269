"""What a client can do to the gateway before it even has a key, and what the upstream can make
it say (issue 12, items 3, 4, 7): real sockets against a real gateway and emulator.

This module runs its own emulator (faults are global to one) and a gateway with short read
timeouts and a small connection cap, so nothing here slows or disturbs other tests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import psutil
import pytest

from gateway.config import ServerSettings
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    Server,
    free_port,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 40
#: A bound on waiting for the gateway to cut a connection: generous, it is no timing claim.
CUT_WITHIN = 15.0
CHAT = "/v1/chat/completions"
METRICS_TOKEN = "metrics-token-for-tests-0123"
#: The default ``server.max_header_bytes`` (the gateway below keeps it).
LIMIT = ServerSettings().max_header_bytes


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("transport-emulator"))) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(
        emulator.url,
        server={
            "header_timeout": HEADER_TIMEOUT,
            "body_timeout": BODY_TIMEOUT,
            "max_connections": MAX_CONNECTIONS,
            "metrics_port": free_port(),
            "metrics_token": METRICS_TOKEN,
        },
        upstream={"base_url": emulator.url, "poll_interval": 0.05, "submit_retries": 0},
        # A window large enough for the 100 KB prompt below: the guard is the point here.
        models=[{"name": "gemma-2b", "tag": "gemma:2b", "context_window": 131072}],
    )
    tmp = tmp_path_factory.mktemp("transport-gateway")
    with running(start_gateway(tmp, config)) as server:
        server.metrics_url = f"http://127.0.0.1:{config['server']['metrics_port']}/metrics"  # type: ignore[attr-defined]
        yield server


def _connect(gateway: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=CUT_WITHIN)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes the connection (or resets it)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _error(answer: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    return body


def _access_line(gateway: Server, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + CUT_WITHIN
    while time.monotonic() < deadline:
        for line in gateway.output().splitlines():
            if request_id in line and '"gateway.access"' in line:
                entry: dict[str, Any] = json.loads(line)
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}:\n{gateway.output()[-3000:]}")


def _rss(gateway: Server) -> int:
    rss: int = psutil.Process(gateway.process.pid).memory_info().rss
    return rss


def test_eight_unfinished_8mb_headers_leave_memory_flat(gateway: Server) -> None:
    httpx.get(gateway.url + "/healthz")
    before = _rss(gateway)
    chunk = b"a" * 65536
    socks = []
    for _ in range(8):
        sock = _connect(gateway)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
        socks.append(sock)
    for sock in socks:
        with contextlib.suppress(OSError):  # the gateway refuses early: the rest is not read
            for _ in range(8 * 1024 * 1024 // len(chunk)):
                sock.sendall(chunk)
    peak = _rss(gateway)
    answers = [_read_all(sock) for sock in socks]
    for sock in socks:
        sock.close()
    assert peak - before < 30 * 1024 * 1024, (before, peak)
    assert all(_status(a) in (431, 0) for a in answers)  # 0: reset before the answer was read
    assert any(_status(a) == 431 for a in answers)
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_a_200kb_header_is_refused_with_431_in_the_openai_shape(gateway: Server) -> None:
    response = httpx.get(gateway.url + "/v1/models", headers={"x-big": "b" * 200_000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_headers_too_large"


def _anthropic_error(answer: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return body


def test_a_200kb_header_on_the_messages_door_is_refused_in_anthropics_shape(
    gateway: Server,
) -> None:
    """The guard answers before any route, in the shape of the door the path belongs to."""
    sdk = anthropic.Anthropic(
        base_url=gateway.url,
        api_key=ALICE_KEY,
        max_retries=0,
        default_headers={"x-big": "b" * 200_000},
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk.messages.create(
            model="gemma-2b", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 431
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": f"The request line and headers are larger than {LIMIT} bytes.",
        },
    }
    lines = [(f"x-h{i}", "v") for i in range(150)]
    counted = httpx.post(gateway.url + "/v1/messages/count_tokens", headers=lines, json={})
    assert counted.status_code == 431 and counted.json()["type"] == "error"


def test_a_slow_body_on_the_messages_door_is_cut_with_408_in_anthropics_shape(
    gateway: Server,
) -> None:
    sock = _connect(gateway)
    head = _post_head(10_000, "req_slow_messages").replace(CHAT.encode(), b"/v1/messages", 1)
    sock.sendall(head)
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 408
    assert _anthropic_error(answer) == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "The request body did not arrive within 1 s.",
        },
    }


def test_duplicate_headers_on_the_messages_door_are_refused_in_anthropics_shape(
    gateway: Server,
) -> None:
    headers = [("x-api-key", ALICE_KEY), ("x-api-key", "sk-other"), ("anthropic-version", "1")]
    answer = httpx.post(gateway.url + "/v1/messages", headers=headers, json={})
    assert answer.status_code == 400
    assert answer.json()["type"] == "error"
    assert "x-api-key" in answer.json()["error"]["message"]
    openai_path = httpx.post(gateway.url + CHAT, headers=headers, json={})
    assert openai_path.status_code == 400
    assert openai_path.json()["error"]["code"] == "duplicate_header"


def test_too_many_header_lines_are_refused_with_431(gateway: Server) -> None:
    headers = [(f"x-h{i}", "v") for i in range(150)]
    response = httpx.get(gateway.url + "/healthz", headers=headers)
    assert response.status_code == 431
    ordinary = httpx.get(gateway.url + "/healthz", headers=headers[:40])
    assert ordinary.status_code == 200


def test_headers_sent_too_slowly_are_cut_with_408(gateway: Server) -> None:
    sock = _connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    started = time.monotonic()
    with contextlib.suppress(OSError):
        while time.monotonic() - started < CUT_WITHIN:
            sock.sendall(b"x-slow: 1\r\n")  # a header every 0.2 s: never finishes
            time.sleep(0.2)
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 408 and _error(answer)["code"] == "request_timeout"


def test_a_slow_second_head_on_a_kept_alive_connection_is_cut(gateway: Server) -> None:
    """The second request's head starts in the read that finished the first one."""
    sock = _connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n")
    started = time.monotonic()
    with contextlib.suppress(OSError):
        while time.monotonic() - started < CUT_WITHIN:
            sock.sendall(b"x-slow: 1\r\n")
            time.sleep(0.2)
    answer = _read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 408 " in answer and b"request_timeout" in answer


def test_an_idle_kept_alive_connection_outlives_the_clients_own_expiry(gateway: Server) -> None:
    """httpx (so the OpenAI and Anthropic SDKs) reuses an idle connection for up to 5 s; a
    gateway that closed its side at 5 s too (uvicorn's default) met requests sent on a
    connection it was closing. ``server.idle_timeout`` (65 s) outlasts the clients'."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=CUT_WITHIN)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, b'{"status":"ok"}')
        sock = conn.sock
        time.sleep(5.5)  # past every client's own expiry (and uvicorn's default)
        conn.request("GET", "/healthz")  # a closed connection: RemoteDisconnected here
        second = conn.getresponse()
        assert (second.status, second.read()) == (200, b'{"status":"ok"}')
        assert conn.sock is sock  # the same connection, kept open
    finally:
        conn.close()


def test_a_silent_connection_is_closed(gateway: Server) -> None:
    sock = _connect(gateway)
    answer = _read_all(sock)  # returns once the gateway closes it
    sock.close()
    assert _status(answer) == 408


def _post_head(length: int, request_id: str) -> bytes:
    return (
        f"POST {CHAT} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n"
        f"x-request-id: {request_id}\r\n\r\n"
    ).encode() + b'{"model": "gemma-2b",'


def test_a_body_sent_too_slowly_is_cut_with_408_and_logged(gateway: Server) -> None:
    sock = _connect(gateway)
    sock.sendall(_post_head(10_000, "req_slow_body"))
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 408 and _error(answer)["code"] == "request_timeout"
    line = _access_line(gateway, "req_slow_body")
    assert line["status"] == 408 and line["outcome"] == "request_timeout"


def test_a_client_leaving_during_the_upload_is_an_ordinary_event(gateway: Server) -> None:
    sock = _connect(gateway)
    sock.sendall(_post_head(10_000, "req_gone_mid_body"))
    time.sleep(0.2)
    sock.close()
    line = _access_line(gateway, "req_gone_mid_body")
    assert line["level"] == "info"
    assert line["status"] == 499 and line["outcome"] == "client_disconnected"
    assert "Traceback" not in gateway.output()


def test_connections_beyond_the_cap_get_503(gateway: Server) -> None:
    held = [_connect(gateway) for _ in range(MAX_CONNECTIONS + 5)]
    try:
        over = held[-1]
        answer = _read_all(over)
        assert _status(answer) == 503 and _error(answer)["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + CUT_WITHIN
    while httpx.get(gateway.url + "/healthz").status_code != 200:  # the slots come back
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _fault(emulator: Server, fault: dict[str, Any]) -> None:
    httpx.post(emulator.url + "/emulator/faults", json={"submit": [fault]}).raise_for_status()


def test_an_upstream_echoing_the_token_does_not_pass_it_on(
    gateway: Server, emulator: Server
) -> None:
    _fault(emulator, {"success_false": f"token rejected: Bearer {ALICE_TOKEN} ({ALICE_TOKEN})"})
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="gemma-2b", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 502
    text = info.value.response.text
    assert "token rejected" in text and ALICE_TOKEN not in text
    assert ALICE_TOKEN not in gateway.output()


def test_a_path_like_job_id_is_an_upstream_error_and_never_polled(
    gateway: Server, emulator: Server
) -> None:
    before = httpx.get(emulator.url + "/emulator/stats").json()
    _fault(emulator, {"ids": ["../../x?y#"]})
    response = httpx.post(
        gateway.url + CHAT,
        headers={"authorization": f"Bearer {ALICE_KEY}"},
        json={"model": "gemma-2b", "messages": [{"role": "user", "content": "hi"}]},
        timeout=CUT_WITHIN,
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "../" not in response.text and "x-job-id" not in response.headers
    time.sleep(0.3)  # several poll intervals: a poll of it would have happened by now
    after = httpx.get(emulator.url + "/emulator/stats").json()
    assert after.get("status_requests") == before.get("status_requests"), (before, after)


def test_ordinary_requests_pass_the_guard(gateway: Server, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    answer = client.chat.completions.create(
        model="gemma-2b", messages=[{"role": "user", "content": "x" * 100_000}]
    )
    assert answer.choices[0].message.content


def test_metrics_are_on_their_own_port_behind_the_token(gateway: Server) -> None:
    url: str = gateway.metrics_url  # type: ignore[attr-defined]
    assert httpx.get(gateway.url + "/metrics").status_code == 404
    assert httpx.get(url).status_code == 401
    scraped = httpx.get(url, headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200
    assert "# TYPE gateway_requests_total counter" in scraped.text
