"""``POST /v1/chat/completions`` and ``POST /v1/completions``.

The data path, top to bottom: auth -> body -> plan (limits, prompt rendering) -> admission
-> job submission -> coalesced polling -> log-to-delta -> SSE/JSON -> usage and metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.answers import AnswerShape
from gateway.bodies import parse_json, read_body, validate
from gateway.catalog import ModelCatalog
from gateway.choices import ChoiceState
from gateway.config import LimitSettings
from gateway.errors import GatewayError, RateLimited
from gateway.exchange import Exchange
from gateway.planning import Plan, plan_chat, plan_text
from gateway.protocol import ChatCompletionRequest, CompletionRequest
from gateway.responses import DeferredJSONResponse, EventStreamResponse
from gateway.routes.common import (
    client_timeout,
    deadline_cap,
    error_response,
    request_id,
    runtime,
)
from gateway.streaming import collect, sse_stream

Planner = Callable[[dict[str, Any], ModelCatalog, LimitSettings, float | None], Plan]


def _plan_chat(data: dict[str, Any], c: ModelCatalog, lim: LimitSettings, t: float | None) -> Plan:
    return plan_chat(validate(ChatCompletionRequest, data), c, lim, t)


def _plan_text(data: dict[str, Any], c: ModelCatalog, lim: LimitSettings, t: float | None) -> Plan:
    return plan_text(validate(CompletionRequest, data), c, lim, t)


def _estimate(plan: Plan, limits: LimitSettings) -> int:
    """Tokens charged at admission; corrected to the real count when the answer ends."""
    per_choice = plan.max_tokens or limits.completion_estimate
    return plan.prompt_tokens + per_choice * plan.n_choices


def _keepalive(request: Request, limits: LimitSettings) -> float:
    """Pings come at least twice per client read timeout, so a client never times out waiting."""
    timeout = client_timeout(request)
    if timeout is None or timeout <= 0:
        return limits.keepalive_interval
    return max(0.5, min(limits.keepalive_interval, timeout / 2))


async def chat_completions(request: Request) -> Response:
    return await _complete(request, "/v1/chat/completions", "chat", _plan_chat)


async def completions(request: Request) -> Response:
    return await _complete(request, "/v1/completions", "text", _plan_text)


async def _complete(request: Request, route: str, kind: str, planner: Planner) -> Response:
    rt = runtime(request)
    settings = rt.settings
    exchange = Exchange(request_id(request), route)
    headers: dict[str, str] = {}
    try:
        key = rt.keys.authenticate(request.headers)
        exchange.key_name = key.name
        raw = await read_body(request, settings.limits.max_body_bytes)
        data = parse_json(raw, settings.limits.max_json_depth)
        plan = planner(data, rt.catalog, settings.limits, deadline_cap(request, data))
        exchange.model = plan.model.name
        exchange.stream = plan.stream
        exchange.prompt_tokens = plan.prompt_tokens
        exchange.ignored = plan.ignored
        if settings.logging.log_prompts or settings.ledger.log_prompts:
            exchange.prompt_text = "\n\n".join(dict.fromkeys(plan.prompts))
        admission = await rt.limiter.admit(
            key, plan.model.name, _estimate(plan, settings.limits), aliases=plan.model.aliases
        )
        headers.update(admission.headers)

        async def release_admission(done: Exchange) -> None:
            await admission.release(done.prompt_tokens + done.completion_tokens)

        exchange.cleanups.append(release_admission)
        deadline = asyncio.get_running_loop().time() + plan.timeout
        jobs = await rt.completions.submit(key, rt.account(key), plan, deadline)
    except GatewayError as error:
        if isinstance(error, RateLimited) and exchange.key_name:
            rt.metrics.count_rate_limited(exchange.key_name, error.code or "rate_limited")
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        # No job ran: the ledger, the token metrics and the limits' correction count nothing.
        exchange.prompt_tokens = 0
        await rt.finish(exchange)
        return error_response(error, headers)

    exchange.job_ids = list(jobs.ids)

    async def release_jobs(_: Exchange) -> None:
        jobs.release()

    exchange.cleanups.append(release_jobs)
    exchange.submitted_at = time.perf_counter()
    headers["x-job-id"] = ",".join(jobs.ids)
    choices = [
        ChoiceState(i, job_id, plan, settings.upstream.strip_ansi)
        for i, job_id in enumerate(jobs.ids)
    ]
    events = rt.completions.events(
        plan, jobs, deadline, choices, keepalive=_keepalive(request, settings.limits)
    )
    shape = AnswerShape(kind, plan.model.name, settings.server.system_fingerprint)

    async def on_close(status: int, outcome: str) -> None:
        if exchange.outcome == "ok":
            exchange.status, exchange.outcome = status, outcome
        await rt.finish(exchange)

    if plan.stream:
        body = sse_stream(shape, plan, choices, events, exchange)
        return EventStreamResponse(body, headers, on_close)  # type: ignore[return-value]

    async def produce() -> dict[str, Any]:
        try:
            return await collect(shape, plan, choices, events, exchange)
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            await exchange.release()  # before the answer is written (see Exchange.release)

    return DeferredJSONResponse(produce, headers, on_close)  # type: ignore[return-value]
