"""The HTTP steps every request takes before any door: its id, and the header guard.

They are steps, not middlewares: ``gateway.ops.middleware.GatewayMiddleware`` runs them with the
access line and the in-flight counts in one pure ASGI hop (no BaseHTTPMiddleware: it hides
disconnects on streams), reading the request's headers once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import Message, Scope, Send

from gateway.errors import BadRequest
from gateway.http.shapes import ErrorShapes
from gateway.ids import sortable_hex

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: Headers a request may carry once only: two of them leave the meaning to chance.
SINGLE_HEADERS = frozenset({b"authorization", b"x-api-key", b"content-type", b"content-length"})
_ID_HEADERS = (b"x-request-id", b"request-id")

#: The request headers the doors read (the key, the body's type and size, caching, the
#: client's timeout, trace context, the Anthropic door's version): picked out in the one pass
#: of :func:`scan_headers` into a plain dict (``REQUEST_HEADERS`` in the ASGI state), so no
#: door looks a header up in the raw list again.
READ_HEADERS = SINGLE_HEADERS | frozenset(
    {
        b"cache-control",
        b"traceparent",
        b"tracestate",
        b"anthropic-version",
        b"anthropic-beta",
        b"x-stainless-read-timeout",
        b"x-stainless-timeout",
        b"x-request-timeout",
        b"request-timeout",
    }
)
#: Where the middleware keeps the headers it read, in the request's ASGI state.
REQUEST_HEADERS = "gateway.request_headers"


@dataclass(slots=True)
class Scanned:
    """What one pass over a request's raw headers found."""

    request_id: str
    #: The first of ``SINGLE_HEADERS`` that came twice, if any (the request is refused).
    duplicate: bytes | None
    #: ``READ_HEADERS`` by lower-case name, the first of each, decoded as latin-1 (as
    #: Starlette's ``request.headers.get`` reads them).
    headers: dict[str, str]


def new_request_id() -> str:
    """24 hex digits after ``req_``, in time order (the ledger indexes them: :mod:`gateway.ids`)."""
    return "req_" + sortable_hex(24)


def scan_headers(headers: Iterable[tuple[bytes, bytes]]) -> Scanned:
    """One pass over a request's raw headers: its id (the client's ``x-request-id`` if it is
    sane, else a new one), the first header of ``SINGLE_HEADERS`` that came twice, if any,
    and the headers the doors read (``READ_HEADERS``).

    Two ``Authorization`` headers (say a proxy's and the client's) would otherwise be settled
    by whichever the code happens to read first.
    """
    incoming: bytes | None = None
    duplicate: bytes | None = None
    seen: set[bytes] = set()
    read: dict[str, str] = {}
    for name, value in headers:
        if name in READ_HEADERS:
            if name in SINGLE_HEADERS:
                if name in seen and duplicate is None:
                    duplicate = name
                seen.add(name)
            text = name.decode("latin-1")
            if text not in read:
                read[text] = value.decode("latin-1")
        elif name == b"x-request-id" and incoming is None:
            incoming = value
    return Scanned(_request_id(incoming), duplicate, read)


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """``READ_HEADERS`` of ``raw`` (for a request that did not pass the middleware)."""
    read: dict[str, str] = {}
    for name, value in raw:
        if name in READ_HEADERS:
            read.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return read


def headers_of(request: Request) -> dict[str, str]:
    """The headers the doors read (``READ_HEADERS``), as the middleware picked them out in its
    one pass over the raw list: plain dict lookups from here on. A request that did not pass
    the middleware has them read here, once."""
    state = request.scope.setdefault("state", {})
    read = state.get(REQUEST_HEADERS)
    if read is None:
        read = state[REQUEST_HEADERS] = read_headers(request.scope.get("headers") or ())
    return read  # type: ignore[no-any-return]


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
