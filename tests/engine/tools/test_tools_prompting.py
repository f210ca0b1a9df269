from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config import LimitSettings, ModelSettings
from gateway.emulator.directives import reply_for
from gateway.engine.catalog import ModelCatalog
from gateway.engine.planning import prompt_messages
from gateway.engine.prompts import PRESETS, PromptMessage
from gateway.engine.tools import instructions, parse_answer, with_instructions
from gateway.errors import UnsupportedParameter
from gateway.openai.protocol import ChatCompletionRequest
from gateway.openai.translate import chat_messages, plan_chat
from tests.engine.tools.tools_support import NOW, WEATHER, spec, tool_spec

ASK = 'Weather in Paris? [[emulate:tool get_weather {"city": "Paris"}]]'
CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ],
}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "22 C and sunny"}


def chat(template: str = "transcript", **fields: Any) -> str:
    catalog = ModelCatalog([ModelSettings(name="m", tag="m:1", template=template)])
    body = {"model": "m", "messages": [{"role": "user", "content": ASK}], **fields}
    plan = plan_chat(ChatCompletionRequest.model_validate(body), catalog, LimitSettings())
    assert len(set(plan.prompts)) == 1
    return plan.prompts[0]


def test_instructions_list_the_tools_and_the_call_format() -> None:
    text = instructions(spec(tools=[WEATHER, NOW]))
    assert "<tool_call>" in text and "</tool_call>" in text
    assert json.dumps(WEATHER["function"]["parameters"]) in text  # type: ignore[index]
    assert '"name": "now"' in text
    assert "only when it helps" in text


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"tool_choice": "required"}, "You must call at least one"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "now"}}},
            'call the function "now"',
        ),
        ({"parallel_tool_calls": False}, "at most one function"),
        ({}, "one <tool_call> block for each call"),
    ],
)
def test_instructions_follow_tool_choice(fields: dict[str, Any], says: str) -> None:
    assert says in instructions(spec(tools=[WEATHER, NOW], **fields))


def test_instructions_for_json_carry_the_schema_and_a_correction() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    text = instructions(spec(response_format=fmt), correction="the answer holds no JSON")
    assert json.dumps(schema) in text and '"thing"' in text
    assert "<tool_call>" not in text
    assert text.endswith("Answer again, following the format above exactly.")
    assert "the answer holds no JSON" in text
    assert "JSON object" in instructions(spec(response_format={"type": "json_object"}))


def test_a_model_may_bring_its_own_instructions_template() -> None:
    text = instructions(
        spec(tools=[WEATHER]), source="{% for t in tools %}[{{ t.function.name }}]{% endfor %}"
    )
    assert text == "[get_weather]"


def test_instructions_join_the_leading_system_part() -> None:
    user = PromptMessage("user", "hi")
    assert with_instructions([user], "RULES") == [PromptMessage("system", "RULES"), user]
    system = [PromptMessage("system", "Be brief."), PromptMessage("system", "Be kind."), user]
    assert with_instructions(system, "RULES") == [
        system[0],
        PromptMessage("system", "Be kind.\n\nRULES"),
        user,
    ]


def test_history_writes_calls_back_in_the_format_the_model_is_asked_to_use() -> None:
    messages = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}, CALLED, RESULT]}
    ).messages
    _, called, result = prompt_messages(chat_messages(messages))
    assert called.role == "assistant"
    assert called.content == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert parse_answer(called.content, tool_spec()).called  # round trip
    assert result == PromptMessage("tool", "22 C and sunny", "get_weather")


def test_an_assistant_turn_with_prose_and_unparsable_arguments_is_kept_as_written() -> None:
    message = {
        **CALLED,
        "content": "Checking.",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
        ],
    }
    messages = ChatCompletionRequest.model_validate({"model": "m", "messages": [message]}).messages
    assert prompt_messages(chat_messages(messages))[0].content == (
        'Checking.\n<tool_call>\n{"name": "f", "arguments": "{bad"}\n</tool_call>'
    )


@pytest.mark.parametrize("template", sorted(PRESETS))
def test_rules_come_before_the_request_in_every_preset(template: str) -> None:
    prompt = chat(template, tools=[WEATHER])
    assert prompt.index("<tools>") < prompt.index(ASK)
    # What the emulator (a model trained on this format) answers is a call.
    answer = parse_answer(reply_for(prompt), tool_spec())
    assert answer.called


def test_once_the_history_holds_the_result_the_model_answers_in_prose() -> None:
    catalog = ModelCatalog([ModelSettings(name="m", tag="m:1")])
    body = {
        "model": "m",
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": ASK}, CALLED, RESULT],
    }
    plan = plan_chat(ChatCompletionRequest.model_validate(body), catalog, LimitSettings())
    reply = reply_for(plan.prompts[0])
    assert "22 C and sunny" in reply
    assert not parse_answer(reply, tool_spec()).calls


def test_the_prompt_without_tools_is_unchanged() -> None:
    assert "<tools>" not in chat()
    assert "<tools>" not in chat(tools=[WEATHER], tool_choice="none")


def test_a_plan_can_render_its_prompt_again_with_a_correction() -> None:
    catalog = ModelCatalog([ModelSettings(name="m", tag="m:1")])
    body = {"model": "m", "messages": [{"role": "user", "content": ASK}], "tools": [WEATHER]}
    plan = plan_chat(ChatCompletionRequest.model_validate(body), catalog, LimitSettings())
    assert plan.output is not None and plan.reprompt is not None
    again = plan.reprompt("there is no function named 'fly'")
    assert "there is no function named 'fly'" in again
    assert again.index("no function named") < again.index(ASK)


def test_legacy_functions_are_refused_with_a_pointer_to_tools() -> None:
    catalog = ModelCatalog([ModelSettings(name="m", tag="m:1")])
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "functions": [{"name": "f"}],
    }
    with pytest.raises(UnsupportedParameter, match="use 'tools'"):
        plan_chat(ChatCompletionRequest.model_validate(body), catalog, LimitSettings())
