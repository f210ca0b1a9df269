"""The asyncio socket layer under httpx, against real loopback servers (plain and TLS)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient
from gateway.upstream.transport import AsyncioTransport

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)


class TinyServer:
    """Answers every request with ``{"path": ...}``; can close idle connections or stall."""

    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []
        self.close_after_reply = False
        self.stall = False
        self._server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                path = head.split(b" ", 2)[1]
                if self.stall:
                    await asyncio.sleep(10)
                body = b'{"path": "' + path + b'"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[TinyServer]:
    tiny = TinyServer()
    yield tiny
    await tiny.stop()


async def test_requests_reuse_one_connection(server: TinyServer) -> None:
    port = await server.start()
    async with httpx.AsyncClient(transport=AsyncioTransport(LIMITS)) as client:
        for path in ("/a", "/b", "/c"):
            response = await client.get(f"http://127.0.0.1:{port}{path}")
            assert response.json() == {"path": path}
    assert server.connections == 1


async def test_a_connection_the_server_closed_is_not_reused(server: TinyServer) -> None:
    port = await server.start()
    server.close_after_reply = True
    async with httpx.AsyncClient(transport=AsyncioTransport(LIMITS)) as client:
        for path in ("/a", "/b"):
            await asyncio.sleep(0.05)  # the close reaches the client while it is idle
            response = await client.get(f"http://127.0.0.1:{port}{path}")
            assert response.json() == {"path": path}
    assert server.connections == 2


async def test_connect_and_read_failures_are_httpx_errors(server: TinyServer) -> None:
    port = await server.start()
    async with httpx.AsyncClient(transport=AsyncioTransport(LIMITS)) as client:
        await server.stop()
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/gone")
    stalled = TinyServer()
    stalled.stall = True
    port = await stalled.start()
    try:
        # Only the read is short: a busy machine once took over 0.2 s to connect on loopback.
        timeout = httpx.Timeout(0.2, connect=10.0)
        async with httpx.AsyncClient(transport=AsyncioTransport(LIMITS), timeout=timeout) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"http://127.0.0.1:{port}/slow")
    finally:
        await stalled.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed key and certificate for ``localhost``."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_https_with_a_trusted_certificate(
    server: TinyServer, certificate: tuple[Path, Path]
) -> None:
    key, cert = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    port = await server.start(served)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(transport=AsyncioTransport(LIMITS, verify=trusted)) as client:
        response = await client.get(f"https://localhost:{port}/secure")
        assert response.json() == {"path": "/secure"}
    untrusting = ssl.create_default_context()  # the system roots do not know our certificate
    async with httpx.AsyncClient(transport=AsyncioTransport(LIMITS, verify=untrusting)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://localhost:{port}/secure")


async def _status(base: str, token: str, ids: list[str]) -> None:
    """One status call of a fresh client. The tiny server's answer is not a jobs answer:
    reaching it (and what reached it) is what counts here."""
    client = JobsClient(UpstreamSettings(base_url=base), base)
    try:
        with pytest.raises(Exception, match="success"):
            await client.status(token, ids)
    finally:
        await client.aclose()


async def test_the_jobs_client_talks_through_it(server: TinyServer) -> None:
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    await _status(base, "token", ["a" * 32])
    assert server.connections == 1


async def test_calls_carry_what_httpxs_client_would_send(
    server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    port = await server.start()
    base = f"http://127.0.0.1:{port}/v2"
    await _status(base, "token-123", ["a" * 32, "b" * 32])
    lines = server.heads[0].decode().split("\r\n")
    assert lines[0] == f"GET /v2/jobs/{'a' * 32},{'b' * 32} HTTP/1.1"
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["authorization"] == "bearer token-123"
    assert headers["user-agent"] == "llm-gateway"
    assert "gzip" in headers["accept-encoding"] and headers["accept"] == "*/*"


async def test_a_proxy_named_by_the_environment_carries_the_calls(
    server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await server.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    base = "http://upstream.invalid"
    await _status(base, "token", ["a" * 32])
    assert server.heads[0].startswith(f"GET {base}/jobs/{'a' * 32} HTTP/1.1".encode())


async def test_idle_upstream_connections_expire_before_the_services_own_timeout(
    server: TinyServer,
) -> None:
    """A connection idle past ``upstream.keepalive_expiry`` is not reused: a server that
    closes idle connections at the same moment (uvicorn's 5 s was httpx's default) made a
    reused connection fail mid-request, and with it every submission batched into it."""
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    settings = UpstreamSettings(base_url=base, max_connections=1, keepalive_expiry=0.1)
    client = JobsClient(settings, base)
    try:
        for pause in (0.3, 0.0, 0.0):  # idle past the expiry once, then at once twice
            with pytest.raises(Exception, match="success"):  # reaching it is what counts
                await client.status("token", ["a" * 32])
            await asyncio.sleep(pause)
    finally:
        await client.aclose()
    assert server.connections == 2
    assert UpstreamSettings().keepalive_expiry < 5.0  # under uvicorn's, Apache's, Node's
