"""The one charging rule (gateway/serving/charging.py), for each way a request can end."""

from __future__ import annotations

import pytest

from gateway.config import LimitSettings, ModelSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.choices import ChoiceState
from gateway.engine.conversation import Conversation, Message
from gateway.engine.planning import Plan, plan_conversation
from gateway.errors import DeadlineExceeded, ServiceUnavailable, UpstreamError
from gateway.http.exchange import Exchange
from gateway.serving.charging import abandon, charge, estimate

LIMITS = LimitSettings()


def _plan() -> Plan:
    catalog = ModelCatalog([ModelSettings(name="m", tag="m:1")])
    conversation = Conversation(model="m", messages=[Message(role="user", text="hello there")])
    return plan_conversation(conversation, catalog, LIMITS)


def _run(produced: int, done: bool) -> tuple[Plan, Exchange, list[ChoiceState], int]:
    plan = _plan()
    choice = ChoiceState(0, "job", plan, strip_ansi=False)
    choice.discarded_tokens = produced  # what the job generated so far
    choice.done = done
    exchange = Exchange("req", "/v1/chat/completions")
    exchange.prompt_tokens = plan.prompt_tokens
    return plan, exchange, [choice], estimate(plan, LIMITS)


@pytest.mark.parametrize(
    "error",
    [None, DeadlineExceeded("late"), ServiceUnavailable("bye", code="server_shutdown")],
    ids=["left-or-cancelled", "own-deadline", "shutdown"],
)
def test_a_job_that_may_still_run_is_charged_at_least_its_estimate(error: Exception | None) -> None:
    plan, exchange, choices, estimated = _run(produced=10, done=False)
    charge(exchange, plan, choices, estimated, error)
    assert exchange.completion_tokens == estimated - plan.prompt_tokens
    assert exchange.completion_tokens == LIMITS.completion_estimate


def test_more_than_the_estimate_is_charged_in_full() -> None:
    plan, exchange, choices, estimated = _run(produced=1000, done=False)
    charge(exchange, plan, choices, estimated, None)
    assert exchange.completion_tokens == 1000


@pytest.mark.parametrize("done", [True, False], ids=["complete", "failed-upstream"])
def test_a_job_that_ended_is_charged_what_it_produced(done: bool) -> None:
    plan, exchange, choices, estimated = _run(produced=10, done=done)
    charge(exchange, plan, choices, estimated, None if done else UpstreamError("job failed"))
    assert exchange.completion_tokens == 10


def test_a_client_that_left_is_a_499_abandoned_charged_the_estimate() -> None:
    plan, exchange, choices, estimated = _run(produced=3, done=False)
    abandon(exchange, plan, choices, estimated)
    assert (exchange.status, exchange.outcome) == (499, "abandoned")
    assert exchange.completion_tokens == LIMITS.completion_estimate
