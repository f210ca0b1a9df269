"""Prompts fitted into their model's context window (issue 24, item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import LimitSettings, ModelSettings
from gateway.engine.catalog import FALLBACK_CONTEXT_WINDOW, ModelCatalog, context_window
from gateway.engine.conversation import Conversation, Message, ToolCall, ToolChoice, ToolDefinition
from gateway.engine.fitting import CUT_MARK, cut_middle, window_for
from gateway.engine.planning import TextPrompts, plan_conversation, plan_prompts
from gateway.engine.tokens import count_tokens
from gateway.errors import BadRequest
from gateway.openai.protocol import ChatCompletionRequest
from gateway.openai.responses.translate import input_items, translate
from gateway.openai.responses.wire import CreateResponse
from gateway.openai.translate import plan_chat

RECORDED = Path(__file__).resolve().parents[1] / "clients" / "recorded"
GEMMA = ModelSettings(name="gemma-2b", tag="gemma:2b", template="gemma")
LIMITS = LimitSettings()


def open_webui(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((RECORDED / "open_webui_chat.json").read_text())
    return {**body, **changes}


def catalog(*models: ModelSettings) -> ModelCatalog:
    return ModelCatalog(models or (GEMMA,))


def words(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


def test_known_tags_have_their_windows_and_config_wins() -> None:
    assert context_window(GEMMA) == 8192
    assert context_window(ModelSettings(name="l", tag="llama2-uncensored")) == 4096
    assert context_window(ModelSettings(name="l", tag="llama3.1:8b")) == 131072
    assert context_window(ModelSettings(name="x", tag="unheard-of:7b")) == FALLBACK_CONTEXT_WINDOW
    assert context_window(ModelSettings(name="g", tag="gemma:2b", context_window=2048)) == 2048


def test_the_answer_keeps_its_room() -> None:
    assert window_for(GEMMA, None).reserve == 1024  # a quarter of the window, at most 1024
    assert window_for(GEMMA, 300).reserve == 300
    assert window_for(GEMMA, 32000).reserve == 4096  # never more than half the window
    reserved = ModelSettings(name="g", tag="gemma:2b", answer_reserve=2000)
    assert window_for(reserved, None).budget == 8192 - 2000
    # Anthropic's clients send max_tokens as a ceiling: the answer keeps the usual room.
    assert window_for(GEMMA, 32000, cap_only=True).reserve == 1024
    assert window_for(GEMMA, 300, cap_only=True).reserve == 300


def test_open_webuis_36_tools_fit_gemma_2b() -> None:
    """The recorded Open WebUI turn (36 tools, ~25 KB) asking "Name three colours."."""
    body = open_webui()
    assert len(body["tools"]) == 36 and len(json.dumps(body["tools"])) > 24_000
    full = sum(count_tokens(json.dumps(t)) for t in body["tools"])
    assert full > 8192  # as sent, the tools alone overflow the window
    plan = plan_chat(ChatCompletionRequest.model_validate(body), catalog(), LIMITS)
    assert plan.prompt_tokens == count_tokens(plan.prompts[0]) <= 8192 - 1024
    assert "Name three colours." in plan.prompts[0]
    assert plan.ignored[0].startswith("tools: definitions shortened")
    assert plan.output is not None and plan.output.tools is not None
    kept = [t.name for t in plan.output.tools.tools]
    assert 20 < len(kept) < 36
    left_out = f"tools: {36 - len(kept)} of 36 left out"
    assert any(entry.startswith(left_out) for entry in plan.ignored)
    assert kept == [t["function"]["name"] for t in body["tools"] if t["function"]["name"] in kept]


def test_a_forced_tool_and_the_tools_called_before_are_kept_first() -> None:
    body = open_webui()
    last, before = body["tools"][-1]["function"]["name"], body["tools"][-2]["function"]["name"]
    body["tool_choice"] = {"type": "function", "function": {"name": last}}
    body["messages"] = [
        {"role": "user", "content": "Look it up."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": before, "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
        {"role": "user", "content": "Name three colours."},
    ]
    plan = plan_chat(ChatCompletionRequest.model_validate(body), catalog(), LIMITS)
    assert plan.output is not None and plan.output.tools is not None
    kept = [t.name for t in plan.output.tools.tools]
    assert last in kept and before in kept and len(kept) < 36
    assert plan.output.tools.forced == last
    assert plan.prompt_tokens <= 8192 - 1024


def test_a_prompt_that_fits_is_left_alone() -> None:
    body = open_webui()
    small = ModelSettings(name="gemma-2b", tag="gemma:2b", template="gemma", context_window=65536)
    plan = plan_chat(ChatCompletionRequest.model_validate(body), catalog(small), LIMITS)
    assert plan.ignored == [] and plan.output is not None and plan.output.tools is not None
    assert len(plan.output.tools.tools) == 36
    assert '"type": "function"' in plan.prompts[0]  # the full rendering


def test_too_long_is_refused_at_once_with_context_length_exceeded() -> None:
    conversation = Conversation(
        model="gemma-2b",
        messages=[Message("user", words(3000)), Message("user", words(3000))],
    )
    with pytest.raises(BadRequest) as caught:
        plan_conversation(conversation, catalog(), LIMITS)
    error = caught.value
    assert error.status_code == 400 and error.code == "context_length_exceeded"
    assert error.param == "messages"
    assert error.message.startswith("prompt is too long: ")  # Anthropic's clients look for it
    assert "maximum context length is 8192 tokens" in error.message  # OpenAI's wording


def test_truncation_drops_the_oldest_turns_keeping_system_and_the_last() -> None:
    history = [Message("system", "Be brief.")]
    for i in range(6):
        history += [Message("user", f"question {i} " + words(700)), Message("assistant", "ok")]
    history.append(Message("user", "Name three colours."))
    conversation = Conversation(model="gemma-2b", messages=history, truncation=True)
    plan = plan_conversation(conversation, catalog(), LIMITS)
    prompt = plan.prompts[0]
    assert plan.prompt_tokens <= 8192 - 1024
    assert "Be brief." in prompt and "Name three colours." in prompt
    assert "question 0 " not in prompt and "question 5 " in prompt
    assert any(entry.startswith("messages: the ") for entry in plan.ignored)
    # The same model opted in by config does it on every door.
    auto = ModelSettings(name="gemma-2b", tag="gemma:2b", template="gemma", truncation="auto")
    conversation.truncation = False
    assert plan_conversation(conversation, catalog(auto), LIMITS).prompts[0] == prompt
    with pytest.raises(BadRequest, match="prompt is too long"):
        plan_conversation(conversation, catalog(), LIMITS)


def test_truncation_never_drops_the_last_turn() -> None:
    conversation = Conversation(
        model="gemma-2b",
        messages=[Message("user", "hi"), Message("user", words(9000))],
        truncation=True,
    )
    with pytest.raises(BadRequest, match="prompt is too long"):
        plan_conversation(conversation, catalog(), LIMITS)


def test_tools_go_before_turns_and_a_required_tool_is_never_dropped() -> None:
    properties = {f"option_{j}": {"type": "string"} for j in range(40)}
    tools = [
        ToolDefinition(f"tool_{i}", None, {"type": "object", "properties": properties})
        for i in range(60)
    ]
    conversation = Conversation(
        model="gemma-2b",
        messages=[Message("user", "Go.")],
        tools=tools,
        tool_choice=ToolChoice("required"),
    )
    plan = plan_conversation(conversation, catalog(), LIMITS)
    assert plan.output is not None and plan.output.tools is not None
    assert 1 <= len(plan.output.tools.tools) < 60 and plan.output.tools.choice == "required"
    call = ToolCall("c1", "tool_59", "{}")
    conversation.messages = [
        Message("user", "Go."),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "done", tool_call_id="c1"),
    ]
    plan = plan_conversation(conversation, catalog(), LIMITS)
    assert plan.output is not None and plan.output.tools is not None
    assert "tool_59" in [t.name for t in plan.output.tools.tools]


def test_a_max_tokens_larger_than_the_window_leaves_is_lowered() -> None:
    conversation = Conversation(
        model="gemma-2b", messages=[Message("user", words(2000))], max_tokens=8000
    )
    plan = plan_conversation(conversation, catalog(), LIMITS)
    assert plan.max_tokens == 8192 - plan.prompt_tokens
    assert any(entry.startswith("max_tokens: lowered to") for entry in plan.ignored)


def test_a_ceiling_max_tokens_keeps_the_usual_room_and_is_lowered() -> None:
    conversation = Conversation(
        model="gemma-2b",
        messages=[Message("user", words(2500))],
        max_tokens=32000,
        clamp_max_tokens=True,
    )
    plan = plan_conversation(conversation, catalog(), LIMITS)
    assert plan.prompt_tokens > 4096  # more than half the window: fits the usual room
    assert plan.max_tokens == 8192 - plan.prompt_tokens


def test_a_raw_text_prompt_too_long_is_refused() -> None:
    request = TextPrompts(model="gemma-2b", prompts=[words(8000)])
    with pytest.raises(BadRequest) as caught:
        plan_prompts(request, catalog(), LIMITS)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "prompt"


def codex(**changes: Any) -> Conversation:
    """Codex's recorded request (a ~18 KB developer prompt) as the Responses door reads it."""
    body = json.loads((RECORDED / "codex.json").read_text())
    request = CreateResponse.model_validate({**body, **changes})
    items = input_items(request)
    return translate(request, [], items, {}).conversation


def test_a_long_system_prompt_is_cut_in_the_middle_when_truncation_is_allowed() -> None:
    small = ModelSettings(name="gemma-2b", tag="gemma:2b", template="gemma", context_window=4096)
    developer = codex().messages[0].text
    assert len(developer) > 15000
    with pytest.raises(BadRequest) as caught:  # not allowed: refused, clearly and at once
        plan_conversation(codex(), catalog(small), LIMITS)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "input"

    plan = plan_conversation(codex(truncation="auto"), catalog(small), LIMITS)
    prompt = plan.prompts[0]
    assert plan.prompt_tokens <= 4096 - 1024
    assert developer[:200] in prompt and developer[-200:] in prompt  # head and tail kept
    assert CUT_MARK in prompt and developer not in prompt
    assert "Name three colours." in prompt  # the user's turn is whole
    cut = [entry for entry in plan.ignored if "system message cut from" in entry]
    assert cut == [
        f"input: a system message cut from {len(developer)} to "
        f"{cut[0].split(' to ')[1].split(' ')[0]} characters (its head and tail kept) to fit "
        "the context window"
    ]
    assert plan.output is not None and plan.output.tools is not None  # tools still offered


def test_a_short_system_prompt_is_not_cut_and_the_floor_holds() -> None:
    assert cut_middle("abcdef", 10) == "abcdef"
    assert cut_middle("abcdefghij", 4) == "ab" + CUT_MARK + "ij"
    conversation = Conversation(
        model="gemma-2b",
        messages=[Message("system", "Be brief."), Message("user", words(9000))],
        truncation=True,
    )
    with pytest.raises(BadRequest, match="prompt is too long"):  # the user's text is not cut
        plan_conversation(conversation, catalog(), LIMITS)
