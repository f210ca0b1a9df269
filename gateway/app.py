"""``create_app(settings)``: routes, middleware, and a lifespan that owns every client."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.anthropic import batches as anthropic_batches
from gateway.anthropic import routes as anthropic
from gateway.anthropic.messages import count_tokens, messages
from gateway.anthropic.openapi import with_messages_api
from gateway.batches import admin as batch_admin
from gateway.config import Settings
from gateway.console.routes import console_routes
from gateway.demo import with_demo_defaults
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
from gateway.http.middleware import HeaderGuardMiddleware, RequestIdMiddleware
from gateway.openai import batches, files
from gateway.openai.chat import chat_completions, completions
from gateway.openai.models import get_model, list_models
from gateway.openai.openapi import openapi_document
from gateway.openai.responses.create import create_response
from gateway.openai.responses.routes import (
    cancel_response,
    compact_response,
    count_input_tokens,
    delete_response,
    list_input_items,
    retrieve_response,
)
from gateway.openai.unsupported import unsupported
from gateway.ops import admin_keys
from gateway.ops.access import AccessLogMiddleware
from gateway.ops.admin import admin_reload, admin_usage, own_usage
from gateway.ops.health import healthz, readyz, root
from gateway.ops.inflight import InFlightMiddleware
from gateway.ops.live import admin_live
from gateway.ops.logs import LoggingSetup, config_secrets, configure_logging
from gateway.ops.metrics import Metrics, render_latest
from gateway.ops.metrics_access import token_matches
from gateway.ops.shutdown import drain_on_signal, reload_on_sighup
from gateway.runtime import Runtime

logger = logging.getLogger("gateway")

_ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]

#: The ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers browsers may read.
_RATE_WORDS = ("limit", "remaining", "reset")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(
            MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
        )
    if exc.status_code == 404:
        return error_response(
            NotFound(f"Unknown endpoint: {request.url.path}.", code="unknown_url")
        )
    return error_response(BadRequest(str(exc.detail)))


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        InternalError("The gateway failed to handle this request; it has been logged.")
    )


def register_secrets(setup: LoggingSetup, settings: Settings) -> None:
    """Mask every secret the config holds in every log line this process writes."""
    setup.redactor.register_secrets(config_secrets(settings))


async def _openapi(request: Request) -> Response:
    """``GET /openapi.json``: the gateway's own API, every door's routes in one document."""
    limits = request.app.state.runtime.settings.limits  # the document states the real ones
    return JSONResponse(with_messages_api(openapi_document(limits)))


async def _metrics(request: Request) -> Response:
    token = request.app.state.metrics_token
    if not token_matches(token, request.headers.get("authorization")):
        return error_response(
            AuthenticationFailed("/metrics needs the metrics bearer token.", code="invalid_token")
        )
    body, content_type = render_latest(request.app.state.metrics)
    return Response(body, media_type=content_type)


def create_app(
    settings: Settings, metrics: Metrics | None = None, logging_setup: LoggingSetup | None = None
) -> Starlette:
    """The ASGI app. Nothing is started until the lifespan runs."""
    app_metrics = metrics or Metrics.create()

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
                    "(demo key: %s; models: %s)",
                    base_url,
                    settings.emulator.demo_key,
                    ", ".join(m.name for m in effective.models),
                )
            runtime = Runtime.build(effective, base_url, app_metrics)
            if logging_setup is not None:
                runtime.on_reload = lambda fresh: register_secrets(logging_setup, fresh)
            stack.push_async_callback(runtime.aclose)
            await runtime.start()
            if settings.upstream.base_url is not None:
                stack.enter_context(reload_on_sighup(runtime.reload))
            stack.enter_context(drain_on_signal(runtime.begin_drain))
            stack.callback(app_metrics.mark_process_dead)
            app.state.runtime = runtime
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
        *batch_admin.routes(),
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
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/v1/usage", own_usage, methods=["GET"]),
        Route("/admin/usage", admin_usage, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        *admin_keys.ROUTES,
        Route("/admin/live", admin_live, methods=["GET"]),
        Route("/", root, methods=["GET"]),
        Route("/v1/{rest:path}", unsupported, methods=_ANY),
    ]
    if settings.server.metrics_port is None:  # else served on its own port (gateway/cli.py)
        routes.append(Route("/metrics", _metrics, methods=["GET"]))
    if settings.server.console:  # first: its page takes / from the plain probe answer
        routes[:0] = console_routes()
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(AccessLogMiddleware),
        Middleware(InFlightMiddleware, metrics=app_metrics),
        Middleware(HeaderGuardMiddleware),
    ]
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
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_exception,
            GatewayError: _gateway_error,
            Exception: _unexpected,
        },
    )
    app.state.metrics = app_metrics
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
