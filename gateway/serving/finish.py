"""The record of every request the desk admitted (or refused): the ledger's in-flight row at
admission; at the end, metrics, the ledger's final row (replacing it) and the access line."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.http.exchange import Exchange
from gateway.ledger import UsageRecord
from gateway.ledger.record import IN_FLIGHT
from gateway.ops.logs import capped_names, log_request

if TYPE_CHECKING:
    from gateway.runtime import Runtime

access_log = logging.getLogger("gateway.access")


async def finish(rt: Runtime, exchange: Exchange) -> None:
    """Cleanups not yet run, then metrics, the ledger row and the access log line."""
    await exchange.release()
    rt.live.finished(exchange)
    metrics = rt.metrics
    key = exchange.key_name or "-"
    model = exchange.model or "-"
    metrics.observe_request(exchange.route, model, key, exchange.status, exchange.duration)
    if exchange.ttft is not None:
        metrics.observe_ttft(model, exchange.ttft)
    if exchange.queue_wait is not None:
        metrics.observe_queue_wait(model, exchange.queue_wait)
    if exchange.jobs_saved:
        metrics.count_jobs_saved(exchange.jobs_saved)
    if exchange.cached:
        metrics.add_tokens_saved(key, model, exchange.tokens_saved)
    elif exchange.prompt_tokens or exchange.completion_tokens:
        metrics.add_tokens(key, model, exchange.prompt_tokens, exchange.completion_tokens)
    for _ in range(exchange.log_rewrites):
        metrics.count_log_rewrite()
    if exchange.key_name is not None and exchange.model is not None:
        rt.ledger.complete(_usage(rt, exchange), replaces=exchange.resumed)
    exchange.mark("finished")
    rt.tracing.record(exchange)
    log_request(
        access_log,
        request_id=exchange.request_id,
        route=exchange.route,
        status=exchange.status,
        duration_ms=exchange.duration * 1000,
        key=exchange.key_name,
        model=exchange.model,
        job_ids=exchange.job_ids,
        ttft_ms=None if exchange.ttft is None else exchange.ttft * 1000,
        queue_ms=None if exchange.queue_wait is None else exchange.queue_wait * 1000,
        prompt_tokens=exchange.prompt_tokens,
        completion_tokens=exchange.completion_tokens,
        outcome=exchange.outcome,
        stream=exchange.stream,
        ignored_fields=capped_names(exchange.ignored) or None,
        **_logged_prompt(rt, exchange),
    )


def begin(rt: Runtime, exchange: Exchange, charged: int) -> None:
    """The ledger's in-flight row of a request just admitted, with the tokens charged for it:
    a process that dies before :func:`finish` still leaves a row for it (``in_flight``, then
    ``interrupted`` at the next start)."""
    if exchange.key_name is None or exchange.model is None:
        return
    prompt = min(charged, exchange.prompt_tokens)
    rt.ledger.begin(
        _usage(rt, exchange, prompt, charged - prompt, outcome=IN_FLIGHT, duration_ms=0.0)
    )


def _logged_prompt(rt: Runtime, exchange: Exchange) -> dict[str, Any]:
    """The prompt, in the access log only when the operator turned ``log_prompts`` on."""
    if rt.settings.logging.log_prompts and exchange.prompt_text is not None:
        return {"prompt": exchange.prompt_text}
    return {}


def _usage(
    rt: Runtime,
    exchange: Exchange,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    *,
    outcome: str | None = None,
    duration_ms: float | None = None,
) -> UsageRecord:
    """The request's ledger row; :func:`begin` gives the figures it charged at admission."""
    return UsageRecord(
        request_id=exchange.request_id,
        time=exchange.wall_started,
        key_name=exchange.key_name or "-",
        model=exchange.model or "-",
        endpoint=exchange.route,
        stream=exchange.stream,
        prompt_tokens=exchange.prompt_tokens if prompt_tokens is None else prompt_tokens,
        completion_tokens=(
            exchange.completion_tokens if completion_tokens is None else completion_tokens
        ),
        job_ids=tuple(exchange.job_ids),
        outcome=exchange.outcome if outcome is None else outcome,
        status_code=exchange.status,
        duration_ms=round(exchange.duration * 1000, 1) if duration_ms is None else duration_ms,
        queue_ms=None if exchange.queue_wait is None else exchange.queue_wait * 1000,
        ttft_ms=None if exchange.ttft is None else exchange.ttft * 1000,
        prompt_text=exchange.prompt_text if rt.settings.ledger.log_prompts else None,
        cached=exchange.cached,
        tokens_saved=exchange.tokens_saved,
    )
