"""Serving the console: a fixed set of static files, read once, sent with strict headers.

The files are package data read when the app is built, so no request makes the gateway touch
the disk, and no path a client sends can name a file outside the set. Every answer carries a
Content-Security-Policy that allows only this origin's own scripts, styles and requests (no
inline script, no ``eval``) and forbids framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.console.session import console_session
from gateway.errors import NotFound
from gateway.http.common import error_response

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

#: Headers on every console answer.
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-cache",
}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def load_files() -> dict[str, StaticFile]:
    """Every file of ``gateway/console/static``, by name."""
    files: dict[str, StaticFile] = {}
    for entry in resources.files("gateway.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[entry.name] = StaticFile(body, _TYPES[suffix], etag)
    return files


def _answer(request: Request, file: StaticFile) -> Response:
    headers = {**SECURITY_HEADERS, "etag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


def console_routes() -> list[Route]:
    """``/`` (the page; HEAD too, which some clients use as a probe) and ``/console/{name}``."""
    files = load_files()
    index = files["index.html"]

    async def home(request: Request) -> Response:
        return _answer(request, index)

    async def asset(request: Request) -> Response:
        file = files.get(request.path_params["name"])
        if file is None:
            response = error_response(
                NotFound(f"Unknown endpoint: {request.url.path}.", code="unknown_url")
            )
            response.headers.update(SECURITY_HEADERS)
            return response
        return _answer(request, file)

    return [
        Route("/", home, methods=["GET", "HEAD"]),
        Route("/console/session", console_session, methods=["GET"]),  # before the files
        Route("/console/{name}", asset, methods=["GET", "HEAD"]),
    ]
