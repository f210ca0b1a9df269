"""Per-connection limits, enforced in the HTTP protocol before a request reaches the app.

uvicorn's httptools protocol keeps no limit of its own: httptools buffers a header line for as
long as it grows (ten unfinished 20 MB headers took a process from 98 to 298 MB), and nothing
times out a client that sends its headers or its body a byte at a time. h11 has one knob
(``h11_max_incomplete_event_size``) but answers it with a 400 and costs several times the CPU
per request, so the gateway keeps httptools and adds, per connection:

- ``server.max_header_bytes``: the request line and headers together; more is a 431. Bytes are
  counted as they arrive and only that many are handed to the parser, so what a connection can
  make the process hold is bounded by the limit (plus one socket read), not by the client.
- ``server.max_headers``: header lines per request; more is a 431.
- ``server.header_timeout``: from the connection (or a request's first byte) to the end of its
  headers; later is a 408.
- ``server.body_timeout``: from the end of the headers to the end of the body; later is a 408
  (the app's body reader sees the request cut and logs it as such).
- ``server.max_connections``: connections open in this process; one more is answered 503 and
  closed at once, before it can hold anything.

An answer's head is held back until its first body bytes (:class:`HeadWithBody`), so that head
and body leave in one write: one system call per answer instead of two (a write to a socket on
loopback costs ~10 us of kernel time, as much as the rest of sending a small answer).

Refusals are written in the shape of the door the request's path belongs to, as far as the
path is known (:class:`~gateway.http.shapes.ErrorShapes`; OpenAI's for the rest, and for a
connection refused before it sent anything), then the connection is closed after a short
linger (reading and dropping what the client still sends, so it can read the answer instead of
losing it to a TCP reset).
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.config import ServerSettings
from gateway.errors import GatewayError, HeadersTooLarge, RequestTimeout, ServiceUnavailable
from gateway.http.bodies import BODY_TIMED_OUT
from gateway.http.shapes import ErrorShapes

logger = logging.getLogger("gateway.connections")

#: After a refusal: how long the connection is read (and the bytes dropped) before it closes,
#: and how many bytes may come in meanwhile.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing; carries the answer to give."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def raw_response(error: GatewayError, shapes: ErrorShapes, path: str = "") -> bytes:
    """A complete ``connection: close`` HTTP/1.1 response carrying the error's JSON in the
    shape of the door ``path`` belongs to."""
    status, body = shapes.render(error, path)
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in error.headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class HeadWithBody:
    """The transport as one request's response cycle sees it: its first write (the answer's
    head) waits for the next one (the first body bytes, sent in the same turn of the event loop
    by every answer of the gateway) and leaves with it, or leaves alone at the end of the turn.
    Nothing waits longer than that turn, and the order of the bytes is kept."""

    __slots__ = ("_flush", "_held", "_loop", "_transport", "_wrote")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None
        self._wrote = False

    def write(self, data: bytes) -> None:
        if not self._wrote:
            self._wrote = True
            self._held = data
            self._flush = self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            data = held + data
        self._transport.write(data)

    def flush(self) -> None:
        """Send what is held (at the end of the turn, or before closing)."""
        self._flush = None
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # anything else uvicorn may ask of a transport
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``ServerSettings`` (module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServerSettings,
        shapes: ErrorShapes | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.shapes = shapes or ErrorShapes()
        self._reading_head = True  # between a message's end (or the connection) and its headers
        self._head_bytes = 0
        self._heads_done = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a message's first byte came, its headers' end did not yet
        self._in_body = False  # its headers ended, its body did not yet
        self._lingering = False
        self._dropped = 0

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            error = ServiceUnavailable(
                "The gateway has too many open connections; try again shortly.",
                code="too_many_connections",
                headers={"retry-after": "1"},
            )
            self._refuse(error, "too many connections")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        if self._reading_head:
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                heads_before = self._heads_done
                self._head_bytes += room
                if room > 0 and not self._feed(data[:room]):
                    return
                if self._heads_done == heads_before:  # the limit came before the headers' end
                    limit = self.limits.max_header_bytes
                    error = HeadersTooLarge(
                        f"The request line and headers are larger than {limit} bytes."
                    )
                    self._refuse(error, "headers too large")
                    return
                data = data[room:]
            else:
                self._head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """Parse ``data`` (as uvicorn does, plus refusals); False once the connection is done."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refusal):
                self._refuse(exc.__context__.error, exc.__context__.error.code or "refused")
            else:
                self._bad_request()
            return False
        except httptools.HttpParserError:
            self._bad_request()
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        if self.transport.is_closing():
            return False
        # Timers only for what this read left unfinished: a request whose head (and body) came
        # in one read, the usual case, costs none.
        if self._in_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_timed_out
            )
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)
        return True

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            limit = self.limits.max_headers
            raise _Refusal(HeadersTooLarge(f"The request has more than {limit} header lines."))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._in_head = False
        self._in_body = True
        self._heads_done += 1
        self._cancel_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # not an upgrade
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._in_body = False
        self._head_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- timeouts and refusals

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _response_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._response_in_progress():
            return  # a pipelined head waits for the answer before it; that is not the client
        error = RequestTimeout(
            f"The request headers did not arrive within {self.limits.header_timeout:g} s."
        )
        self._refuse(error, "headers too slow")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if cycle.response_complete:  # answered early: the rest of the body is not wanted
            self.transport.close()
            return
        if not cycle.response_started:
            cycle.scope["state"][BODY_TIMED_OUT] = True  # type: ignore[typeddict-unknown-key]
            error = RequestTimeout(
                f"The request body did not arrive within {self.limits.body_timeout:g} s."
            )
            self._refuse(error, "body too slow", own_cycle=True)
        else:
            self.transport.close()
        # The app stops waiting for the body: it hears a disconnect, and its answer goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()

    def _path(self) -> str:
        """The path of the request being read, as far as it came (``""`` before any)."""
        url: bytes = getattr(self, "url", b"")
        return url.partition(b"?")[0].decode("latin-1")

    def _refuse(self, error: GatewayError, reason: str, own_cycle: bool = False) -> None:
        """Answer ``error`` and close after a linger. ``own_cycle``: the request being refused
        is the current cycle's (a body too slow), which has not started its answer; otherwise
        an unfinished cycle is an earlier request's, whose answer must not be garbled."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        logger.info(
            "connection refused: %s", reason, extra={"client": client, "status": error.status_code}
        )
        self._lingering = True
        if self.flow is not None:
            self.flow.resume_reading()
        if not own_cycle and self._response_in_progress():
            self.transport.close()
            return
        self.transport.write(raw_response(error, self.shapes, self._path()))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def guarded_protocol(
    limits: ServerSettings, shapes: ErrorShapes | None = None
) -> Callable[..., asyncio.Protocol]:
    """What ``uvicorn.run(http=...)`` takes: a picklable factory, so workers get it too."""
    return functools.partial(GuardedHttpToolsProtocol, limits=limits, shapes=shapes)
