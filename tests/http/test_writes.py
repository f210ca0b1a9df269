"""How many writes an answer costs: the gateway's HTTP protocol driven with real requests and
a transport that records every write (each is one system call on a real socket).

An answer's head leaves with its first body bytes; a stream's last bytes leave with its end
(``LastChunk``); a head whose body is not ready in the same turn of the event loop still leaves
at the end of that turn, before the body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.config import ServerSettings, parse_settings
from gateway.http.connections import GuardedHttpToolsProtocol
from gateway.http.responses import EventStreamResponse, LastChunk
from tests.e2e.servers import ALICE_KEY, Server, gateway_config, running, start_emulator
from tests.inprocess import started


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        known = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}
        return known.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


async def _events(_: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: a\n\n"
        await asyncio.sleep(0.01)
        yield b"data: b\n\n"
        await asyncio.sleep(0.01)
        yield LastChunk(b"data: c\n\n")

    return EventStreamResponse(body(), {})  # type: ignore[return-value]


async def _slow_first(_: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.2)
        yield b"late"

    return StreamingResponse(body())


async def _json(_: Request) -> Response:
    return JSONResponse({"ok": True})


APP = Starlette(
    routes=[
        Route("/events", _events),
        Route("/slow", _slow_first),
        Route("/json", _json),
    ]
)


async def _exchange(app: Any, request: bytes, done: Callable[[bytes], bool]) -> list[bytes]:
    """``request`` through the gateway's protocol to ``app``; the writes, once ``done`` holds
    for what was written (a bound of 20 s on a loaded machine, not a timing claim)."""
    config = Config(app=app, lifespan="off", log_config=None, access_log=False)
    config.load()
    protocol = GuardedHttpToolsProtocol(
        config, ServerState(), {}, asyncio.get_running_loop(), limits=ServerSettings()
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    try:
        async with asyncio.timeout(20):
            while not done(b"".join(transport.writes)):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        protocol.connection_lost(None)
    return transport.writes


async def _get(path: str, end: bytes) -> list[bytes]:
    request = f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode()
    return await _exchange(APP, request, lambda written: written.endswith(end))


async def test_a_stream_writes_its_head_with_its_first_bytes_and_its_last_with_its_end() -> None:
    writes = await _get("/events", b"0\r\n\r\n")
    assert len(writes) == 3, writes
    first, middle, last = writes
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(b"\r\n\r\n9\r\ndata: a\n\n\r\n")
    assert middle == b"9\r\ndata: b\n\n\r\n"
    assert last == b"9\r\ndata: c\n\n\r\n0\r\n\r\n"


async def test_a_json_answer_is_one_write() -> None:
    writes = await _get("/json", b'{"ok":true}')
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"ok":true}')


async def test_a_head_whose_body_is_late_leaves_alone_and_first() -> None:
    writes = await _get("/slow", b"0\r\n\r\n")
    head, *rest = writes
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"\r\n\r\n")  # the head alone, written before the body came
    assert rest == [b"4\r\nlate\r\n", b"0\r\n\r\n"]


# -- the real app: a streamed chat answer and a JSON one, against the real emulator


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("writes-emulator"))) as server:
        yield server


async def _chat(emulator: Server, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n"
        + f"authorization: Bearer {ALICE_KEY}\r\ncontent-type: application/json\r\n".encode()
        + f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    end = b"0\r\n\r\n" if body.get("stream") else b"}"
    async with started(parse_settings(gateway_config(emulator.url))) as app:
        return await _exchange(app, request, lambda written: written.endswith(end))


async def test_a_streamed_chat_answer_opens_and_ends_in_one_write_each(emulator: Server) -> None:
    prompt = "Count [[emulate:words 12]] [[emulate:wps 40]]"
    writes = await _chat(
        emulator,
        {
            "model": "gemma-2b",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}],
        },
    )
    first, last = writes[0], writes[-1]
    # The head, the role's chunk and the first text, together.
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.count(b"data: ") == 2
    assert b'"role":"assistant"' in first and b'"content":"' in first.split(b"data: ")[2]
    # The last text (or none), the finish, the usage, [DONE] and the end, together.
    assert b'"finish_reason":"stop"' in last
    assert b'"usage":{"prompt_tokens"' in last
    assert last.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    # Every write between carries one chunk of text.
    for middle in writes[1:-1]:
        assert middle.count(b"data: ") == 1 and b'"content":"' in middle


async def test_a_chat_answer_is_one_write(emulator: Server) -> None:
    prompt = "Hi [[emulate:words 5]] [[emulate:wps 1000]]"
    writes = await _chat(
        emulator, {"model": "gemma-2b", "messages": [{"role": "user", "content": prompt}]}
    )
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"object":"chat.completion"' in writes[0]
