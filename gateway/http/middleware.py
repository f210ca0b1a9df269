"""The HTTP steps every request takes before any door: its id, and the header guard.

They are steps, not middlewares: ``gateway.ops.middleware.GatewayMiddleware`` runs them with the
access line and the in-flight counts in one pure ASGI hop (no BaseHTTPMiddleware: it hides
disconnects on streams), reading the request's headers once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from starlette.types import Message, Scope, Send

from gateway.errors import BadRequest
from gateway.http.shapes import ErrorShapes

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: Headers a request may carry once only: two of them leave the meaning to chance.
SINGLE_HEADERS = frozenset({b"authorization", b"x-api-key", b"content-type", b"content-length"})
_ID_HEADERS = (b"x-request-id", b"request-id")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def scan_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, bytes | None]:
    """One pass over a request's raw headers: its id (the client's ``x-request-id`` if it is
    sane, else a new one) and the first header of ``SINGLE_HEADERS`` that came twice, if any.

    Two ``Authorization`` headers (say a proxy's and the client's) would otherwise be settled
    by whichever the code happens to read first.
    """
    incoming: bytes | None = None
    duplicate: bytes | None = None
    seen: set[bytes] = set()
    for name, value in headers:
        if name in SINGLE_HEADERS:
            if name in seen and duplicate is None:
                duplicate = name
            seen.add(name)
        elif name == b"x-request-id" and incoming is None:
            incoming = value
    return _request_id(incoming), duplicate


def _request_id(incoming: bytes | None) -> str:
    if incoming:
        text = incoming.decode("latin-1")
        if _SAFE_ID.match(text):
            return text
    return new_request_id()


def stamp_request_id(message: Message, request_id: bytes) -> None:
    """Put the request's id on an ``http.response.start`` message, as ``x-request-id`` and as
    ``request-id``, where the anthropic SDKs look for it (replacing any the app wrote)."""
    headers = message.get("headers") or []
    kept = [(n, v) for n, v in headers if n.lower() not in _ID_HEADERS]
    kept.append((b"x-request-id", request_id))
    kept.append((b"request-id", request_id))
    message["headers"] = kept


async def refuse_duplicate_header(
    shapes: ErrorShapes, scope: Scope, send: Send, header: bytes
) -> None:
    """A 400 in the shape of the door the path belongs to: the request contradicts itself."""
    error = BadRequest(
        f"The request carries more than one '{header.decode('latin-1')}' header; send exactly one.",
        code="duplicate_header",
    )
    status, body = shapes.render(error, scope.get("path", ""))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
