"""The Messages door's small routes: models for Anthropic clients, unknown paths, its errors.

``POST /v1/messages`` and ``/v1/messages/count_tokens`` are in :mod:`gateway.anthropic.messages`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.anthropic.errors import error_response
from gateway.anthropic.models import model_object, model_page, wants_anthropic
from gateway.engine.catalog import is_pattern
from gateway.errors import GatewayError, NotFound
from gateway.http.common import request_id, runtime

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
            for model in rt.catalog.models
            if key.models is None or model.name in key.models
            for name in (model.name, *model.aliases)
            if not is_pattern(name)
        ]
        page = model_page(entries, request.query_params)
    except GatewayError as error:
        return error_response(error, request_id=rid)
    return JSONResponse(page, headers={"request-id": rid})


async def get_model(request: Request) -> Response:
    rt = runtime(request)
    rid = request_id(request)
    try:
        key = rt.keys.authenticate(request.headers)
        name = request.path_params["model"]
        model = rt.catalog.resolve(name, key.models)
    except GatewayError as error:
        return error_response(error, request_id=rid)
    return JSONResponse(model_object(name, model), headers={"request-id": rid})


def is_messages_path(request: Request) -> bool:
    path = request.url.path
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_for(request: Request) -> Callable[[GatewayError], Response]:
    """How this door answers an error on ``request`` (its request id included)."""
    rid = request_id(request)
    return lambda error: error_response(error, request_id=rid)


async def unknown_path(request: Request) -> Response:
    """Anything else under ``/v1/messages/``: the batches API, mostly, which is not served."""
    error = NotFound(f"Unknown endpoint: {request.method} {request.url.path}.", code="unknown_url")
    return error_response(error, request_id=request_id(request))
