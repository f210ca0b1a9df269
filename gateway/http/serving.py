"""The request lifecycle every front door shares, and the events -> bytes driving of answers.

A door gives :func:`serve` a planner (its wire request -> the engine's :class:`Plan` and a
:class:`Codec` for its wire format) and an error renderer; :func:`serve` does the rest, the
same for every protocol: auth -> body -> plan -> admission (limits) -> job submission ->
events -> SSE or one JSON answer -> usage, metrics, ledger and the access line.

Streams produce their first item only once the first event is known, so a failure before any
text is still answered with a real status code. What the request holds (its concurrency slot,
its job slots) is released before the last bytes are written (:meth:`Exchange.release`). An
error after the stream began goes out through the codec's :meth:`Codec.failure` and the
stream ends cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from starlette.requests import Request
from starlette.responses import Response

from gateway.config import KeySettings, LimitSettings
from gateway.engine.answer import Answer, AnswerBuilder
from gateway.engine.cache import ReplayedChoice, cache_key, replay
from gateway.engine.catalog import ModelCatalog, allows
from gateway.engine.choices import ChoiceState
from gateway.engine.events import Event, TextDelta, ToolCallDelta
from gateway.engine.planning import Plan
from gateway.engine.service import Submitted
from gateway.errors import GatewayError, InternalError, NotFound, RateLimited
from gateway.http.bodies import parse_json, read_body
from gateway.http.common import client_timeout, deadline_cap, request_id
from gateway.http.exchange import Exchange
from gateway.http.responses import (
    EVENT_STREAM,
    DeferredJSONResponse,
    ErrorRenderer,
    EventStreamResponse,
)
from gateway.ops.access import LOGGED_ELSEWHERE
from gateway.runtime import Runtime
from gateway.state import runtime

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


@dataclass(slots=True)
class RequestContext:
    """What a door's planner may use to plan a request."""

    request: Request
    runtime: Runtime
    key: KeySettings
    data: dict[str, Any]
    exchange: Exchange

    @property
    def limits(self) -> LimitSettings:
        return self.runtime.settings.limits

    @property
    def catalog(self) -> ModelCatalog:
        """The models as this key sees them: one it may not use does not exist (a 404)."""
        return self.runtime.catalog.for_key(self.key.models)

    @property
    def client_timeout(self) -> float | None:
        """How long the client waits for a non-streamed answer (its deadline's cap)."""
        return deadline_cap(self.request, self.data)


#: The W3C trace-context headers a client may send; traces continue them (ops/tracing.py).
TRACE_HEADERS = ("traceparent", "tracestate")

Planner = Callable[[RequestContext], Awaitable[tuple[Plan, Codec]]]


def estimate(plan: Plan, limits: LimitSettings) -> int:
    """Tokens charged at admission; corrected to the real count when the answer ends."""
    per_choice = plan.max_tokens or limits.completion_estimate
    return plan.prompt_tokens + per_choice * plan.n_choices


def keepalive_interval(request: Request, limits: LimitSettings) -> float:
    """Pings come at least twice per client read timeout, so a client never times out waiting."""
    timeout = client_timeout(request)
    if timeout is None or timeout <= 0:
        return limits.keepalive_interval
    return max(0.5, min(limits.keepalive_interval, timeout / 2))


async def serve(request: Request, route: str, planner: Planner, errors: ErrorRenderer) -> Response:
    """One completion request, whatever its door: see the module's docstring."""
    rt = runtime(request)
    settings = rt.settings
    exchange = Exchange(request_id(request), route)
    request.scope.setdefault("state", {})[LOGGED_ELSEWHERE] = True  # rt.finish writes the line
    exchange.trace_headers = {
        name: value
        for name in ("traceparent", "tracestate")
        if (value := request.headers.get(name))
    }
    headers: dict[str, str] = {}
    data: dict[str, Any] | None = None
    try:
        key = rt.keys.authenticate(request.headers)
        exchange.key_name = key.name
        raw = await read_body(request, settings.limits.max_body_bytes)
        data = parse_json(raw, settings.limits.max_json_depth)
        plan, codec = await planner(RequestContext(request, rt, key, data, exchange))
        exchange.mark("planned")
        exchange.model = plan.model.name
        exchange.stream = plan.stream
        exchange.prompt_tokens = plan.prompt_tokens
        exchange.ignored = plan.ignored
        if settings.logging.log_prompts or settings.ledger.log_prompts:
            exchange.prompt_text = "\n\n".join(dict.fromkeys(plan.prompts))
        policy = rt.cache.policy(request.headers, key, plan.model)
        share = cache_key(plan) if policy.active else None
        cached = await rt.cache.lookup(share) if share is not None and policy.read else None
        # A hit counts in the key's request limits; its tokens only where the operator says.
        free = cached is not None and not settings.cache.count_in_budget
        charged = 0 if free else estimate(plan, settings.limits)  # abandon() charges it
        admission = await rt.limiter.admit(
            key,
            plan.model.name,
            charged,
            aliases=plan.model.aliases,
            team=rt.key_service.team_limits(key),
        )
        headers.update(admission.headers)
        # Only once admitted: a refused request must not learn what is cached.
        headers["x-gateway-cache"] = "hit" if cached else "miss" if policy.read else "bypass"
        exchange.mark("admitted")
        rt.begin_usage(exchange, charged)  # ledger: the in-flight row (issue 23; finish ends it)

        async def release_admission(done: Exchange) -> None:
            await admission.release(0 if free else done.prompt_tokens + done.completion_tokens)

        exchange.cleanups.append(release_admission)
        deadline = asyncio.get_running_loop().time() + plan.timeout
        if cached is None:
            share_jobs = share if settings.cache.share_jobs else None
            jobs = await rt.completions.submit(
                key,
                rt.account(key),
                plan,
                deadline,
                share=share_jobs,
                fair=rt.key_service.share(key),
                on_slot=lambda: exchange.mark("slot"),
            )
    except GatewayError as error:
        if isinstance(error, RateLimited) and exchange.key_name:
            rt.metrics.count_rate_limited(exchange.key_name, error.code or "rate_limited")
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        if isinstance(error, NotFound) and error.param == "model" and exchange.key_name:
            _note_disallowed(rt.catalog, key.models, data, exchange)
        # No job ran: the ledger, the token metrics and the limits' correction count nothing.
        exchange.prompt_tokens = 0
        await rt.finish(exchange)
        return errors(error, headers)

    choices: Sequence[ChoiceState]
    if cached is not None:  # answered as a live answer would be: streamed at once, or whole
        exchange.cached = True
        exchange.tokens_saved = cached.prompt_tokens + cached.completion_tokens
        exchange.jobs_saved = len(cached.choices)
        choices = cast(list[ChoiceState], ReplayedChoice.of(cached))
        events = replay(cached)
    else:
        choices, events = _follow(request, plan, jobs, deadline, exchange, headers)
        if share is not None and policy.store:
            events = rt.cache.recording(
                events,
                share,
                plan.n_choices,
                plan.prompt_tokens,
                lambda: completion_tokens(choices),
            )

    async def on_close(status: int, outcome: str) -> None:
        if exchange.outcome == "ok":
            exchange.status, exchange.outcome = status, outcome
        await rt.finish(exchange)

    if plan.stream:
        body = stream_body(codec, plan, choices, events, exchange, headers, charged)
        stream = EventStreamResponse(body, headers, on_close, errors, codec.media_type)
        return stream  # type: ignore[return-value]

    async def produce() -> dict[str, Any]:
        try:
            answer = await collect(plan, choices, events, exchange)
            await codec.complete(answer, exchange)
            return codec.render(answer)
        except asyncio.CancelledError:  # the client left while its answer was being made
            settle(exchange, choices)
            abandon(exchange, plan, choices, charged)
            raise
        finally:
            headers["x-job-id"] = ",".join(exchange.job_ids)  # the jobs asked again included
            await events.aclose()  # type: ignore[attr-defined]
            await exchange.release()  # before the answer is written (see Exchange.release)

    return DeferredJSONResponse(produce, headers, on_close, errors)  # type: ignore[return-value]


def _follow(
    request: Request,
    plan: Plan,
    jobs: Submitted,
    deadline: float,
    exchange: Exchange,
    headers: dict[str, str],
) -> tuple[list[ChoiceState], AsyncIterator[Event]]:
    """The choices of submitted (or joined) jobs and the events of following them."""
    rt = runtime(request)
    settings = rt.settings
    exchange.job_ids = list(jobs.ids)
    rt.live.following(exchange)
    if jobs.shared:
        rt.cache.count_join()
        exchange.jobs_saved = len(jobs.ids)

    async def release_jobs(_: Exchange) -> None:
        jobs.release()

    exchange.cleanups.append(release_jobs)
    exchange.submitted_at = time.perf_counter()
    exchange.marks["submitted"] = exchange.submitted_at
    headers["x-job-id"] = ",".join(jobs.ids)
    choices = [
        ChoiceState(i, job_id, plan, settings.upstream.strip_ansi)
        for i, job_id in enumerate(jobs.ids)
    ]
    events = rt.completions.events(
        plan, jobs, deadline, choices, keepalive=keepalive_interval(request, settings.limits)
    )
    return choices, events


def _note_disallowed(
    catalog: ModelCatalog, allowed: Sequence[str] | None, data: Any, exchange: Exchange
) -> None:
    """A model the key may not use got the same 404 as an unknown one; the operator's ledger
    and log still say which model it was and why (``model_not_allowed``)."""
    name = data.get("model") if isinstance(data, dict) else None
    if not isinstance(name, str):
        return
    try:
        model = catalog.resolve(name)
    except NotFound:
        return  # unknown: nothing a client typed becomes a metric label or a ledger model
    if not allows(allowed, model):
        exchange.model, exchange.outcome = model.name, "model_not_allowed"


def abandon(
    exchange: Exchange, plan: Plan, choices: Sequence[ChoiceState], estimate_tokens: int
) -> None:
    """The client left before every choice ended: the jobs run on upstream (it has no cancel),
    so the request is charged at least what admission estimated, never just what it read.

    Called before the exchange's cleanups release the admission, so the limits, the budgets,
    the metrics and the ledger row (outcome ``abandoned``, status 499) all get this count.
    """
    if exchange.cached or all(choice.done for choice in choices):
        return  # a replayed answer runs no job; a complete one only lost its last bytes
    estimated_completion = max(0, estimate_tokens - plan.prompt_tokens)
    exchange.completion_tokens = max(exchange.completion_tokens, estimated_completion)
    exchange.status, exchange.outcome = 499, "abandoned"


def completion_tokens(choices: Sequence[ChoiceState]) -> int:
    return sum(c.completion_tokens for c in choices)


def settle(exchange: Exchange, choices: Sequence[ChoiceState]) -> None:
    """Copy what the choices counted into the request's record."""
    exchange.completion_tokens = completion_tokens(choices)
    exchange.log_rewrites = sum(c.cursor.rewrites for c in choices)
    asked_again = [j for c in choices for j in c.job_ids[1:] if j not in exchange.job_ids]
    if asked_again:
        exchange.job_ids = [*exchange.job_ids, *asked_again]


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
    ``estimate_tokens`` is what admission charged: a client that leaves before the end is
    charged at least that (:func:`abandon`)."""
    try:
        first: Event | None = await anext(events)
    except StopAsyncIteration:
        first = None
    except (GeneratorExit, asyncio.CancelledError):  # the client left before the first event
        settle(exchange, choices)
        abandon(exchange, plan, choices, estimate_tokens)
        raise
    except GatewayError:
        _list_jobs(headers, exchange, choices)
        await exchange.release()  # answered with a status of its own: free the slot first
        raise
    _list_jobs(headers, exchange, choices)
    builder = AnswerBuilder(plan.n_choices) if codec.keeps_answer else None
    yield codec.opening()
    try:
        if first is not None:
            yield _encode(codec, first, exchange, builder)
            async for event in events:
                yield _encode(codec, event, exchange, builder)
    except (GeneratorExit, asyncio.CancelledError):  # the client left: count what it got
        exchange.mark("generated")
        settle(exchange, choices)
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
        settle(exchange, choices)
        await exchange.release()
        yield codec.failure(error)
        return
    exchange.mark("generated")
    settle(exchange, choices)
    if builder is not None:
        await codec.complete(
            builder.answer(plan.prompt_tokens, exchange.completion_tokens), exchange
        )
    await exchange.release()  # before the last bytes: the client may send its next request at once
    yield codec.closing(plan.prompt_tokens, exchange.completion_tokens)


def _list_jobs(
    headers: dict[str, str] | None, exchange: Exchange, choices: Sequence[ChoiceState]
) -> None:
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
) -> Answer:
    """The non-streamed answer: wait for every choice to end."""
    builder = AnswerBuilder(plan.n_choices)
    try:
        async for event in events:
            if builder.add(event):
                exchange.mark_text()
    except GatewayError:
        exchange.mark("generated")
        settle(exchange, choices)  # answers asked for again were generated all the same
        raise
    exchange.mark("generated")
    settle(exchange, choices)
    answer = builder.answer(plan.prompt_tokens, exchange.completion_tokens)
    if plan.echo_prompts is not None:
        for choice, prompt in zip(answer.choices, plan.echo_prompts, strict=True):
            choice.text = prompt + choice.text
    return answer
