"""The Ollama door on a listen address of its own (``ollama.port``), for tools that look for
Ollama at ``127.0.0.1:11434`` and cannot send a key.

The same app (one runtime: the same limits, ledger and metrics) listens on both addresses;
this middleware tells a request that came in on the Ollama address by the socket it arrived
on, serves it only Ollama's routes, and gives it ``ollama.default_key`` when it sends no key
of its own. Anyone who can reach that address spends that key: the operator's explicit
choice, documented in docs/ollama.md.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import NotFound
from gateway.ollama.errors import error_response

#: Set in a request's ASGI state when it came in on the Ollama address.
OLLAMA_ADDRESS = "gateway.ollama_address"


def _serves(path: str) -> bool:
    return path == "/" or path == "/api" or path.startswith("/api/")


class OllamaListenerMiddleware:
    """Requests arriving on ``port`` get Ollama's routes only, and ``default_key`` if keyless."""

    def __init__(self, app: ASGIApp, port: int, default_key: str | None) -> None:
        self.app = app
        self.port = port
        self.authorization = (
            None if default_key is None else f"Bearer {default_key}".encode("latin-1")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "http" or not server or server[1] != self.port:
            await self.app(scope, receive, send)
            return
        if not _serves(scope["path"]):
            error = NotFound(
                f"Unknown endpoint: {scope['path']}. This address serves only Ollama's API "
                "(/api/...); the gateway's other APIs are on its main port.",
                code="unknown_url",
            )
            await error_response(error)(scope, receive, send)
            return
        scope.setdefault("state", {})[OLLAMA_ADDRESS] = True  # no console page here
        headers = scope["headers"]
        if self.authorization is not None and not any(
            name in (b"authorization", b"x-api-key") for name, _ in headers
        ):
            scope = {**scope, "headers": [*headers, (b"authorization", self.authorization)]}
        await self.app(scope, receive, send)
