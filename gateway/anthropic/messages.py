"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Messages door.

A Messages request is validated (:mod:`.protocol`), translated into the engine's conversation
(:mod:`.translate`) and handed to the front desk (:func:`gateway.serving.web.serve`) with
this door's codec (:mod:`.answers`) and its error shape (:mod:`.errors`): the same keys,
limits, ledger and metrics as chat completions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.anthropic.answers import MessageCodec
from gateway.anthropic.errors import error_response
from gateway.anthropic.planning import plan_message
from gateway.anthropic.protocol import CountTokensRequest
from gateway.anthropic.translate import conversation
from gateway.config import LimitSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.planning import Plan, plan_conversation
from gateway.errors import GatewayError
from gateway.http.bodies import validate
from gateway.http.common import request_id
from gateway.http.exchange import Exchange
from gateway.serving.answers import Codec
from gateway.serving.desk import Call, FrontDesk
from gateway.serving.web import RequestContext, bounded, read_json, serve, served

ROUTE = "/v1/messages"


def _errors(request: Request) -> Callable[[GatewayError, dict[str, str]], Response]:
    rid = request_id(request)
    return lambda error, headers: error_response(error, headers, rid)


async def _plan(ctx: RequestContext) -> tuple[Plan, Codec]:
    # The key's view of the catalog: a model it may not use does not exist. Off the loop:
    # the client's tool schemas are checked while planning.
    plan = await ctx.offload(plan_message, ctx.data, ctx.catalog, ctx.limits, ctx.client_timeout)
    return plan, MessageCodec(plan.model.name, plan.prompt_tokens, ctx.exchange)


async def messages(request: Request) -> Response:
    return await serve(request, ROUTE, _plan, _errors(request))


def _counted(data: Any, catalog: ModelCatalog, limits: LimitSettings) -> Plan:
    wire = validate(CountTokensRequest, data)
    catalog.resolve(wire.model)
    return plan_conversation(conversation(wire), catalog, limits)


async def _count(request: Request, desk: FrontDesk, call: Call, exchange: Exchange) -> Response:
    """Admitted like any request: one request of 0 tokens in the key's (and team's) limits,
    holding a concurrency place while it is counted (off the loop); it runs no job."""
    limits = desk.rt.settings.limits
    data = await read_json(request, limits)
    await bounded(data, limits)
    catalog = desk.catalog(call.key)
    name = data.get("model") if isinstance(data, dict) else None
    if not isinstance(name, str):  # not a request at all: its 400, from validation
        await asyncio.to_thread(_counted, data, catalog, limits)
    admission = await desk.hold(call, catalog.resolve(str(name)), exchange)
    try:
        plan = await asyncio.to_thread(_counted, data, catalog, limits)
    finally:
        await admission.release(0)
    return JSONResponse({"input_tokens": plan.prompt_tokens}, headers=admission.headers)


async def count_tokens(request: Request) -> Response:
    """The gateway's estimate of the prompt the request would send: system, tools and the
    instructions that describe them included."""
    return await served(request, ROUTE + "/count_tokens", _count, _errors(request))
