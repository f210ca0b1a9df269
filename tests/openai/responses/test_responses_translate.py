"""Responses requests -> the engine's Conversation: items, tools, choices, formats, errors."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.conversation import Message, ToolCall
from gateway.errors import BadRequest
from gateway.openai.responses.translate import Translated, input_items, references, translate
from gateway.openai.responses.wire import CreateResponse


def _translate(history: list[Any] | None = None, resolved: Any = None, **body: Any) -> Translated:
    request = CreateResponse.model_validate({"model": "m", **body})
    return translate(request, history or [], input_items(request), resolved or {})


def test_an_agents_history_becomes_messages_calls_and_results() -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Let me see.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {
            "type": "function_call",
            "id": "fc_2",
            "call_id": "c2",
            "name": "g",
            "arguments": "{}",
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "two"}],
        },
    ]
    conversation = _translate(input=items, instructions="Sys").conversation
    assert conversation.messages == [
        Message("system", "Sys"),
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message(
            "assistant",
            "Let me see.",
            tool_calls=(ToolCall("c1", "f", "{}"), ToolCall("c2", "g", "{}")),
        ),
        Message("tool", "one", name="f", tool_call_id="c1"),
        Message("tool", "two", name="g", tool_call_id="c2"),
    ]


def test_references_and_the_previous_chain_are_used() -> None:
    history = [{"type": "message", "role": "user", "content": "Before"}]
    resolved = {"msg_9": {"type": "message", "role": "assistant", "content": "Stored"}}
    conversation = _translate(
        history,
        resolved,
        input=[{"type": "item_reference", "id": "msg_9"}, {"role": "user", "content": "Now"}],
    ).conversation
    assert [m.text for m in conversation.messages] == ["Before", "Stored", "Now"]
    with pytest.raises(BadRequest, match="not stored"):
        _translate(input=[{"type": "item_reference", "id": "msg_x"}])


@pytest.mark.parametrize(
    ("item", "param"),
    [
        (
            {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
            "input[0].content[0]",
        ),
        ({"type": "weird"}, "input[0]"),
        ({"type": {"a": 1}, "role": "user", "content": "x"}, "input[0].type"),
        ({"type": ["message"], "content": "x"}, "input[0].type"),
        ({"role": "user", "content": [{"type": {"a": 1}, "text": "x"}]}, "input[0].content[0]"),
        ({"role": "robot", "content": "x"}, "input[0].role"),
        ({"type": "function_call", "name": "f"}, "input[0]"),
    ],
)
def test_bad_items_are_400s_naming_them(item: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        _translate(input=[item])
    assert info.value.param == param


def test_codex_tools_hosted_ignored_namespaces_and_custom_offered() -> None:
    tools = [
        {"type": "web_search"},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        {
            "type": "namespace",
            "name": "crm",
            "description": "CRM",
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        },
        {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": True},
    ]
    translated = _translate(input="hi", tools=tools, tool_choice="auto")
    conversation = translated.conversation
    assert [t.name for t in conversation.tools] == ["apply_patch", "lookup", "shell"]
    assert conversation.tools[0].custom and not conversation.tools[1].custom
    assert conversation.tools[2].strict
    assert translated.namespaces == {"lookup": "crm"}
    assert "tools[0] (web_search)" in conversation.ignored
    assert "tools[1].format (grammar)" in conversation.ignored
    assert [t["type"] for t in translated.tools] == ["custom", "namespace", "function"]


def test_tool_choice_and_text_format() -> None:
    fn = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    forced = _translate(input="x", tools=[fn], tool_choice={"type": "function", "name": "f"})
    assert forced.conversation.tool_choice is not None
    assert forced.conversation.tool_choice.forced == "f"
    allowed = _translate(
        input="x",
        tools=[fn],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "f"}],
        },
    )
    assert allowed.conversation.tool_choice is not None
    assert allowed.conversation.tool_choice.allowed == ("f",)
    with pytest.raises(BadRequest):
        _translate(input="x", tools=[fn], tool_choice={"type": "web_search"})
    fmt = _translate(
        input="x",
        text={
            "format": {
                "type": "json_schema",
                "name": "p",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
    )
    assert fmt.conversation.output_format is not None
    assert fmt.conversation.output_format.kind == "json_schema"
    assert fmt.conversation.output_format.param == "text.format"
    for refused in ({"conversation": "conv_1"}, {"prompt": {"id": "p"}}, {"top_logprobs": 3}):
        with pytest.raises(BadRequest):
            _translate(input="x", **refused)


def test_items_the_spec_allows_in_their_short_forms() -> None:
    """An ``item_reference`` may leave out its type, a ``function_call_output`` its call_id;
    ``additional_tools`` items add tools; compaction triggers and programs are dropped."""
    fn = {"type": "function", "name": "later", "parameters": {"type": "object"}}
    items = [
        {"type": "additional_tools", "id": "at_1", "role": "developer", "tools": [fn]},
        {"type": "compaction_trigger"},
        {"id": "p", "type": "program", "call_id": "c", "code": "1", "fingerprint": "f"},
        {"type": "function_call_output", "output": "42"},
        {"id": "msg_1"},
        {"role": "user", "content": "Hi"},
    ]
    stored = {"msg_1": {"type": "message", "role": "assistant", "content": "Earlier."}}
    request = CreateResponse.model_validate({"model": "m", "input": items})
    assert references(items) == ["msg_1"]
    conversation = translate(request, [], input_items(request), stored).conversation
    assert [t.name for t in conversation.tools] == ["later"]
    assert conversation.messages == [
        Message("tool", "42"),
        Message("assistant", "Earlier."),
        Message("user", "Hi"),
    ]
    with pytest.raises(BadRequest, match="not stored"):
        _translate(input=[{"id": "msg_2"}, {"role": "user", "content": "Hi"}])
