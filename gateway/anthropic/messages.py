"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Messages door.

A Messages request is validated (:mod:`.protocol`), translated into the engine's conversation
(:mod:`.translate`) and handed to the lifecycle every door shares
(:func:`gateway.http.serving.serve`) with this door's codec (:mod:`.answers`) and its error
shape (:mod:`.errors`): the same keys, limits, ledger and metrics as chat completions.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.anthropic.answers import MessageCodec
from gateway.anthropic.errors import error_response
from gateway.anthropic.protocol import CountTokensRequest, MessagesRequest
from gateway.anthropic.translate import conversation
from gateway.engine.planning import Plan, plan_conversation
from gateway.errors import GatewayError
from gateway.http.bodies import parse_json, read_body, validate
from gateway.http.common import request_id
from gateway.http.serving import Codec, RequestContext, serve
from gateway.state import runtime

ROUTE = "/v1/messages"


def _errors(request: Request) -> Callable[[GatewayError, dict[str, str]], Response]:
    rid = request_id(request)
    return lambda error, headers: error_response(error, headers, rid)


async def _plan(ctx: RequestContext) -> tuple[Plan, Codec]:
    wire = validate(MessagesRequest, ctx.data)
    catalog = ctx.catalog  # the key's view: a model it may not use does not exist
    catalog.resolve(wire.model)  # an unknown model is a 404 before the content is looked at
    plan = plan_conversation(conversation(wire), catalog, ctx.limits, ctx.client_timeout)
    return plan, MessageCodec(plan.model.name, plan.prompt_tokens, ctx.exchange)


async def messages(request: Request) -> Response:
    return await serve(request, ROUTE, _plan, _errors(request))


async def count_tokens(request: Request) -> Response:
    """The gateway's estimate of the prompt the request would send: system, tools and the
    instructions that describe them included. Runs no job, so it is not rate limited."""
    rt = runtime(request)
    limits = rt.settings.limits
    try:
        key = rt.keys.authenticate(request.headers)
        data = parse_json(await read_body(request, limits.max_body_bytes), limits.max_json_depth)
        wire = validate(CountTokensRequest, data)
        catalog = rt.catalog.for_key(key.models)
        catalog.resolve(wire.model)
        plan = plan_conversation(conversation(wire), catalog, limits)
    except GatewayError as error:
        return error_response(error, request_id=request_id(request))
    return JSONResponse({"input_tokens": plan.prompt_tokens})
