"""``POST /v1/chat/completions`` and ``POST /v1/completions``: the OpenAI door's completions.

Each route validates its wire request, translates it into the engine's terms
(:mod:`gateway.openai.translate`) and hands it to the lifecycle every door shares
(:func:`gateway.serving.web.serve`) with its codec (:mod:`gateway.openai.codec`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.planning import Plan
from gateway.http.bodies import validate
from gateway.http.responses import openai_error
from gateway.openai.codec import CompletionCodec, completion_codec
from gateway.openai.protocol import ChatCompletionRequest, CompletionRequest
from gateway.openai.translate import plan_chat, plan_text
from gateway.serving.answers import Codec
from gateway.serving.web import RequestContext, serve


def _codec(ctx: RequestContext, kind: str, plan: Plan) -> CompletionCodec:
    return completion_codec(ctx.runtime.settings.server.system_fingerprint, kind, plan)


async def _plan_chat(ctx: RequestContext) -> tuple[Plan, Codec]:
    catalog, limits, timeout = ctx.catalog, ctx.limits, ctx.client_timeout

    def work() -> Plan:  # the client's schemas are checked here: off the event loop
        return plan_chat(validate(ChatCompletionRequest, ctx.data), catalog, limits, timeout)

    plan = await ctx.offload(work)
    return plan, _codec(ctx, "chat", plan)


async def _plan_text(ctx: RequestContext) -> tuple[Plan, Codec]:
    catalog, limits, timeout = ctx.catalog, ctx.limits, ctx.client_timeout

    def work() -> Plan:
        return plan_text(validate(CompletionRequest, ctx.data), catalog, limits, timeout)

    plan = await ctx.offload(work)
    return plan, _codec(ctx, "text", plan)


async def chat_completions(request: Request) -> Response:
    return await serve(request, "/v1/chat/completions", _plan_chat, openai_error)


async def completions(request: Request) -> Response:
    return await serve(request, "/v1/completions", _plan_text, openai_error)
