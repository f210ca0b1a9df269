"""``create_app(settings)``: routes, middleware, and a lifespan that owns every client."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin.live import live_snapshot
from gateway.admin.openapi import with_admin_api
from gateway.admin.routes import admin_routes
from gateway.anthropic import batches as anthropic_batches
from gateway.anthropic import routes as anthropic
from gateway.anthropic.batch_lines import AnthropicLines
from gateway.anthropic.errors import error_shape as anthropic_error_shape
from gateway.anthropic.messages import count_tokens, messages
from gateway.anthropic.openapi import with_messages_api
from gateway.batches.lines import LineDoor
from gateway.batches.service import BatchService
from gateway.config import LimitSettings, Settings
from gateway.console.routes import console_routes
from gateway.demo import demo_admin_key, with_demo_defaults
from gateway.emulator.server import EmbeddedEmulator
from gateway.errors import (
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
)
from gateway.http.common import error_response
from gateway.http.routing import Router
from gateway.http.shapes import ErrorShapes
from gateway.ollama.errors import error_shape as ollama_error_shape
from gateway.ollama.listener import OllamaListenerMiddleware
from gateway.ollama.openapi import with_ollama_api
from gateway.ollama.routes import ollama_routes
from gateway.openai import batches, files
from gateway.openai.batch_lines import OpenAILines
from gateway.openai.chat import chat_completions, completions
from gateway.openai.models import get_model, list_models
from gateway.openai.openapi import openapi_document as openai_document
from gateway.openai.responses.create import create_response
from gateway.openai.responses.door import ResponsesDoor
from gateway.openai.responses.routes import (
    cancel_response,
    compact_response,
    count_input_tokens,
    delete_response,
    list_input_items,
    retrieve_response,
)
from gateway.openai.unsupported import allowed_methods, unsupported
from gateway.ops.live_share import LiveShare, share_directory
from gateway.ops.logs import LoggingSetup, configure_logging
from gateway.ops.metrics import Metrics, render_latest
from gateway.ops.metrics_access import token_matches
from gateway.ops.middleware import GatewayMiddleware
from gateway.ops.shutdown import drain_on_signal, reload_on_sighup
from gateway.redaction import config_secrets
from gateway.runtime import Runtime

logger = logging.getLogger("gateway")

_ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]

#: The ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers browsers may read.
_RATE_WORDS = ("limit", "remaining", "reset")


def error_shapes() -> ErrorShapes:
    """Each door's error shape by path prefix, for answers no route writes (the connection
    guard's, the header guard's, the handlers below); OpenAI's for every other path."""
    return (
        ErrorShapes()
        .with_door("/v1/messages", anthropic_error_shape)
        .with_door("/api/", ollama_error_shape)
    )


def _shaped(request: Request, error: GatewayError) -> Response:
    shapes: ErrorShapes = request.app.state.error_shapes
    return shapes.response(error, request.url.path)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:  # Allow: every method of every route at the path
        allow = {"allow": ", ".join(allowed_methods(request))}
        return _shaped(
            request,
            MethodNotAllowed(
                f"Method {request.method} is not allowed on {request.url.path}.", headers=allow
            ),
        )
    if exc.status_code == 404:
        return _shaped(
            request, NotFound(f"Unknown endpoint: {request.url.path}.", code="unknown_url")
        )
    return _shaped(request, BadRequest(str(exc.detail)))


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _shaped(request, exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _shaped(
        request, InternalError("The gateway failed to handle this request; it has been logged.")
    )


def register_secrets(setup: LoggingSetup, settings: Settings) -> None:
    """Mask every secret the config holds in every log line this process writes."""
    setup.redactor.register_secrets(config_secrets(settings))


def openapi_document(limits: LimitSettings | None = None) -> dict[str, Any]:
    """The gateway's own API: every door's routes in one document, composed here so that no
    door imports another."""
    return with_admin_api(with_ollama_api(with_messages_api(openai_document(limits))))


async def _openapi(request: Request) -> Response:
    """``GET /openapi.json``: :func:`openapi_document` stating the real limits."""
    limits = request.app.state.runtime.settings.limits
    return JSONResponse(openapi_document(limits))


async def _metrics(request: Request) -> Response:
    token = request.app.state.metrics_token
    if not token_matches(token, request.headers.get("authorization")):
        return error_response(
            AuthenticationFailed("/metrics needs the metrics bearer token.", code="invalid_token")
        )
    body, content_type = render_latest(request.app.state.metrics)
    return Response(body, media_type=content_type)


def batch_doors(responses: ResponsesDoor) -> dict[str, LineDoor]:
    """The wire formats whose batches the runner answers (see gateway/batches/lines.py)."""
    return {"openai": OpenAILines(responses), "anthropic": AnthropicLines()}


def create_app(
    settings: Settings, metrics: Metrics | None = None, logging_setup: LoggingSetup | None = None
) -> Starlette:
    """The ASGI app. Nothing is started until the lifespan runs."""
    app_metrics = metrics or Metrics.create()
    shapes = error_shapes()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            effective = settings
            base_url = settings.upstream.base_url
            if base_url is None:
                emulator = EmbeddedEmulator.from_settings(settings.emulator)
                await stack.enter_async_context(emulator)
                base_url = emulator.base_url
                effective = with_demo_defaults(settings, settings.emulator.token)
                logger.warning(
                    "no upstream configured: serving the embedded emulator at %s "
                    "(demo key: %s; demo admin key: %s; models: %s; usage ledger: %s)",
                    base_url,
                    settings.emulator.demo_key,
                    demo_admin_key(effective) or "none (admin keys are configured)",
                    ", ".join(m.name for m in effective.models),
                    effective.ledger.url,
                )
            runtime = Runtime.build(effective, base_url, app_metrics)
            if logging_setup is not None:
                runtime.on_reload = lambda fresh: register_secrets(logging_setup, fresh)
            stack.push_async_callback(runtime.aclose)
            await runtime.start()
            # Each door's own state lives with the app, not the runtime (closed first).
            responses = ResponsesDoor(effective, runtime.databases)
            stack.push_async_callback(responses.aclose)
            await responses.start(runtime)
            app.state.responses = responses
            batch_service = BatchService(effective, runtime.databases, batch_doors(responses))
            stack.push_async_callback(batch_service.aclose)
            await batch_service.start(runtime)
            app.state.batches = batch_service
            if settings.upstream.base_url is not None:
                stack.enter_context(reload_on_sighup(runtime.reload))
            stack.enter_context(drain_on_signal(runtime.begin_drain))
            stack.callback(app_metrics.mark_process_dead)
            app.state.runtime = runtime
            if app_metrics.multiprocess and (directory := share_directory()) is not None:
                # Several workers: /admin/live shows them all (gateway/ops/live_share.py).
                share = LiveShare(directory, lambda: live_snapshot(runtime))
                app.state.live_share = await stack.enter_async_context(share)
            yield

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/input_tokens", count_input_tokens, methods=["POST"]),
        Route("/v1/responses/compact", compact_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
        *files.routes(),
        *batches.routes(),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        *anthropic_batches.routes(),
        Route("/v1/messages{rest:path}", anthropic.other_paths, methods=_ANY),
        Route(
            "/v1/models",
            anthropic.for_anthropic_clients(anthropic.list_models, list_models),
            methods=["GET"],
        ),
        Route(
            "/v1/models/{model:path}",
            anthropic.for_anthropic_clients(anthropic.get_model, get_model),
            methods=["GET"],
        ),
        Route("/openapi.json", _openapi, methods=["GET"]),
        *admin_routes(),
        Route("/v1/{rest:path}", unsupported, methods=_ANY),
    ]
    if settings.server.metrics_port is None:  # else served on its own port (gateway/cli.py)
        routes.append(Route("/metrics", _metrics, methods=["GET"]))
    console = console_routes() if settings.server.console else []
    page = next((r.endpoint for r in console if r.path == "/"), None)
    # Ollama's door; its / is the console's page for a browser, "Ollama is running" else.
    routes.extend(ollama_routes(page))
    routes[:0] = [r for r in console if r.path != "/"]
    middleware = [
        # Request id, access line, in-flight counts and header guard in one ASGI hop.
        Middleware(GatewayMiddleware, metrics=app_metrics, shapes=shapes),
    ]
    if settings.ollama.port is not None:  # the Ollama door's own address (gateway/cli.py)
        listener = Middleware(
            OllamaListenerMiddleware,
            port=settings.ollama.port,
            default_key=settings.ollama.default_key,
        )
        middleware.insert(0, listener)
    if settings.server.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.server.cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=[
                    "x-request-id",
                    "x-job-id",
                    "retry-after",
                    *(f"x-ratelimit-{w}-{u}" for w in _RATE_WORDS for u in ("requests", "tokens")),
                ],
            )
        )
    app = Starlette(
        middleware=middleware,
        exception_handlers={
            HTTPException: _http_exception,
            GatewayError: _gateway_error,
            Exception: _unexpected,
        },
    )
    app.router = Router(routes, lifespan=lifespan)  # Starlette's, remembering routes reached
    app.state.metrics = app_metrics
    app.state.error_shapes = shapes
    app.state.metrics_token = settings.server.metrics_token
    return app


def app_from_environment() -> Starlette:
    """Factory for ``uvicorn --factory`` with several workers: config from $GATEWAY_CONFIG."""
    from gateway.config import load_settings
    from gateway.ops.collector import tune_collector

    settings = load_settings()
    setup = configure_logging(settings.logging)
    register_secrets(setup, settings)
    app = create_app(settings, logging_setup=setup)
    tune_collector(settings.server)
    return app
