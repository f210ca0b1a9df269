"""Driving an answer: the events of a run -> a door's bytes (a stream) or one whole answer.

Streams produce their first item only once the first event is known, so a failure before any
text is still answered with a real status code. What the request holds (its concurrency slot,
its job slots) is released before the last bytes are written (:meth:`Exchange.release`). An
error after the stream began goes out through the codec's :meth:`Codec.failure` and the
stream ends cleanly. Whatever ends it, the request is charged by the one rule
(:mod:`gateway.serving.charging`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from gateway.engine.answer import Answer, AnswerBuilder
from gateway.engine.choices import ChoiceState
from gateway.engine.events import ChoiceEnd, Event, TextDelta, ToolCallDelta
from gateway.engine.planning import Plan
from gateway.errors import GatewayError, InternalError
from gateway.http.exchange import Exchange
from gateway.http.responses import EVENT_STREAM, LastChunk
from gateway.serving.charging import abandon, charge

logger = logging.getLogger("gateway.streaming")


class Codec(Protocol):
    """How one request's answer looks on the wire: built by the door with the plan."""

    #: True when the door needs the whole answer of a stream too (to store it, say).
    keeps_answer: bool
    #: The stream's media type: server-sent events, or Ollama's newline-delimited JSON.
    media_type: str

    def opening(self) -> bytes:
        """The stream's first bytes, once the first event is known."""

    def event(self, event: Event) -> bytes:
        """One event as bytes ("" for nothing)."""

    def failure(self, error: GatewayError) -> bytes:
        """An error after the stream began: its last bytes."""

    def closing(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """After the last event of a stream that ended well."""

    def render(self, answer: Answer) -> dict[str, Any]:
        """The non-streamed answer's JSON body."""

    async def complete(self, answer: Answer, exchange: Exchange) -> None:
        """The answer is whole (streamed or not): a door may keep it. Called before release."""


class PlainCodec:
    """Defaults for a codec's optional parts."""

    keeps_answer = False
    media_type = EVENT_STREAM

    async def complete(self, answer: Answer, exchange: Exchange) -> None:
        return None


async def stream_body(
    codec: Codec,
    plan: Plan,
    choices: Sequence[ChoiceState],
    events: AsyncIterator[Event],
    exchange: Exchange,
    headers: dict[str, str] | None = None,
    estimate_tokens: int = 0,
) -> AsyncIterator[bytes]:
    """The stream's body. The first item is produced only once the first event is known.

    ``headers`` are the response's, sent with that first item: ``x-job-id`` is brought up to
    date then, with the jobs asked again before anything reached the client.
    ``estimate_tokens`` is what admission charged: see :mod:`gateway.serving.charging`."""
    try:
        first: Event | None = await anext(events)
    except StopAsyncIteration:
        first = None
    except (GeneratorExit, asyncio.CancelledError):  # the client left before the first event
        abandon(exchange, plan, choices, estimate_tokens)
        raise
    except GatewayError as refusal:
        charge(exchange, plan, choices, estimate_tokens, refusal)
        list_jobs(headers, exchange, choices)
        await exchange.release()  # answered with a status of its own: free the slot first
        raise
    list_jobs(headers, exchange, choices)
    builder = AnswerBuilder(plan.n_choices) if codec.keeps_answer else None
    # Bytes that leave together leave in one write: the opening with the first event, and
    # the events after which every choice has ended with the closing (``tail``).
    tail = b""
    ended, choices_in_all = 0, plan.n_choices  # once all have ended, the rest waits for closing
    try:
        if first is None:
            yield codec.opening()
        else:
            ended = int(type(first) is ChoiceEnd)
            yield codec.opening() + _encode(codec, first, exchange, builder)
            async for event in events:
                data = _encode(codec, event, exchange, builder)
                ended += type(event) is ChoiceEnd
                if ended >= choices_in_all:
                    tail += data
                else:
                    yield data
    except (GeneratorExit, asyncio.CancelledError):  # the client left: count what it got
        exchange.mark("generated")
        abandon(exchange, plan, choices, estimate_tokens)
        raise
    except Exception as exc:
        if isinstance(exc, GatewayError):
            error = exc
        else:  # a bug: the client still gets a clean end, the log gets the traceback
            logger.exception("stream failed after it began")
            error = InternalError("The gateway failed while streaming; it has been logged.")
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        exchange.mark("generated")
        charge(exchange, plan, choices, estimate_tokens, error)
        await exchange.release()
        yield LastChunk(tail + codec.failure(error))
        return
    exchange.mark("generated")
    charge(exchange, plan, choices, estimate_tokens)
    if builder is not None:
        if tail:  # storing the answer takes a write to the database: the text does not wait
            yield tail
            tail = b""
        await codec.complete(
            builder.answer(plan.prompt_tokens, exchange.completion_tokens), exchange
        )
    await exchange.release()  # before the last bytes: the client may send its next request at once
    yield LastChunk(tail + codec.closing(plan.prompt_tokens, exchange.completion_tokens))


def list_jobs(
    headers: dict[str, str] | None, exchange: Exchange, choices: Sequence[ChoiceState]
) -> None:
    """``x-job-id``: every job of the request, the ones asked again included."""
    if headers is not None:
        ids = [*exchange.job_ids, *(j for c in choices for j in c.job_ids[1:])]
        headers["x-job-id"] = ",".join(dict.fromkeys(ids))


def _encode(codec: Codec, event: Event, exchange: Exchange, builder: AnswerBuilder | None) -> bytes:
    if isinstance(event, TextDelta | ToolCallDelta):
        exchange.mark_text()
    if builder is not None:
        builder.add(event)
    return codec.event(event)


async def collect(
    plan: Plan,
    choices: Sequence[ChoiceState],
    events: AsyncIterator[Event],
    exchange: Exchange,
    estimate_tokens: int = 0,
) -> Answer:
    """The non-streamed answer: wait for every choice to end."""
    builder = AnswerBuilder(plan.n_choices)
    try:
        async for event in events:
            if builder.add(event):
                exchange.mark_text()
    except GatewayError as error:
        exchange.mark("generated")
        charge(exchange, plan, choices, estimate_tokens, error)  # answers asked again too
        raise
    except (GeneratorExit, asyncio.CancelledError):
        abandon(exchange, plan, choices, estimate_tokens)
        raise
    exchange.mark("generated")
    charge(exchange, plan, choices, estimate_tokens)
    answer = builder.answer(plan.prompt_tokens, exchange.completion_tokens)
    if plan.echo_prompts is not None:
        for choice, prompt in zip(answer.choices, plan.echo_prompts, strict=True):
            choice.text = prompt + choice.text
    return answer
