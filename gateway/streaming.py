"""Events -> answers: SSE chunks for ``stream: true``, one JSON object otherwise.

Streams send the assistant role first, then content and ``tool_calls`` deltas as they come,
a final chunk per choice carrying ``finish_reason``, the usage chunk only when
``stream_options.include_usage`` asked for it (its empty ``choices`` breaks naive clients),
and ``data: [DONE]``. An error after the stream began is sent as ``data: {"error": ...}`` and
the stream ends: the openai SDK raises it as an APIError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from gateway.answers import AnswerShape, sse
from gateway.choices import (
    ChoiceEnd,
    ChoiceReset,
    ChoiceState,
    Event,
    KeepAlive,
    TextDelta,
    ToolCallDelta,
)
from gateway.errors import GatewayError, InternalError
from gateway.exchange import Exchange
from gateway.planning import Plan

logger = logging.getLogger("gateway.streaming")

KEEPALIVE_COMMENT = b": ping\n\n"
DONE = b"data: [DONE]\n\n"


def completion_tokens(choices: Sequence[ChoiceState]) -> int:
    return sum(c.completion_tokens for c in choices)


def settle(exchange: Exchange, choices: Sequence[ChoiceState]) -> None:
    """Copy what the choices counted into the request's record."""
    exchange.completion_tokens = completion_tokens(choices)
    exchange.log_rewrites = sum(c.cursor.rewrites for c in choices)
    asked_again = [j for c in choices for j in c.job_ids[1:] if j not in exchange.job_ids]
    if asked_again:
        exchange.job_ids = [*exchange.job_ids, *asked_again]


async def sse_stream(
    shape: AnswerShape,
    plan: Plan,
    choices: Sequence[ChoiceState],
    events: AsyncIterator[Event],
    exchange: Exchange,
) -> AsyncIterator[bytes]:
    """The SSE body. The first item is produced only once the first event is known, so a
    failure before any text can still be answered with a real status code."""
    try:
        first: Event | None = await anext(events)
    except StopAsyncIteration:
        first = None
    except GatewayError:
        await exchange.release()  # answered with a status of its own: free the slot first
        raise
    if shape.chat:
        yield b"".join(sse(shape.chunk(i, role=True)) for i in range(plan.n_choices))
    echo = plan.echo_prompts
    if echo is not None:
        yield b"".join(sse(shape.chunk(i, echo[i])) for i in range(plan.n_choices))
    try:
        if first is not None:
            yield _encode(shape, first, exchange)
            async for event in events:
                yield _encode(shape, event, exchange)
    except (GeneratorExit, asyncio.CancelledError):  # the client left: count what it got
        settle(exchange, choices)
        raise
    except Exception as exc:
        if isinstance(exc, GatewayError):
            error = exc
        else:  # a bug: the client still gets a clean end, the log gets the traceback
            logger.exception("stream failed after it began")
            error = InternalError("The gateway failed while streaming; it has been logged.")
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        settle(exchange, choices)
        await exchange.release()
        yield sse(error.to_dict())
        return
    settle(exchange, choices)
    await exchange.release()  # before the last bytes: the client may send its next request at once
    if plan.include_usage:
        yield sse(shape.usage_chunk(plan.prompt_tokens, exchange.completion_tokens))
    yield DONE


def _encode(shape: AnswerShape, event: Event, exchange: Exchange) -> bytes:
    if isinstance(event, TextDelta):
        exchange.mark_text()
        return shape.text_event(event.index, event.text)
    if isinstance(event, ToolCallDelta):
        exchange.mark_text()
        return sse(shape.chunk(event.index, tool_call=event.call))
    if isinstance(event, ChoiceEnd):
        return sse(shape.chunk(event.index, finish=event.reason))
    if isinstance(event, ChoiceReset):  # only non-streamed answers are ever reset
        return b""
    assert isinstance(event, KeepAlive)
    return KEEPALIVE_COMMENT


async def collect(
    shape: AnswerShape,
    plan: Plan,
    choices: Sequence[ChoiceState],
    events: AsyncIterator[Event],
    exchange: Exchange,
) -> dict[str, Any]:
    """The non-streamed answer: wait for every choice to end, then one JSON object."""
    parts: list[list[str]] = [[] for _ in range(plan.n_choices)]
    calls: list[list[dict[str, Any]]] = [[] for _ in range(plan.n_choices)]
    reasons = ["stop"] * plan.n_choices
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                exchange.mark_text()
                parts[event.index].append(event.text)
            elif isinstance(event, ToolCallDelta):
                exchange.mark_text()
                _add_call_piece(calls[event.index], event)
            elif isinstance(event, ChoiceReset):
                parts[event.index].clear()
                calls[event.index].clear()
            elif isinstance(event, ChoiceEnd):
                reasons[event.index] = event.reason
    except GatewayError:
        settle(exchange, choices)  # answers asked for again were generated all the same
        raise
    texts = ["".join(p) for p in parts]
    if plan.echo_prompts is not None:
        texts = [prompt + text for prompt, text in zip(plan.echo_prompts, texts, strict=True)]
    settle(exchange, choices)
    return shape.final(
        texts,
        reasons,
        plan.prompt_tokens,
        exchange.completion_tokens,
        calls if any(calls) else None,
    )


def _add_call_piece(calls: list[dict[str, Any]], event: ToolCallDelta) -> None:
    piece = event.call
    if piece.id is not None:
        function = {"name": piece.name, "arguments": ""}
        calls.append({"id": piece.id, "type": "function", "function": function})
    calls[piece.index]["function"]["arguments"] += piece.arguments
