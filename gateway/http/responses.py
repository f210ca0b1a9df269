"""ASGI responses that notice a client leaving at once, even before the first byte.

Starlette's ``StreamingResponse`` stops listening for ``http.disconnect`` on ASGI 2.4 servers
and only finds out on the next write, which for a queued job can be many seconds away. These
responses race their work against the disconnect, so a departed client's job leaves the
poller immediately.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.http.shapes import openai_body
from gateway.http.sse import dumps

#: The media type of a stream unless its door says otherwise (Ollama's door streams NDJSON).
EVENT_STREAM = "text/event-stream; charset=utf-8"


class LastChunk(bytes):
    """A stream body's last bytes: they leave with the end of the response, in one write."""


#: Called once the exchange is over: (HTTP status sent, outcome such as "ok").
OnClose = Callable[[int, str], Awaitable[None]]
#: A door's error answer: (error, headers) -> the response in the door's own error shape.
ErrorRenderer = Callable[[GatewayError, dict[str, str]], Response]


def openai_error(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """The error in OpenAI's shape: the default of every route that has no door of its own."""
    return Response(
        json.dumps(openai_body(error)),
        status_code=error.status_code,
        media_type="application/json",
        headers={**(headers or {}), **error.headers},
    )


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _raw_headers(headers: dict[str, str], content_type: str) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", content_type.encode())]
    raw.extend((k.lower().encode(), v.encode("latin-1", "replace")) for k, v in headers.items())
    return raw


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = dumps(body)  # orjson, as every stream's events
    raw = _raw_headers(headers, "application/json")
    raw.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def _race_disconnect(work: Awaitable[None], receive: Receive) -> bool:
    """Run ``work`` until done or until the client disconnects; True if it completed.

    ``work`` runs in the request's own task; one watcher task waits for the disconnect and
    cancels it. (A task for the work as well, raced with ``asyncio.wait``, cost ~20 us a
    request.) A cancellation from anywhere else still propagates."""
    current = asyncio.current_task()
    assert current is not None
    finished = left = False

    def client_left(watcher: asyncio.Future[None]) -> None:
        nonlocal left
        if watcher.cancelled():
            return
        watcher.exception()  # retrieved here, whether or not the work is still running
        if finished:
            return
        left = True  # disconnected, or receive() failed: the work stops either way
        current.cancel()

    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    watcher.add_done_callback(client_left)
    try:
        await work
    except asyncio.CancelledError:
        if not left or current.uncancel() > 0:
            raise  # not (only) ours: the server's, a shutdown's
        _raise_watcher_error(watcher)
        return False
    finally:
        finished = True
        watcher.cancel()
    if left:  # the work swallowed our cancellation
        current.uncancel()
        _raise_watcher_error(watcher)
        return False
    return True


def _raise_watcher_error(watcher: asyncio.Future[None]) -> None:
    """``receive`` raised while waiting for the disconnect: that error, as before."""
    if watcher.done() and not watcher.cancelled() and (error := watcher.exception()) is not None:
        raise error


class _ClosingResponse:
    def __init__(
        self, headers: dict[str, str], on_close: OnClose | None, errors: ErrorRenderer | None
    ) -> None:
        self.headers = headers
        self.on_close = on_close
        self.errors: ErrorRenderer = errors or openai_error
        self.status = 200
        self.outcome = "ok"

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if not await _race_disconnect(self._run(scope, receive, send), receive):
                self.status, self.outcome = 499, "client_disconnected"
        except (OSError, asyncio.CancelledError):
            self.status, self.outcome = 499, "client_disconnected"
            raise
        finally:
            if self.on_close is not None:
                await self.on_close(self.status, self.outcome)

    async def _send_error(
        self, scope: Scope, receive: Receive, send: Send, error: GatewayError
    ) -> None:
        self.status, self.outcome = error.status_code, error.code or "error"
        await self.errors(error, self.headers)(scope, receive, send)


class EventStreamResponse(_ClosingResponse):
    """A stream (``text/event-stream`` unless ``media_type`` says otherwise) whose headers wait
    for the body's first item (see gateway/serving/answers.py)."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        headers: dict[str, str],
        on_close: OnClose | None = None,
        errors: ErrorRenderer | None = None,
        media_type: str = EVENT_STREAM,
    ) -> None:
        super().__init__(headers, on_close, errors)
        self.body = body
        self.media_type = media_type

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            try:
                first = await anext(self.body)
            except GatewayError as error:
                await self._send_error(scope, receive, send, error)
                return
            except StopAsyncIteration:
                first = b""
            headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **self.headers}
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": _raw_headers(headers, self.media_type),
                }
            )
            last = type(first) is LastChunk
            await send({"type": "http.response.body", "body": first, "more_body": not last})
            if last:
                return
            async for chunk in self.body:
                last = type(chunk) is LastChunk
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    return
            await send({"type": "http.response.body", "body": b""})
        finally:
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()


class DeferredJSONResponse(_ClosingResponse):
    """A JSON answer computed while the client waits, abandoned if the client leaves."""

    def __init__(
        self,
        produce: Callable[[], Awaitable[dict[str, Any]]],
        headers: dict[str, str],
        on_close: OnClose | None = None,
        errors: ErrorRenderer | None = None,
    ) -> None:
        super().__init__(headers, on_close, errors)
        self.produce = produce

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self.produce()
        except GatewayError as error:
            await self._send_error(scope, receive, send, error)
            return
        await send_json(send, 200, body, self.headers)
