"""The HTTP doors' thin wrapper around the front desk (:mod:`gateway.serving.desk`).

A door gives :func:`serve` a planner (its wire request -> the engine's :class:`Plan` and a
:class:`Codec` for its wire format) and an error renderer; :func:`serve` reads what HTTP carries
(the key, the body, ``Cache-Control``, the client's timeout, trace headers: read once, by the
middleware's one pass over the headers) into a :class:`Call`, plans the request in a worker
thread where the planner asks for it, and hands both to the desk; the run's events then go out
as SSE or one JSON answer (:mod:`gateway.serving.answers`). :func:`served` does the same for the
small routes (stored responses, token counts): one exchange record each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from gateway.config import KeySettings, LimitSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.planning import Plan
from gateway.engine.tools.spec import schema_nodes
from gateway.errors import BadRequest, GatewayError
from gateway.http.bodies import parse_json, read_body
from gateway.http.common import client_timeout, deadline_cap, request_id
from gateway.http.exchange import Exchange
from gateway.http.middleware import headers_of
from gateway.http.responses import DeferredJSONResponse, ErrorRenderer, EventStreamResponse
from gateway.ops.access import LOGGED_ELSEWHERE
from gateway.runtime import Runtime
from gateway.serving.answers import Codec, stream_body
from gateway.serving.desk import Call, FrontDesk, Run
from gateway.state import runtime

T = TypeVar("T")

#: The W3C trace-context headers a client may send; traces continue them (ops/tracing.py).
TRACE_HEADERS = ("traceparent", "tracestate")


def desk(request: Request) -> FrontDesk:
    return FrontDesk(runtime(request))


def cache_directives(headers: Mapping[str, str]) -> set[str]:
    """The request's ``Cache-Control`` directives, lower-cased (``no-cache``, ``no-store``...)."""
    value = headers.get("cache-control", "")
    return {part.strip().split("=", 1)[0].lower() for part in value.split(",") if part.strip()}


def trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace-context headers the client sent (a trace continues them)."""
    return {n: v for n in TRACE_HEADERS if (v := headers.get(n))}


def keepalive_interval(headers: Mapping[str, str], limits: LimitSettings) -> float:
    """Pings come at least twice per client read timeout, so a client never times out waiting."""
    timeout = client_timeout(headers)
    if timeout is None or timeout <= 0:
        return limits.keepalive_interval
    return max(0.5, min(limits.keepalive_interval, timeout / 2))


#: The request fields that carry client JSON schemas, in every door's wire format.
SCHEMA_FIELDS = ("tools", "functions", "response_format", "text", "output_format", "format")


#: A body smaller than this, with no schemas, is planned on the loop (it takes microseconds).
LIGHT_BODY_BYTES = 16 * 1024


def _has_schemas(data: Any) -> bool:
    return isinstance(data, dict) and any(name in data for name in SCHEMA_FIELDS)


def _within_budget(data: Any, most: int) -> None:
    parts = [data[name] for name in SCHEMA_FIELDS if name in data]
    if parts and schema_nodes(parts, most) > most:
        raise BadRequest(
            f"The request's tools and output format hold more than {most} values together "
            "(limits.max_schema_nodes); send fewer or smaller tools.",
            param="tools" if "tools" in data else None,
            code="schemas_too_large",
        )


async def bounded(data: Any, limits: LimitSettings) -> None:
    """Refuse a request whose schemas exceed the per-request budget, before anything else
    looks at them (validation, compiling): counted in a worker thread, stopping at the bound,
    so even a body of megabytes of tools costs the event loop nothing."""
    if _has_schemas(data):
        await asyncio.to_thread(_within_budget, data, limits.max_schema_nodes)


def call_of(request: Request, key: KeySettings, route: str, **options: Any) -> Call:
    """What the desk needs of an HTTP request, as plain values; ``options`` (what a planner
    set for the run, see :attr:`RequestContext.options`) replace what HTTP said."""
    headers = headers_of(request)
    said = cache_directives(headers)
    values: dict[str, Any] = {
        "no_cache": "no-cache" in said,
        "no_store": "no-store" in said,
        "keepalive": keepalive_interval(headers, runtime(request).settings.limits),
        "trace_headers": trace_headers(headers),
    }
    values.update(options)
    return Call(key=key, route=route, request_id=request_id(request), **values)


@dataclass(slots=True)
class RequestContext:
    """What a door's planner may use to plan a request."""

    request: Request
    desk: FrontDesk
    key: KeySettings
    data: dict[str, Any]
    exchange: Exchange
    #: What a planner may set for the run (a background response: its own deadline, ...).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> Runtime:
        return self.desk.rt

    @property
    def limits(self) -> LimitSettings:
        limits: LimitSettings = self.desk.rt.settings.limits
        return limits

    @property
    def catalog(self) -> ModelCatalog:
        """The models as this key sees them: one it may not use does not exist (a 404)."""
        return self.desk.catalog(self.key)

    @property
    def client_timeout(self) -> float | None:
        """How long the client waits for a non-streamed answer (its deadline's cap)."""
        return deadline_cap(headers_of(self.request), self.data)

    #: Whether planning may take long (client schemas to compile, a large body).
    heavy: bool = True

    async def offload(self, work: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound planning (schemas, validation of a large body) in a worker thread:
        the event loop keeps serving every other client meanwhile. A light request (no
        schemas, a small body) is planned at once: the hop would cost more than the work."""
        if not self.heavy:
            return work(*args)
        return await asyncio.to_thread(work, *args)


Planner = Callable[[RequestContext], Awaitable[tuple[Plan, Codec]]]
#: Turns a started run into the HTTP answer (the default streams it or sends it whole).
Deliver = Callable[[Run, Codec, ErrorRenderer], Awaitable[Response]]


async def serve(
    request: Request,
    route: str,
    planner: Planner,
    errors: ErrorRenderer,
    deliver: Deliver | None = None,
) -> Response:
    """One completion request, whatever its door: auth, body, plan, then the desk."""
    front = desk(request)
    rt = front.rt
    exchange = Exchange(request_id(request), route)
    request.scope.setdefault("state", {})[LOGGED_ELSEWHERE] = True  # the desk writes the line
    headers = headers_of(request)  # read once by the middleware: plain values from here on
    exchange.trace_headers = trace_headers(headers)
    data: Any = None
    try:
        key = rt.keys.authenticate(headers)
        exchange.key_name = key.name
        raw = await read_body(request, rt.settings.limits.max_body_bytes)
        data = await _parsed(raw, rt.settings.limits)
        await bounded(data, rt.settings.limits)
        ctx = RequestContext(request, front, key, data, exchange)
        ctx.heavy = len(raw) > LIGHT_BODY_BYTES or _has_schemas(data)
        plan, codec = await planner(ctx)
    except GatewayError as error:
        asked = data.get("model") if isinstance(data, dict) else None
        await front.refuse(exchange, error, asked)
        return errors(error, {})
    try:
        call = call_of(request, key, route, **ctx.options)
        run = await front.open(call, plan, exchange)
    except GatewayError as error:  # recorded by the desk
        return errors(error, {})
    return await (deliver or answer)(run, codec, errors)


async def answer(run: Run, codec: Codec, errors: ErrorRenderer) -> Response:
    """The run as the client asked for it: a stream of events, or one JSON answer."""
    plan, exchange, headers = run.plan, run.exchange, run.headers

    async def on_close(status: int, outcome: str) -> None:
        if exchange.outcome == "ok":
            exchange.status, exchange.outcome = status, outcome
        await run.finish()

    if plan.stream:
        body = stream_body(codec, plan, run.choices, run.events, exchange, headers, run.estimate)
        stream = EventStreamResponse(body, headers, on_close, errors, codec.media_type)
        return stream  # type: ignore[return-value]

    async def produce() -> dict[str, Any]:
        try:
            whole = await run.collect()
            await codec.complete(whole, exchange)
            return codec.render(whole)
        finally:
            ids = [*exchange.job_ids, *(j for c in run.choices for j in c.job_ids[1:])]
            headers["x-job-id"] = ",".join(dict.fromkeys(ids))  # the jobs asked again included
            await run.events.aclose()  # type: ignore[attr-defined]
            await run.release()  # before the answer is written (see Exchange.release)

    return DeferredJSONResponse(produce, headers, on_close, errors)  # type: ignore[return-value]


Handler = Callable[[Request, FrontDesk, Call, Exchange], Awaitable[Response]]


async def served(request: Request, route: str, handler: Handler, errors: ErrorRenderer) -> Response:
    """A request beside the completions (a stored response, a token count): authenticated,
    one exchange record (metrics, access line), errors in the door's shape. The handler
    admits what it does through the desk (:meth:`FrontDesk.hold`)."""
    front = desk(request)
    rt = front.rt
    exchange = Exchange(request_id(request), route)
    request.scope.setdefault("state", {})[LOGGED_ELSEWHERE] = True
    try:
        key = rt.keys.authenticate(headers_of(request))
        exchange.key_name = key.name
        response = await handler(request, front, call_of(request, key, route), exchange)
    except GatewayError as error:
        await front.refuse(exchange, error)
        return errors(error, {})
    exchange.status = getattr(response, "status_code", 200)
    await front.finish(exchange)
    return response


async def read_json(request: Request, limits: LimitSettings) -> Any:
    return await _parsed(await read_body(request, limits.max_body_bytes), limits)


async def _parsed(raw: bytes, limits: LimitSettings) -> Any:
    """The body's JSON; a large one is parsed (and its depth checked) in a worker thread."""
    if len(raw) > LIGHT_BODY_BYTES:
        return await asyncio.to_thread(parse_json, raw, limits.max_json_depth)
    return parse_json(raw, limits.max_json_depth)
