"""ASGI responses that notice a client leaving at once, even before the first byte.

Starlette's ``StreamingResponse`` stops listening for ``http.disconnect`` on ASGI 2.4 servers
and only finds out on the next write, which for a queued job can be many seconds away. These
responses race their work against the disconnect, so a departed client's job leaves the
poller immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    """Run ``work`` until done or until the client disconnects; True if it completed."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True


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
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
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
