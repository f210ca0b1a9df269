"""Custom (free-text) tools on chat completions, as OpenAI's spec has them (issue 24, item 2)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import LimitSettings, ModelSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.conversation import CUSTOM_INPUT
from gateway.errors import BadRequest
from gateway.openai.codec import custom
from gateway.openai.protocol import ChatCompletionRequest
from gateway.openai.translate import chat_conversation, plan_chat

PATCH = {"type": "custom", "custom": {"name": "apply_patch", "description": "Patch files."}}
CATALOG = ModelCatalog([ModelSettings(name="m", tag="gemma:2b")])


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def test_a_custom_tool_is_offered_as_one_taking_its_input_as_text() -> None:
    conversation = chat_conversation(request(tools=[PATCH]))
    (tool,) = conversation.tools
    assert tool.custom and tool.name == "apply_patch" and tool.parameters == CUSTOM_INPUT
    plan = plan_chat(request(tools=[PATCH]), CATALOG, LimitSettings())
    assert plan.output is not None and plan.output.tools is not None
    assert plan.output.tools.custom == {"apply_patch"}
    assert '"apply_patch"' in plan.prompts[0] and '"input"' in plan.prompts[0]


def test_a_grammar_is_accepted_and_listed_as_ignored() -> None:
    grammar = {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: /x/"}}
    tool = {"type": "custom", "custom": {"name": "apply_patch", "format": grammar}}
    conversation = chat_conversation(request(tools=[tool]))
    assert "tools[0].custom.format (grammar)" in conversation.ignored


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "custom", "custom": {"name": "apply_patch"}},
        {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}],
            },
        },
    ],
)
def test_a_custom_tool_choice_is_honoured(choice: dict[str, Any]) -> None:
    weather = {"type": "function", "function": {"name": "get_weather"}}
    plan = plan_chat(request(tools=[PATCH, weather], tool_choice=choice), CATALOG, LimitSettings())
    assert plan.output is not None and plan.output.tools is not None
    assert plan.output.tools.must_call
    assert [t.name for t in plan.output.tools.tools if plan.output.tools.allowed(t.name)] == [
        "apply_patch"
    ]


def test_a_custom_tool_needs_a_name() -> None:
    with pytest.raises(BadRequest) as caught:
        chat_conversation(request(tools=[{"type": "custom", "custom": {}}]))
    assert caught.value.param == "tools[0].custom.name"


def test_the_call_carries_the_input_as_text() -> None:
    assert custom("t", '{"input": "*** Begin Patch"}') == {"name": "t", "input": "*** Begin Patch"}
    assert custom("t", "not json") == {"name": "t", "input": "not json"}
    assert custom("t", '{"input": {"a": 1}}') == {"name": "t", "input": '{"a": 1}'}


def test_fields_the_spec_allows_that_the_gateway_serves() -> None:
    """Found by tests/e2e/test_spec_requests_e2e.py: a json_schema format without a schema
    (optional in the spec) asks for any JSON object; an assistant's earlier ``refusal`` part is
    its text."""
    fmt = {"type": "json_schema", "json_schema": {"name": "answer"}}
    conversation = chat_conversation(request(response_format=fmt))
    assert conversation.output_format is not None
    assert conversation.output_format.kind == "json_object"
    refusal = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]}
    messages = [refusal, {"role": "user", "content": "Why?"}]
    assert chat_conversation(request(messages=messages)).messages[0].text == "I cannot."
