"""A recording reverse proxy on loopback: what a real client sends, kept byte for byte.

The clients under test (Claude Code, Codex CLI) talk to the proxy as if it were the gateway;
the proxy forwards every request to the gateway unchanged, keeps each request's method, path,
headers and raw body, and returns the gateway's answer unchanged (bodies buffered whole: the
clients read a stream that arrives at once as well as one that trickles).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

#: Hop-by-hop headers a proxy must not forward (RFC 9110, 7.6.1), and the length it recomputes.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "accept-encoding",
    }
)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the client sent it, and the gateway's status and headers."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer_headers: dict[str, str]


@dataclass(slots=True)
class Recording:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def posts(self, path: str) -> list[Seen]:
        """The POSTs to ``path`` (the query string ignored), in the order they came."""
        return [s for s in self.seen if s.method == "POST" and s.path.split("?")[0] == path]


def _handler(target: str, recording: Recording) -> type[http.server.BaseHTTPRequestHandler]:
    client = httpx.Client(base_url=target, timeout=120.0)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            try:
                answer = client.request(self.command, self.path, headers=headers, content=body)
            except httpx.HTTPError as exc:
                answer = httpx.Response(502, content=f"proxy: {exc}".encode())
            seen = Seen(
                self.command,
                self.path,
                dict(self.headers.items()),
                body,
                answer.status_code,
                dict(answer.headers.items()),
            )
            recording.seen.append(seen)
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in _HOP and name.lower() != "content-encoding":
                    self.send_header(name, value)
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.content)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _forward

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def recording_proxy(target: str) -> Iterator[Recording]:
    """A proxy to ``target`` on a free loopback port, recording every request."""
    recording = Recording("")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(target, recording))
    recording.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recording
    finally:
        server.shutdown()
        server.server_close()
