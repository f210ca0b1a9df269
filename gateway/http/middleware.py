"""Pure ASGI middleware (no BaseHTTPMiddleware: it hides disconnects on streams)."""

from __future__ import annotations

import re
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BadRequest
from gateway.http.shapes import ErrorShapes

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    """Gives every request an ``x-request-id`` (the client's, if it is sane) on every answer,
    also as ``request-id``, where the anthropic SDKs look for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers["request-id"] = request_id  # the name the anthropic SDKs read
            await send(message)

        await self.app(scope, receive, send_with_id)


#: Headers a request may carry once only: two of them leave the meaning to chance.
SINGLE_HEADERS = (b"authorization", b"x-api-key", b"content-type", b"content-length")


class HeaderGuardMiddleware:
    """Refuses API requests whose headers contradict themselves with a 400, in the shape of
    the door the path belongs to (``shapes``; OpenAI's by default).

    Two ``Authorization`` headers (say a proxy's and the client's) would otherwise be settled
    by whichever the code happens to read first.
    """

    def __init__(self, app: ASGIApp, shapes: ErrorShapes | None = None) -> None:
        self.app = app
        self.shapes = shapes or ErrorShapes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen: set[bytes] = set()
            for name, _ in scope["headers"]:
                if name in SINGLE_HEADERS:
                    if name in seen:
                        await self._refuse(scope, send, name.decode("latin-1"))
                        return
                    seen.add(name)
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, header: str) -> None:
        error = BadRequest(
            f"The request carries more than one '{header}' header; send exactly one.",
            code="duplicate_header",
        )
        status, body = self.shapes.render(error, scope.get("path", ""))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
