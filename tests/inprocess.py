"""The whole app in process, for tests that need its lifespan but no sockets.

The lifespan installs the gateway's SIGTERM/SIGINT handlers (drain on signal); they are put back
afterwards so one test's app never handles another's signals.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.config import Settings


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Starlette]:
    """``create_app(settings)`` with its lifespan running."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def client(asgi: ASGIApp) -> httpx.AsyncClient:
    """An HTTP client that calls ``asgi`` directly."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://gateway")
