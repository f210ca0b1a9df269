"""Tools and response_format together, per choice: a call wins, otherwise the JSON must fit."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.tools import INVALID_JSON_OUTPUT, TOOL_CALL_INVALID, ChoiceOutput, OutputSpec
from tests.engine.tools.tools_support import WEATHER, assemble, spec

FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    },
}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def both(**fields: Any) -> OutputSpec:
    return spec(tools=[WEATHER], response_format=FORMAT, **fields)


def run(output_spec: OutputSpec, text: str, streaming: bool, reason: str = "stop") -> Any:
    output = ChoiceOutput(output_spec, streaming=streaming)
    pieces = [piece for word in text.split(" ") for piece in output.feed(word + " ")]
    outcome = output.finish(reason)
    return assemble([*pieces, *outcome.pieces]), outcome


@pytest.mark.parametrize("streaming", [True, False])
def test_a_tool_call_wins_over_the_format(streaming: bool) -> None:
    (content, calls), outcome = run(both(), CALL, streaming)
    assert calls == [("get_weather", '{"city": "Paris"}')]
    assert outcome.reason == "tool_calls" and outcome.problem is None and content == ""


@pytest.mark.parametrize("streaming", [True, False])
def test_without_a_call_the_content_must_be_the_json(streaming: bool) -> None:
    (content, calls), outcome = run(both(), 'Here: {"x": 1} done', streaming)
    assert (content, calls, outcome.reason) == ('{"x": 1}', [], "stop")


@pytest.mark.parametrize("streaming", [True, False])
def test_json_that_does_not_fit_is_a_problem(streaming: bool) -> None:
    _, outcome = run(both(), 'Here: {"y": 1}', streaming)
    assert outcome.code == INVALID_JSON_OUTPUT and "'x' is a required" in outcome.problem
    assert outcome.retryable is not streaming  # streamed JSON went out as it arrived


def test_prose_for_a_required_call_can_be_asked_for_again_even_when_streaming() -> None:
    _, outcome = run(spec(tools=[WEATHER], tool_choice="required"), "It is sunny.", True)
    assert outcome.code == TOOL_CALL_INVALID and outcome.retryable


def test_a_cut_answer_says_so() -> None:
    _, outcome = run(spec(response_format=FORMAT), '{"x": ', False, reason="length")
    assert outcome.problem is not None and "max_tokens" in outcome.problem
    assert outcome.reason == "length"


def test_plain_tools_pass_prose_through_with_the_models_finish_reason() -> None:
    (content, calls), outcome = run(spec(tools=[WEATHER]), "It is sunny.", True, "length")
    assert (content, calls, outcome.reason, outcome.problem) == ("It is sunny.", [], "length", None)
