"""Completion use cases, free of HTTP: plan a request, submit its jobs, turn snapshots into events.

The flow for one request: :func:`plan_chat` / :func:`plan_text` validate and render the
prompt(s) into a :class:`Plan`; :meth:`Completions.submit` creates one upstream job per
choice; :meth:`Completions.events` watches those jobs through the coalescing poller and
yields :class:`TextDelta` / :class:`ToolCallDelta` / :class:`ChoiceEnd` events (and
:data:`KEEPALIVE` while nothing happens). Streaming and non-streaming answers are both built
from these events. A choice whose answer must be a tool call or JSON (:mod:`gateway.tools`)
and does not fit is asked for again, within ``limits.structured_retries``, while nothing of it
has reached the client.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
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
    UpstreamError,
)
from gateway.prompts import PromptMessage
from gateway.protocol import IGNORED_FIELDS, ChatCompletionRequest, ChatMessage, CompletionRequest
from gateway.textstream import ChoiceText, LogCursor
from gateway.tokens import count_tokens
from gateway.tools import (
    TOOL_CALL_INVALID,
    ChoiceOutput,
    Outcome,
    OutputSpec,
    Piece,
    ToolCallChunk,
    assistant_text,
    instructions,
    output_spec,
    tool_call_names,
    with_instructions,
)
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
class ToolCallDelta:
    index: int
    call: ToolCallChunk


@dataclass(frozen=True, slots=True)
class ChoiceReset:
    """Non-streamed only: forget this choice's text so far; the job's final log replaces it."""

    index: int


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    index: int
    reason: str


class KeepAlive:
    """Nothing happened for a while: streams send an SSE comment so proxies keep the line."""


KEEPALIVE = KeepAlive()
Event = TextDelta | ToolCallDelta | ChoiceReset | ChoiceEnd | KeepAlive


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
    output: OutputSpec | None = None  # tool calls or JSON the answer must be
    reprompt: Callable[[str], str] | None = None  # the prompt again, saying what went wrong

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
    """Messages as text; earlier tool calls and their results are written back as such."""
    names = tool_call_names(messages)
    result = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role, message.role)
        text = _message_text(message, i)
        if message.tool_calls:
            text = assistant_text(text, message.tool_calls)
        name = message.name
        if name is None and role == "tool" and message.tool_call_id:
            name = names.get(message.tool_call_id)
        result.append(PromptMessage(role=role, content=text, name=name))
    return result


#: Fields whose absence would change what the answer means: refused rather than ignored.
_MEANINGFUL_EXTRAS = ("web_search_options", "moderation")


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    for name in ("logprobs", "top_logprobs"):
        if getattr(request, name):
            raise UnsupportedParameter(
                "logprobs are not available: the upstream service reports no token probabilities.",
                param=name,
            )
    for name in _MEANINGFUL_EXTRAS:
        if (request.model_extra or {}).get(name) is not None:
            raise UnsupportedParameter(
                f"'{name}' is not supported: the upstream service only generates text.",
                param=name,
            )
    if request.audio is not None or (request.modalities and "audio" in request.modalities):
        raise UnsupportedParameter("Audio output is not supported.", param="audio")
    if request.functions:
        raise UnsupportedParameter(
            "The deprecated 'functions' are not supported; use 'tools' and 'tool_choice'.",
            param="functions",
        )


def _common_limits(
    n: int,
    stops: list[str],
    max_tokens: int | None,
    limits: LimitSettings,
    param: str,
    prompts: int = 1,
) -> None:
    if n * prompts > limits.max_n:
        what = f"{n}" if prompts == 1 else f"{n} x {prompts} prompts = {n * prompts}"
        raise BadRequest(
            f"n (times the number of prompts) must be at most {limits.max_n}; got {what}.",
            param="n",
        )
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
    output = output_spec(request, limits.structured_retries)
    messages = prompt_messages(request.messages)
    template = catalog.template(model)

    def render(correction: str | None = None) -> str:
        if output is None:
            return template.render(messages)
        # A model may bring its own instructions template (models[].tool_template).
        source = model.tool_template
        return template.render(
            with_instructions(messages, instructions(output, correction, source))
        )

    prompt = render()
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
        output=output,
        reprompt=render if output is not None and output.retries else None,
    )


def plan_text(
    request: CompletionRequest,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    model = catalog.resolve(request.model)
    if request.logprobs is not None:
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
    _common_limits(request.n, stops, max_tokens, limits, "max_tokens", prompts=len(prompts))
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


@dataclass(frozen=True, slots=True)
class Misfit:
    """A choice's answer that is not the tool call or JSON the request asked for."""

    problem: str
    error: UpstreamError  # what the client gets if it is not asked for again


class ChoiceState:
    """One choice: its job's growing log -> the text the client receives, and when it ends.

    When the plan asks for tool calls or JSON, the text goes through a
    :class:`~gateway.tools.ChoiceOutput`. An answer that does not fit, none of which reached
    the client, sets ``retry`` instead of ending the choice while retries are left; then
    :meth:`restart` follows the job that asks again.
    """

    __slots__ = (
        "_plan",
        "_strip",
        "cursor",
        "discarded_tokens",
        "done",
        "index",
        "job_id",
        "job_ids",
        "output",
        "reason",
        "retries",
        "retry",
        "started",
        "text",
    )

    def __init__(self, index: int, job_id: str, plan: Plan, strip_ansi: bool) -> None:
        self.index = index
        self.job_id = job_id
        self.job_ids = [job_id]  # every job of this choice, those asked again included
        self._plan = plan
        self._strip = strip_ansi
        self.cursor = LogCursor(strip_ansi=strip_ansi)
        self.text = ChoiceText(plan.stops, plan.max_tokens)
        self.output = self._output()
        self.retries = plan.output.retries if plan.output is not None else 0
        self.retry: Misfit | None = None
        self.discarded_tokens = 0
        self.done = False
        self.started = False
        self.reason: str | None = None

    def _output(self) -> ChoiceOutput | None:
        spec = self._plan.output
        return None if spec is None else ChoiceOutput(spec, streaming=self._plan.stream)

    @property
    def completion_tokens(self) -> int:
        """Tokens generated for this choice, answers that were asked for again included."""
        return self.discarded_tokens + self.text.completion_tokens

    def restart(self, job_id: str) -> None:
        """Follow ``job_id``, which asks again for the answer that did not fit."""
        self.discarded_tokens += self.text.completion_tokens
        self.retries -= 1
        self.job_id = job_id
        self.job_ids.append(job_id)
        self.cursor = LogCursor(strip_ansi=self._strip)
        self.text = ChoiceText(self._plan.stops, self._plan.max_tokens)
        self.output = self._output()
        self.retry = None

    def update(self, snapshot: JobSnapshot) -> list[Event]:
        if snapshot.phase is JobPhase.FAILED:
            raise JobFailed(
                f"The upstream job {snapshot.id} failed: {snapshot.error or snapshot.status}."
            )
        events: list[Event] = []
        finished = snapshot.phase is JobPhase.FINISHED
        delta = self.cursor.advance(snapshot.log, final=finished)
        if finished and self.cursor.diverged and not self._plan.stream:
            # The log was rewritten and nothing has reached the client yet: answer with the
            # job's final text rather than the draft we had followed.
            events.append(ChoiceReset(self.index))
            rewrites = self.cursor.rewrites
            self.cursor = LogCursor(strip_ansi=self._strip)
            self.cursor.rewrites = rewrites
            self.text = ChoiceText(self._plan.stops, self._plan.max_tokens)
            self.output = self._output()
            delta = self.cursor.advance(snapshot.log, final=True)
        if delta:
            self.started = True
            emitted, reason = self.text.feed(delta)
            if emitted:
                self._emit(events, emitted)
            if reason is not None:
                return self._end(events, reason, finished)
        if finished:
            rest, reason = self.text.finish()
            if rest:
                self._emit(events, rest)
            return self._end(events, reason, finished)
        return events

    def _emit(self, events: list[Event], text: str) -> None:
        if self.output is None:
            events.append(TextDelta(self.index, text))
        else:
            events.extend(self._event(piece) for piece in self.output.feed(text))

    def _event(self, piece: Piece) -> Event:
        if isinstance(piece, str):
            return TextDelta(self.index, piece)
        return ToolCallDelta(self.index, piece)

    def _end(self, events: list[Event], reason: str, finished: bool) -> list[Event]:
        if self.output is not None:
            outcome = self.output.finish(reason)
            if outcome.problem is not None:
                # Asked again only once the job is over, so no two jobs run for one choice.
                return self._misfit(events, outcome, retry=outcome.retryable and finished)
            if outcome.note is not None:
                logger.warning("choice %d: a tool call could not be used; sent as text", self.index)
            events.extend(self._event(piece) for piece in outcome.pieces)
            reason = outcome.reason
        self.done = True
        self.reason = reason
        events.append(ChoiceEnd(self.index, reason))
        return events

    def _misfit(self, events: list[Event], outcome: Outcome, retry: bool) -> list[Event]:
        assert outcome.problem is not None
        what = "a valid tool call" if outcome.code == TOOL_CALL_INVALID else "valid JSON"
        attempts = len(self.job_ids)
        message = f"The model did not answer with {what}: {outcome.problem}"
        if attempts > 1:
            message += f" (in {attempts} attempts)"
        error = UpstreamError(message + ".", code=outcome.code)
        if retry and self.retries > 0:
            self.retry = Misfit(outcome.problem, error)
            return events
        raise error


@dataclass(slots=True)
class Submitted:
    ids: list[str]
    poller: AccountPoller
    slots: JobSlots
    released: bool = False
    token: str = field(default="", repr=False)  # the upstream token, to ask again

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
        """Shutting down: requests still running ``grace`` seconds from now end with an error;
        requests still waiting for a job slot end now."""
        self.drain_deadline = asyncio.get_running_loop().time() + grace
        for slots in self._slots.values():
            slots.refuse_waiting(_shutting_down())
        self._hub.wake_all()

    async def submit(
        self, key: KeySettings, account: str, plan: Plan, deadline: float
    ) -> Submitted:
        if self.drain_deadline != math.inf:
            raise _shutting_down()
        slots = self.slots(key.upstream_token)
        wait = deadline - asyncio.get_running_loop().time()
        await slots.acquire(plan.n_choices, max(wait, 0.0))
        try:
            async with asyncio.timeout_at(deadline):
                ids = await self._client.submit(
                    key.upstream_token,
                    plan.model.tag,
                    plan.prompts,
                    account=account,
                    deadline=deadline,
                )
        except UpstreamFailure as failure:
            slots.release(plan.n_choices)
            raise failure.to_gateway_error() from None
        except TimeoutError:
            slots.release(plan.n_choices)
            raise DeadlineExceeded(
                "The upstream did not accept the job within the request's deadline of "
                f"{plan.timeout:g} s."
            ) from None
        except BaseException:
            slots.release(plan.n_choices)
            raise
        poller = self._hub.poller(key.upstream_token, account)
        return Submitted(ids, poller, slots, token=key.upstream_token)

    async def resubmit(self, plan: Plan, jobs: Submitted, choice: ChoiceState) -> None:
        """Ask again for ``choice``'s answer, which did not fit; its job then follows the new one.

        The new job takes the finished job's place in the account's job cap: the request
        still holds one slot per choice, so ``jobs.release`` stays right.
        """
        misfit = choice.retry
        assert misfit is not None
        if plan.reprompt is None or self.drain_deadline != math.inf:
            raise misfit.error
        prompt = plan.reprompt(misfit.problem)
        try:
            ids = await self._client.submit(
                jobs.token, plan.model.tag, [prompt], account=jobs.poller.account
            )
        except UpstreamFailure as failure:
            raise failure.to_gateway_error() from None
        logger.warning(
            "choice %d did not fit the requested format (%s); asked again as job %s",
            choice.index,
            misfit.error.code,
            ids[0],
        )
        choice.restart(ids[0])

    async def events(
        self,
        plan: Plan,
        jobs: Submitted,
        deadline: float,
        choices: list[ChoiceState] | None = None,
        keepalive: float | None = None,
    ) -> AsyncIterator[Event]:
        """Follow the jobs until every choice ended; raise a GatewayError if that fails.

        ``keepalive`` (default ``limits.keepalive_interval``) is the longest silence: a
        :data:`KEEPALIVE` is yielded after it.
        """
        loop = asyncio.get_running_loop()
        strip = self._settings.upstream.strip_ansi
        if choices is None:
            choices = [ChoiceState(i, job_id, plan, strip) for i, job_id in enumerate(jobs.ids)]
        keepalive = keepalive or self._settings.limits.keepalive_interval
        while True:
            open_jobs = {c.job_id: c for c in choices if not c.done}
            if not open_jobs:
                return
            retrying: list[ChoiceState] = []
            with jobs.poller.watch(list(open_jobs)) as watch:
                while open_jobs and not retrying:
                    now = loop.time()
                    if now >= self.drain_deadline:
                        raise _shutting_down()
                    if now >= deadline:
                        raise _deadline_error(plan, watch.poll_error, choices)
                    limit = min(deadline, self.drain_deadline) - now
                    changed = await watch.changes(min(keepalive, limit))
                    if not changed:
                        if loop.time() < min(deadline, self.drain_deadline):
                            yield KEEPALIVE
                        continue
                    for snapshot in changed:
                        choice = open_jobs.get(snapshot.id)
                        if choice is None:
                            continue
                        for event in choice.update(snapshot):
                            yield event
                        if choice.retry is not None:
                            retrying.append(choice)
                        if choice.done or choice.retry is not None:
                            del open_jobs[snapshot.id]
                            watch.release(snapshot.id)
                # Asked again while the other jobs are still watched; the loop then watches
                # the new jobs with them.
                for choice in retrying:
                    await self.resubmit(plan, jobs, choice)


def _shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The gateway is shutting down and could not finish this answer in its grace period; "
        "please retry.",
        code="server_shutdown",
        headers={"retry-after": "1"},
    )


def _deadline_error(
    plan: Plan, poll_error: UpstreamFailure | None, choices: list[ChoiceState]
) -> GatewayError:
    message = f"The request did not complete within its deadline of {plan.timeout:g} s"
    if poll_error is not None:
        message += f"; the upstream status requests are failing ({poll_error.message})"
    elif not any(c.started for c in choices):
        message += "; the upstream job had not started (it may still be queued)"
    return DeadlineExceeded(message + ".")
