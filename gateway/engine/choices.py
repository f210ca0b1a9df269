"""One choice of an answer: its job's growing log -> the events the client receives.

A :class:`ChoiceState` turns each job snapshot into :class:`TextDelta` /
:class:`ToolCallDelta` / :class:`ChoiceEnd` events, cutting at stop sequences and
``max_tokens``; a choice whose answer must be a tool call or JSON (:mod:`gateway.engine.tools`) and
does not fit asks to be retried while nothing of it has reached the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.engine.events import (
    KEEPALIVE,
    ChoiceEnd,
    ChoiceReset,
    Event,
    KeepAlive,
    TextDelta,
    ToolCallDelta,
)
from gateway.engine.planning import Plan
from gateway.engine.textstream import ChoiceText, LogCursor
from gateway.engine.tools import (
    TOOL_CALL_INVALID,
    ChoiceOutput,
    Outcome,
    Piece,
)
from gateway.errors import (
    JobFailed,
    LogRewritten,
    UpstreamError,
)
from gateway.upstream.models import JobPhase, JobSnapshot

__all__ = [
    "KEEPALIVE",
    "ChoiceEnd",
    "ChoiceReset",
    "ChoiceState",
    "Event",
    "KeepAlive",
    "Misfit",
    "TextDelta",
    "ToolCallDelta",
]

logger = logging.getLogger("gateway.choices")


@dataclass(frozen=True, slots=True)
class Misfit:
    """A choice's answer that is not the tool call or JSON the request asked for."""

    problem: str
    error: UpstreamError  # what the client gets if it is not asked for again


class ChoiceState:
    """One choice: its job's growing log -> the text the client receives, and when it ends.

    When the plan asks for tool calls or JSON, the text goes through a
    :class:`~gateway.engine.tools.ChoiceOutput`. An answer that does not fit, none of which reached
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
        if finished and self.cursor.diverged and self._plan.stream and self.started:
            # The log was rewritten and its final text does not continue what was streamed
            # (a rewrite that does continue it was followed: the cursor resumed). Ending with
            # "stop" would pass the draft off as the answer: the client is told instead.
            raise LogRewritten(
                f"log_rewritten: the upstream job {snapshot.id} rewrote its output after part "
                "of it was streamed, and the final text does not continue what was sent: discard "
                "the streamed text and ask again (without streaming, the answer is the final text)."
            )
        if finished and self.cursor.diverged:
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
        stop = self.text.stop_sequence if reason == "stop" else None
        events.append(ChoiceEnd(self.index, reason, stop))
        return events

    def _misfit(self, events: list[Event], outcome: Outcome, retry: bool) -> list[Event]:
        assert outcome.problem is not None
        what = "a valid tool call" if outcome.code == TOOL_CALL_INVALID else "valid JSON"
        attempts = len(self.job_ids)
        message = f"The model did not answer with {what}: {outcome.problem}"
        if attempts > 1:
            message += f" (in {attempts} attempts)"
        # No retry can fix it (the gateway already asked again): the SDKs must not triple it.
        error = UpstreamError(message + ".", code=outcome.code, headers={"x-should-retry": "false"})
        if retry and self.retries > 0:
            self.retry = Misfit(outcome.problem, error)
            return events
        raise error
