"""``/healthz``: the process answers. ``/readyz``: it can do useful work right now."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.runtime import runtime


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    rt = runtime(request)
    checks = await rt.readiness()
    ready = all(checks.values())
    return JSONResponse(
        {
            "status": "ready" if ready else "unready",
            "checks": checks,
            "dependencies": await rt.dependencies(),
        },
        status_code=200 if ready else 503,
    )


async def root(request: Request) -> Response:
    """``GET /`` and ``HEAD /``: 200, so a client probing the base URL (Claude Code does) finds
    a server; the console, when it is on, serves its page here instead."""
    return JSONResponse({"service": "llm-gateway", "status": "ok", "docs": "/openapi.json"})
