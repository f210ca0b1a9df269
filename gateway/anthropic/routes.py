"""The Messages door's small routes: models for Anthropic clients, unknown paths, wrong methods.

``POST /v1/messages`` and ``/v1/messages/count_tokens`` are in :mod:`gateway.anthropic.messages`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.anthropic.errors import error_response
from gateway.anthropic.models import model_object, model_page, wants_anthropic
from gateway.engine.catalog import is_pattern
from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.http.common import allowed_methods, request_id
from gateway.serving.desk import FrontDesk
from gateway.state import runtime

Handler = Callable[[Request], Awaitable[Response]]


def for_anthropic_clients(anthropic: Handler, other: Handler) -> Handler:
    """One route, two doors: requests carrying ``anthropic-version`` go to ``anthropic``."""

    async def route(request: Request) -> Response:
        return await (anthropic if wants_anthropic(request.headers) else other)(request)

    route.__name__ = other.__name__
    return route


async def list_models(request: Request) -> Response:
    rt = runtime(request)
    rid = request_id(request)
    try:
        key = rt.keys.authenticate(request.headers)
        entries = [
            (name, model)
            for model in FrontDesk(rt).catalog(key).models
            for name in (model.name, *model.aliases)
            if not is_pattern(name)
        ]
        page = model_page(entries, request.query_params)
    except GatewayError as error:
        return error_response(error, request_id=rid)
    return JSONResponse(page)


async def get_model(request: Request) -> Response:
    rt = runtime(request)
    rid = request_id(request)
    try:
        key = rt.keys.authenticate(request.headers)
        name = request.path_params["model"]
        model = FrontDesk(rt).catalog(key).resolve(name)
    except GatewayError as error:
        return error_response(error, request_id=rid)
    return JSONResponse(model_object(name, model))


#: The door's routes, with their one method: another method gets a 405, not a 404.
SERVED = ("", "/", "/count_tokens")


async def other_paths(request: Request) -> Response:
    """The rest of ``/v1/messages...``: a wrong method on a served route, or an unknown path,
    in this door's error shape."""
    path = request.url.path
    error: GatewayError
    allowed = allowed_methods(request)  # the Message Batches' routes, say
    if allowed and request.method not in allowed:
        message = f"Method {request.method} is not allowed on {path}; use {' or '.join(allowed)}."
        error = MethodNotAllowed(message, headers={"allow": ", ".join(allowed)})
    elif request.path_params.get("rest", "") in SERVED:
        message = f"Method {request.method} is not allowed on {path}; use POST."
        error = MethodNotAllowed(message, headers={"allow": "POST"})
    else:
        error = NotFound(f"Unknown endpoint: {request.method} {path}.", code="unknown_url")
    return error_response(error, request_id=request_id(request))
