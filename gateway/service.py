"""Completion use cases, free of HTTP: plan a request, submit its jobs, turn snapshots into events.

The flow for one request: :func:`plan_chat` / :func:`plan_text` validate and render the
prompt(s) into a :class:`Plan`; :meth:`Completions.submit` creates one upstream job per
choice; :meth:`Completions.events` watches those jobs through the coalescing poller and
yields :class:`TextDelta` / :class:`ChoiceEnd` events (and :data:`KEEPALIVE` while nothing
happens). Streaming and non-streaming answers are both built from these events.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from gateway.catalog import ModelCatalog
from gateway.config import KeySettings, LimitSettings, ModelSettings, Settings
from gateway.errors import (
    BadRequest,
    DeadlineExceeded,
    GatewayError,
    JobFailed,
    ServiceUnavailable,
    UnsupportedParameter,
)
from gateway.prompts import PromptMessage
from gateway.protocol import IGNORED_FIELDS, ChatCompletionRequest, ChatMessage, CompletionRequest
from gateway.textstream import ChoiceText, LogCursor
from gateway.tokens import count_tokens
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.models import JobPhase, JobSnapshot
from gateway.upstream.poller import AccountPoller, PollerHub
from gateway.upstream.slots import JobSlots

logger = logging.getLogger("gateway.service")


@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    index: int
    reason: str


class KeepAlive:
    """Nothing happened for a while: streams send an SSE comment so proxies keep the line."""


KEEPALIVE = KeepAlive()
Event = TextDelta | ChoiceEnd | KeepAlive


@dataclass(slots=True)
class Plan:
    """Everything decided about a request before anything is sent upstream."""

    kind: str  # "chat" | "text"
    model: ModelSettings
    prompts: list[str]  # one upstream input per choice, in choice order
    prompt_tokens: int
    stops: list[str]
    max_tokens: int | None
    timeout: float  # seconds the request may take, end to end
    stream: bool
    include_usage: bool = False
    echo_prompts: list[str] | None = None
    ignored: list[str] = field(default_factory=list)

    @property
    def n_choices(self) -> int:
        return len(self.prompts)


def _message_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for j, part in enumerate(content):
        text = getattr(part, "text", None)
        if part.type not in ("text", "input_text") or not isinstance(text, str):
            raise UnsupportedParameter(
                f"Only text content is supported by this service; messages[{index}].content[{j}] "
                f"has type '{part.type}'.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content_type",
            )
        parts.append(text)
    return "".join(parts)


_ROLES = {"developer": "system", "function": "tool"}


def prompt_messages(messages: Sequence[ChatMessage]) -> list[PromptMessage]:
    result = []
    for i, message in enumerate(messages):
        if message.tool_calls:
            raise UnsupportedParameter(
                "Assistant tool_calls in the history are not supported yet.",
                param=f"messages[{i}].tool_calls",
            )
        role = _ROLES.get(message.role, message.role)
        result.append(
            PromptMessage(role=role, content=_message_text(message, i), name=message.name)
        )
    return result


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    if request.logprobs or request.top_logprobs:
        raise UnsupportedParameter(
            "logprobs are not available: the upstream service reports no token probabilities.",
            param="logprobs",
        )
    if request.audio is not None or (request.modalities and "audio" in request.modalities):
        raise UnsupportedParameter("Audio output is not supported.", param="audio")
    for name in ("tools", "functions"):
        if getattr(request, name):
            raise UnsupportedParameter(
                f"'{name}' is not supported by this gateway yet.", param=name
            )
    if request.response_format is not None and request.response_format.type != "text":
        raise UnsupportedParameter(
            f"response_format '{request.response_format.type}' is not supported yet.",
            param="response_format",
        )


def _common_limits(
    n: int, stops: list[str], max_tokens: int | None, limits: LimitSettings, param: str
) -> None:
    if n > limits.max_n:
        raise BadRequest(f"n must be at most {limits.max_n}; got {n}.", param="n")
    if len(stops) > limits.max_stop_sequences:
        raise BadRequest(
            f"At most {limits.max_stop_sequences} stop sequences are allowed.", param="stop"
        )
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise BadRequest(
            f"{param} must be at most {limits.max_tokens}; got {max_tokens}.", param=param
        )


def _check_prompt(prompt: str, limits: LimitSettings, param: str) -> None:
    if len(prompt) > limits.max_prompt_chars:
        raise BadRequest(
            f"The prompt is {len(prompt)} characters long; the limit is {limits.max_prompt_chars}.",
            param=param,
            code="context_length_exceeded",
        )


def request_timeout(
    model: ModelSettings, limits: LimitSettings, client_timeout: float | None
) -> float:
    """The request's deadline: per model or default, capped by the client's and the maximum."""
    timeout = model.deadline or limits.default_deadline
    if client_timeout is not None and client_timeout > 0:
        timeout = min(timeout, client_timeout)
    return min(timeout, limits.max_deadline)


def _ignored(request: ChatCompletionRequest | CompletionRequest) -> list[str]:
    extra = set(request.model_extra or {})
    return sorted((IGNORED_FIELDS & request.model_fields_set) | extra)


def plan_chat(
    request: ChatCompletionRequest,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    model = catalog.resolve(request.model)
    _refuse_unsupported(request)
    if len(request.messages) > limits.max_messages:
        raise BadRequest(f"At most {limits.max_messages} messages are allowed.", param="messages")
    stops = request.stop_list()
    max_tokens = request.max_completion_tokens or request.max_tokens or model.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    _common_limits(request.n, stops, max_tokens, limits, param)
    prompt = catalog.template(model).render(prompt_messages(request.messages))
    _check_prompt(prompt, limits, "messages")
    return Plan(
        kind="chat",
        model=model,
        prompts=[prompt] * request.n,
        prompt_tokens=count_tokens(prompt),
        stops=stops,
        max_tokens=max_tokens,
        timeout=request_timeout(model, limits, client_timeout),
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        ignored=_ignored(request),
    )


def plan_text(
    request: CompletionRequest,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    model = catalog.resolve(request.model)
    if request.logprobs:
        raise UnsupportedParameter(
            "logprobs are not available: the upstream service reports no token probabilities.",
            param="logprobs",
        )
    raw = request.prompt
    if isinstance(raw, str):
        prompts = [raw]
    elif all(isinstance(p, str) for p in raw):
        prompts = [str(p) for p in raw]
    else:
        raise UnsupportedParameter(
            "Token-id prompts are not supported: send the prompt as text.", param="prompt"
        )
    if not prompts:
        raise BadRequest("prompt must not be empty.", param="prompt")
    stops = request.stop_list()
    max_tokens = request.max_tokens or model.max_tokens
    _common_limits(request.n * len(prompts), stops, max_tokens, limits, "max_tokens")
    for prompt in prompts:
        _check_prompt(prompt, limits, "prompt")
    inputs = [p for p in prompts for _ in range(request.n)]
    return Plan(
        kind="text",
        model=model,
        prompts=inputs,
        prompt_tokens=sum(count_tokens(p) for p in prompts),
        stops=stops,
        max_tokens=max_tokens,
        timeout=request_timeout(model, limits, client_timeout),
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        echo_prompts=inputs if request.echo else None,
        ignored=_ignored(request),
    )


class ChoiceState:
    """One choice: its job's growing log -> the text the client receives, and when it ends."""

    __slots__ = ("cursor", "done", "index", "job_id", "reason", "started", "text")

    def __init__(self, index: int, job_id: str, plan: Plan, strip_ansi: bool) -> None:
        self.index = index
        self.job_id = job_id
        self.cursor = LogCursor(strip_ansi=strip_ansi)
        self.text = ChoiceText(plan.stops, plan.max_tokens)
        self.done = False
        self.started = False
        self.reason: str | None = None

    def update(self, snapshot: JobSnapshot) -> list[Event]:
        if snapshot.phase is JobPhase.FAILED:
            raise JobFailed(
                f"The upstream job {snapshot.id} failed: {snapshot.error or snapshot.status}."
            )
        events: list[Event] = []
        delta = self.cursor.advance(snapshot.log, final=snapshot.phase is JobPhase.FINISHED)
        if delta:
            self.started = True
            emitted, reason = self.text.feed(delta)
            if emitted:
                events.append(TextDelta(self.index, emitted))
            if reason is not None:
                return self._end(events, reason)
        if snapshot.phase is JobPhase.FINISHED:
            rest, reason = self.text.finish()
            if rest:
                events.append(TextDelta(self.index, rest))
            return self._end(events, reason)
        return events

    def _end(self, events: list[Event], reason: str) -> list[Event]:
        self.done = True
        self.reason = reason
        events.append(ChoiceEnd(self.index, reason))
        return events


@dataclass(slots=True)
class Submitted:
    ids: list[str]
    poller: AccountPoller
    slots: JobSlots
    released: bool = False

    def release(self) -> None:
        """Give back this request's share of the account's job cap (once)."""
        if not self.released:
            self.released = True
            self.slots.release(len(self.ids))


class Completions:
    """Submits a plan's jobs and follows them to the end."""

    def __init__(self, settings: Settings, client: JobsClient, hub: PollerHub) -> None:
        self._settings = settings
        self._client = client
        self._hub = hub
        self._slots: dict[str, JobSlots] = {}
        #: Loop time at which a draining gateway cuts the requests still running.
        self.drain_deadline = math.inf

    def slots(self, token: str) -> JobSlots:
        slots = self._slots.get(token)
        if slots is None:
            upstream = self._settings.upstream
            slots = JobSlots(upstream.max_jobs_per_token, upstream.queue_size_per_token)
            self._slots[token] = slots
        return slots

    def begin_drain(self, grace: float) -> None:
        """Shutting down: requests still running ``grace`` seconds from now end with an error."""
        self.drain_deadline = asyncio.get_running_loop().time() + grace
        self._hub.wake_all()

    async def submit(
        self, key: KeySettings, account: str, plan: Plan, deadline: float
    ) -> Submitted:
        slots = self.slots(key.upstream_token)
        wait = deadline - asyncio.get_running_loop().time()
        await slots.acquire(plan.n_choices, max(wait, 0.0))
        try:
            ids = await self._client.submit(key.upstream_token, plan.model.tag, plan.prompts)
        except UpstreamFailure as failure:
            slots.release(plan.n_choices)
            raise failure.to_gateway_error() from None
        except BaseException:
            slots.release(plan.n_choices)
            raise
        return Submitted(ids, self._hub.poller(key.upstream_token, account), slots)

    async def events(
        self, plan: Plan, jobs: Submitted, deadline: float, choices: list[ChoiceState] | None = None
    ) -> AsyncIterator[Event]:
        """Follow the jobs until every choice ended; raise a GatewayError if that fails."""
        loop = asyncio.get_running_loop()
        strip = self._settings.upstream.strip_ansi
        if choices is None:
            choices = [ChoiceState(i, job_id, plan, strip) for i, job_id in enumerate(jobs.ids)]
        by_job = {c.job_id: c for c in choices}
        keepalive = self._settings.limits.keepalive_interval
        open_choices = len(choices)
        with jobs.poller.watch(jobs.ids) as watch:
            while open_choices:
                now = loop.time()
                if now >= self.drain_deadline:
                    raise ServiceUnavailable(
                        "The gateway is shutting down and could not finish this answer in its "
                        "grace period; please retry.",
                        code="server_shutdown",
                    )
                if now >= deadline:
                    raise _deadline_error(plan, watch.poll_error, choices)
                limit = min(deadline, self.drain_deadline) - now
                changed = await watch.changes(min(keepalive, limit))
                if not changed:
                    if loop.time() < min(deadline, self.drain_deadline):
                        yield KEEPALIVE
                    continue
                for snapshot in changed:
                    choice = by_job[snapshot.id]
                    if choice.done:
                        continue
                    for event in choice.update(snapshot):
                        yield event
                    if choice.done:
                        open_choices -= 1
                        watch.release(snapshot.id)


def _deadline_error(
    plan: Plan, poll_error: UpstreamFailure | None, choices: list[ChoiceState]
) -> GatewayError:
    message = f"The request did not complete within its deadline of {plan.timeout:g} s"
    if poll_error is not None:
        message += f"; the upstream status requests are failing ({poll_error.message})"
    elif not any(c.started for c in choices):
        message += "; the upstream job had not started (it may still be queued)"
    return DeadlineExceeded(message + ".")
