"""A choice whose job's log is rewritten: never a draft passed off as the answer (issue 23)."""

from __future__ import annotations

import pytest

from gateway.config import LimitSettings, ModelSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.choices import ChoiceState
from gateway.engine.conversation import Conversation, Message
from gateway.engine.events import ChoiceEnd, ChoiceReset, Event, TextDelta
from gateway.engine.planning import plan_conversation
from gateway.errors import LogRewritten
from gateway.upstream.models import JobPhase, JobSnapshot

CATALOG = ModelCatalog([ModelSettings(name="m", tag="m:1")])


def choice(stream: bool) -> ChoiceState:
    conversation = Conversation(model="m", messages=[Message("user", "hi")], stream=stream)
    return ChoiceState(0, "job", plan_conversation(conversation, CATALOG, LimitSettings()), True)


def running(log: str) -> JobSnapshot:
    return JobSnapshot("job", JobPhase.PENDING, "running", log)


def finished(log: str) -> JobSnapshot:
    return JobSnapshot("job", JobPhase.FINISHED, "finished", log)


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_a_streamed_draft_then_a_different_final_text_ends_in_an_error() -> None:
    state = choice(stream=True)
    assert text_of(state.update(running("[draft] Hello there"))) == "[draft] Hello there"
    assert state.update(running("Hello")) == []  # rewritten: nothing more for now
    with pytest.raises(LogRewritten) as info:
        state.update(finished("Hello there, friend."))
    assert info.value.code == "log_rewritten"


def test_a_rewrite_that_extends_what_was_streamed_continues_it() -> None:
    state = choice(stream=True)
    sent = text_of(state.update(running("Hello there")))
    assert state.update(running("Hello")) == []  # shrunk for a while
    events = state.update(finished("Hello there, friend."))
    assert sent + text_of(events) == "Hello there, friend."
    assert isinstance(events[-1], ChoiceEnd) and events[-1].reason == "stop"


def test_not_streamed_the_answer_is_the_final_text() -> None:
    state = choice(stream=False)
    state.update(running("[draft] Hello there"))
    events = state.update(finished("Hello there, friend."))
    assert isinstance(events[0], ChoiceReset)
    assert text_of(events) == "Hello there, friend."
