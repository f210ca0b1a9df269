"""OpenAI routes this service does not offer: a clear OpenAI-shaped answer, never a bare 404."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import MethodNotAllowed, NotFound
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


#: Routes the gateway serves, with their one method: another method gets a 405, not a 404.
SERVED = {
    "/v1/chat/completions": "POST",
    "/v1/completions": "POST",
    "/v1/responses": "POST",
    "/v1/models": "GET",
    "/v1/usage": "GET",
}


def _allowed_method(path: str) -> str | None:
    if path.startswith("/v1/models/"):
        return "GET"
    return SERVED.get(path.rstrip("/") or path)


async def unsupported(request: Request) -> Response:
    path = request.url.path
    allowed = _allowed_method(path)
    if allowed is not None and request.method != allowed:
        error = MethodNotAllowed(
            f"Method {request.method} is not allowed on {path}; use {allowed}.",
            headers={"allow": allowed},
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
