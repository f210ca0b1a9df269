"""OpenAI routes this service does not offer: a clear OpenAI-shaped answer, never a bare 404."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import MethodNotAllowed, NotFound
from gateway.http.common import allowed_methods as allowed_methods
from gateway.http.common import error_response

UNSUPPORTED_PREFIXES = (
    "embeddings",
    "images",
    "audio",
    "moderations",
    "fine_tuning",
    "fine-tunes",
    "assistants",
    "threads",
    "vector_stores",
    "uploads",
    "realtime",
    "edits",
    "engines",
    "containers",
    "evals",
    "conversations",
    "videos",
    "skills",
    "chatkit",
    "organization",
    "projects",
    "content_provenance_checks",
)


async def unsupported(request: Request) -> Response:
    path = request.url.path
    allowed = allowed_methods(request)
    if allowed and request.method not in allowed:
        error = MethodNotAllowed(
            f"Method {request.method} is not allowed on {path}; use {' or '.join(allowed)}.",
            headers={"allow": ", ".join(allowed)},
        )
        return error_response(error)
    section = path.removeprefix("/v1/").split("/", 1)[0]
    if section in UNSUPPORTED_PREFIXES:
        message = (
            f"The endpoint {request.method} {path} is not offered: the Distributed LLM Service "
            "only generates text (use /v1/chat/completions or /v1/completions)."
        )
        code = "unsupported_endpoint"
    else:
        message = f"Unknown endpoint: {request.method} {path}."
        code = "unknown_url"
    return error_response(NotFound(message, code=code))
