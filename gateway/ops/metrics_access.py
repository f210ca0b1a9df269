"""Who may read ``/metrics``: a bearer token (``server.metrics_token``) and/or its own port.

``/metrics`` names every key and counts its requests and tokens; on a shared gateway that is
not for every key holder. With ``server.metrics_port`` it leaves the API port and is served
from a small thread of the ``gateway serve`` process (the supervisor when there are several
workers, which merges their values), never on the event loop. Both can be combined.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger("gateway.metrics")

#: Renders the metrics: (body, content type).
Render = Callable[[], tuple[bytes, str]]
#: Seconds a metrics connection may stay silent (a slow client holds one thread, not more).
SOCKET_TIMEOUT = 10.0
PATH = "/metrics"


def token_matches(expected: str | None, authorization: str | None) -> bool:
    """True when no token is wanted, or ``authorization`` is ``Bearer <expected>``."""
    if expected is None:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), expected.encode()
    )


class MetricsServer:
    """``GET /metrics`` on its own port, in a daemon thread; :meth:`close` stops it."""

    def __init__(self, host: str, port: int, render: Render, token: str | None) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = SOCKET_TIMEOUT

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != PATH:
                    self._send(404, b"not found\n", "text/plain")
                elif not token_matches(token, self.headers.get("authorization")):
                    self._send(401, b"a bearer token is needed\n", "text/plain")
                else:
                    self._send(200, *render())

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                if status == 401:
                    self.send_header("www-authenticate", "Bearer")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape every 15 s is no news

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gateway-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        logger.info("metrics served on port %d", self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
