"""Ollama's routes at the gateway's root: ``/api/chat`` and ``/api/generate`` through the
front desk every door calls (:func:`gateway.serving.web.serve`), the model routes, the
version, ``GET /``, and a clear refusal, in Ollama's error shape, for the rest of ``/api``.

Ollama reads every body as JSON whatever its ``Content-Type`` (``curl -d``, in its own
examples, sends a form type), and so does this door.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.engine.planning import Plan, plan_conversation, plan_prompts
from gateway.errors import BadRequest, GatewayError, MethodNotAllowed, NotFound
from gateway.http.bodies import parse_json, read_body, validate
from gateway.http.common import request_id
from gateway.http.middleware import headers_of
from gateway.ollama import models
from gateway.ollama.answers import OllamaCodec
from gateway.ollama.errors import NotServed, error_response
from gateway.ollama.listener import OLLAMA_ADDRESS
from gateway.ollama.protocol import ChatRequest, GenerateRequest, ShowRequest
from gateway.ollama.translate import (
    chat_conversation,
    generate_conversation,
    generate_turns,
    raw_prompts,
)
from gateway.serving.answers import Codec
from gateway.serving.desk import FrontDesk
from gateway.serving.web import RequestContext, serve
from gateway.state import runtime

Handler = Callable[[Request], Awaitable[Response]]

#: The version of Ollama's API this door follows (clients compare it to enable features).
OLLAMA_VERSION = "0.12.0"
RUNNING = "Ollama is running"

#: Ollama routes not served here, and why.
REFUSED = {
    "/api/embed": "embeddings are not served: the grid's jobs only generate text.",
    "/api/embeddings": "embeddings are not served: the grid's jobs only generate text.",
    "/api/pull": "models live on the grid: there is nothing to pull; /api/tags lists them.",
    "/api/push": "models live on the grid: there is nothing to push.",
    "/api/create": "models live on the grid: they are configured by the gateway's operator.",
    "/api/copy": "models live on the grid: they are configured by the gateway's operator.",
    "/api/delete": "models live on the grid: they are configured by the gateway's operator.",
    "/api/blobs": "models live on the grid: the gateway keeps no blobs.",
}

#: Served routes and their method: another method is a 405 rather than a 404.
SERVED = {
    "/api/chat": "POST",
    "/api/generate": "POST",
    "/api/show": "POST",
    "/api/tags": "GET",
    "/api/ps": "GET",
    "/api/version": "GET",
}


def _errors(request: Request) -> Callable[[GatewayError, dict[str, str]], Response]:
    rid = request_id(request)
    return lambda error, headers: error_response(error, headers, rid)


def _as_json(request: Request) -> Request:
    """The request with its body declared JSON, as Ollama reads it whatever it says."""
    scope = request.scope
    scope["headers"] = [
        *(item for item in scope["headers"] if item[0] != b"content-type"),
        (b"content-type", b"application/json"),
    ]
    headers_of(request)["content-type"] = "application/json"  # as the doors read it
    return Request(scope, request.receive)


async def _plan_chat(ctx: RequestContext) -> tuple[Plan, Codec]:
    catalog, limits, timeout = ctx.catalog, ctx.limits, ctx.client_timeout

    def work() -> tuple[Plan, str]:  # the client's schemas are checked here: off the loop
        wire = validate(ChatRequest, ctx.data)
        model = models.resolve(catalog, wire.model)
        cap = None if wire.stream else timeout
        plan = plan_conversation(chat_conversation(wire, model.name), catalog, limits, cap)
        return plan, wire.model

    plan, asked = await ctx.offload(work)
    return plan, OllamaCodec("chat", asked, ctx.exchange)


async def _plan_generate(ctx: RequestContext) -> tuple[Plan, Codec]:
    catalog, limits, timeout = ctx.catalog, ctx.limits, ctx.client_timeout

    def work() -> tuple[Plan, str, list[tuple[str, str]] | None]:
        wire = validate(GenerateRequest, ctx.data)
        model = models.resolve(catalog, wire.model)
        cap = None if wire.stream else timeout
        if wire.raw:
            prompts = raw_prompts(wire, model.name)
            if prompts.max_tokens is not None:  # as chat clamps it: Ollama clients ask a lot
                prompts.max_tokens = min(prompts.max_tokens, limits.max_tokens)
            return plan_prompts(prompts, catalog, limits, cap), wire.model, None
        turns = generate_turns(wire)
        conversation = generate_conversation(wire, model.name, turns)
        return plan_conversation(conversation, catalog, limits, cap), wire.model, turns

    plan, asked, turns = await ctx.offload(work)
    return plan, OllamaCodec("generate", asked, ctx.exchange, turns)


async def chat(request: Request) -> Response:
    return await serve(_as_json(request), "/api/chat", _plan_chat, _errors(request))


async def generate(request: Request) -> Response:
    return await serve(_as_json(request), "/api/generate", _plan_generate, _errors(request))


async def tags(request: Request) -> Response:
    rt = runtime(request)
    try:
        key = rt.keys.authenticate(request.headers)
    except GatewayError as error:
        return error_response(error, request_id=request_id(request))
    return JSONResponse(models.tags(FrontDesk(rt).catalog(key)))


async def show(request: Request) -> Response:
    rt = runtime(request)
    limits = rt.settings.limits
    try:
        key = rt.keys.authenticate(request.headers)
        raw = await read_body(_as_json(request), limits.max_body_bytes)
        wire = validate(ShowRequest, parse_json(raw, limits.max_json_depth))
        name = wire.model or wire.name
        if name is None:
            raise BadRequest("model is required.", param="model")
        model = models.resolve(FrontDesk(rt).catalog(key), name)
    except GatewayError as error:
        return error_response(error, request_id=request_id(request))
    return JSONResponse(models.show(model))


async def ps(request: Request) -> Response:
    """Nothing is loaded in the gateway: the grid's nodes load models as jobs come."""
    rt = runtime(request)
    try:
        rt.keys.authenticate(request.headers)
    except GatewayError as error:
        return error_response(error, request_id=request_id(request))
    return JSONResponse({"models": []})


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_VERSION})


def wants_page(request: Request) -> bool:
    """A browser navigating here asks for HTML; Ollama's clients and probes do not. The
    Ollama address (``ollama.port``) serves no console: its scripts and APIs are not there."""
    if request.scope.get("state", {}).get(OLLAMA_ADDRESS):
        return False
    return "text/html" in request.headers.get("accept", "")


def root(page: Handler | None) -> Handler:
    """``GET /`` and ``HEAD /``: the console's page for a browser (when the console is on),
    else Ollama's ``Ollama is running``, which Ollama clients probe the base URL for."""

    async def home(request: Request) -> Response:
        if page is not None and wants_page(request):
            return await page(request)
        return PlainTextResponse(RUNNING)

    return home


async def other_paths(request: Request) -> Response:
    """The rest of ``/api``: a refused Ollama route says why, a wrong method is a 405, an
    unknown path a 404, all in Ollama's shape."""
    path = request.url.path.rstrip("/") or "/"
    error: GatewayError
    refused = REFUSED.get(path) or (
        REFUSED["/api/blobs"] if path.startswith("/api/blobs/") else None
    )
    if refused is not None:
        error = NotServed(f"{path} is not supported by this gateway: {refused}")
    elif path in SERVED:
        method = SERVED[path]
        error = MethodNotAllowed(
            f"Method {request.method} is not allowed on {path}; use {method}.",
            headers={"allow": method},
        )
    else:
        error = NotFound(f"Unknown endpoint: {request.method} {path}.", code="unknown_url")
    return error_response(error, request_id=request_id(request))


def ollama_routes(page: Handler | None) -> list[Route]:
    """The door's routes; ``page`` is the console's home page, when the console is on."""
    return [
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
        Route(
            "/api{rest:path}",
            other_paths,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
        ),
        Route("/", root(page), methods=["GET", "HEAD"]),
    ]
