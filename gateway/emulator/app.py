"""The emulator's HTTP face: the jobs API plus ``/emulator/`` admin endpoints.

Jobs live at ``/jobs`` and at ``/remotejobs/v2/jobs``, so a base URL of either
``http://host:port`` or ``http://host:port/remotejobs/v2`` works. Admin endpoints need no token:

    POST   /emulator/faults                queue faults (see ``faults.py``)
    GET    /emulator/faults                what is still queued
    DELETE /emulator/faults                clear them
    GET    /emulator/stats                 request counters (tokens as sha256[:12] only)
    POST   /emulator/stats/reset
    GET    /emulator/jobs/{id}/timeline    when each word entered the log, and the prompt
    GET    /emulator/health
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.emulator.directives import rejects
from gateway.emulator.engine import EmulatorConfig, Engine
from gateway.emulator.faults import Fault, FaultKind, parse_faults

INVALID_INPUT = "Invalid input format"
PREFIXES = ("", "/remotejobs/v2")


class EmulatedConnectionReset(httpx.RemoteProtocolError):
    """Raised by the app to drop a connection mid-response (the ``reset`` fault).

    Over a socket the client sees a broken connection; in-process through
    ``httpx.ASGITransport`` it sees this exception, which is the one httpx raises for a peer
    that closes early, so client code handles both the same way.
    """


class JSON(Response):
    """Compact UTF-8 JSON from orjson: a status answer for 240 jobs is ~200 KB, and the
    standard library took 4x longer to write it, a delay every poll of a benchmark paid.
    Text orjson refuses (lone surrogates in a prompt) is written as ASCII JSON instead."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            return json.dumps(content, separators=(",", ":")).encode("ascii")


class _ResetResponse(Response):
    """Starts a response, sends part of the body, then breaks the connection."""

    def __init__(self) -> None:
        super().__init__(b'{"success":true,"jobs":{', 200, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        raise EmulatedConnectionReset("emulated connection reset")


def create_emulator_app(
    config: EmulatorConfig | None = None, engine: Engine | None = None
) -> Starlette:
    """The emulator as an ASGI app; pass ``engine`` to share or inspect its state (its own
    ``config`` then applies). The engine is also at ``app.state.engine``."""
    engine = engine if engine is not None else Engine(config)
    jobs = _JobsAPI(engine)
    admin = _AdminAPI(engine)
    routes: list[Route] = []
    for prefix in PREFIXES:
        routes.append(Route(f"{prefix}/jobs", jobs.submit, methods=["POST"]))
        routes.append(Route(f"{prefix}/jobs/{{ids}}", jobs.status, methods=["GET"]))
    routes += [
        Route("/emulator/faults", admin.add_faults, methods=["POST"]),
        Route("/emulator/faults", admin.list_faults, methods=["GET"]),
        Route("/emulator/faults", admin.clear_faults, methods=["DELETE"]),
        Route("/emulator/stats", admin.stats, methods=["GET"]),
        Route("/emulator/stats/reset", admin.reset_stats, methods=["POST"]),
        Route("/emulator/jobs/{id}/timeline", admin.timeline, methods=["GET"]),
        Route("/emulator/health", admin.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.engine = engine
    return app


class _JobsAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def submit(self, request: Request) -> Response:
        token = _bearer(request)
        self.engine.stats.count_request("submit", token)
        faulted = await self._fault("submit")
        if faulted is not None:
            return faulted
        if token is None or not self.engine.authorized(token):
            return _unauthorized(token)
        parsed = _parse_submit(await request.body(), self.engine.config.app)
        if parsed is None or any(rejects(prompt) for prompt in parsed[0]):
            return JSON({"success": False, "error": INVALID_INPUT})
        prompts, tag = parsed
        return JSON({"success": True, "ids": self.engine.submit(token, prompts, tag)})

    async def status(self, request: Request) -> Response:
        token = _bearer(request)
        self.engine.stats.count_request("status", token)
        ids = [part for part in request.path_params["ids"].split(",") if part]
        self.engine.stats.count_status_ids(len(ids))
        faulted = await self._fault("status")
        if faulted is not None:
            return faulted
        if token is None or not self.engine.authorized(token):
            return _unauthorized(token)
        return JSON({"success": True, "jobs": self.engine.status(token, ids)})

    async def _fault(self, kind: FaultKind) -> Response | None:
        fault = self.engine.faults.take(kind)
        if fault is None:
            return None
        self.engine.stats.faults_injected += 1
        if fault.delay:
            await asyncio.sleep(fault.delay)
        return _fault_response(fault)


def _fault_response(fault: Fault) -> Response | None:
    if fault.http is not None:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.body is not None:
            return Response(fault.body, fault.http, headers, media_type="text/plain")
        phrase = (
            HTTPStatus(fault.http).phrase if fault.http in HTTPStatus._value2member_map_ else ""
        )
        page = (
            f"<html><head><title>{fault.http} {phrase}</title></head><body>"
            f"<center><h1>{fault.http} {phrase}</h1></center><hr><center>nginx</center>"
            "</body></html>"
        )
        return Response(page, fault.http, headers, media_type="text/html")
    if fault.not_json:
        return Response(b"<!-- upstream garbage -->\x00{oops", 200, media_type="application/json")
    if fault.success_false is not None:
        return JSON({"success": False, "error": fault.success_false})
    if fault.missing:
        return JSON({"success": True, "jobs": {}})
    if fault.ids is not None:
        return JSON({"success": True, "ids": list(fault.ids)})
    if fault.reset:
        return _ResetResponse()
    return None


class _AdminAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def add_faults(self, request: Request) -> Response:
        try:
            parsed = parse_faults(json.loads(await request.body()))
        except (ValueError, UnicodeDecodeError) as exc:  # FaultError and JSONDecodeError
            return JSON({"success": False, "error": str(exc)}, 400)
        for kind, faults in parsed.items():
            self.engine.faults.add(kind, faults)
        return JSON({"success": True, "pending": self.engine.faults.pending()})

    async def list_faults(self, request: Request) -> Response:
        return JSON({"success": True, "pending": self.engine.faults.pending()})

    async def clear_faults(self, request: Request) -> Response:
        self.engine.faults.clear()
        return JSON({"success": True, "pending": self.engine.faults.pending()})

    async def stats(self, request: Request) -> Response:
        return JSON(self.engine.snapshot())

    async def reset_stats(self, request: Request) -> Response:
        self.engine.stats.reset()
        return JSON(self.engine.snapshot())

    async def timeline(self, request: Request) -> Response:
        timeline = self.engine.timeline(request.path_params["id"])
        if timeline is None:
            return JSON({"success": False, "error": "unknown job"}, 404)
        return JSON(timeline)

    async def health(self, request: Request) -> Response:
        return JSON({"success": True, "jobs": len(self.engine)})


def _bearer(request: Request) -> str | None:
    """The bearer token, or None when the header is missing, of another scheme, or empty."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized(token: str | None) -> Response:
    error = "Missing bearer token" if token is None else "Invalid token"
    return JSON({"success": False, "error": error}, 401, {"WWW-Authenticate": "Bearer"})


def _parse_submit(body: bytes, app: str) -> tuple[list[str], str] | None:
    """``(prompts, tag)`` from a submit body, None when the service would say "Invalid input"."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("app") != app:
        return None
    tag, command_line, hours = data.get("tag"), data.get("commandLine"), data.get("hours")
    if not isinstance(tag, str) or not tag or not isinstance(command_line, str):
        return None
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float)):
        return None
    try:
        command = json.loads(command_line)
    except ValueError:
        return None
    if not isinstance(command, dict):
        return None
    prompts = command.get("inputs", command.get("input"))
    if not isinstance(prompts, list) or not prompts:
        return None
    if not all(isinstance(prompt, str) for prompt in prompts):
        return None
    return prompts, tag
