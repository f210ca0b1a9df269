"""End to end: custom (free-text) tools on the Responses API, as Codex's ``apply_patch`` uses them.

The tool is offered to the model (its definition is in the prompt the upstream receives), the
model's call comes back as a ``custom_tool_call`` item whose ``input`` is the text it wrote,
streamed with ``response.custom_tool_call_input.delta`` / ``.done``; a
``custom_tool_call_output`` item continues the conversation. Every object and event is checked
against OpenAI's OpenAPI document.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from tests.e2e.conftest import job_prompt
from tests.e2e.servers import Server
from tests.e2e.test_responses_e2e import client, raw, sse_events
from tests.openai_spec import check, check_event

MODEL = "gemma-2b"
PATCH_TEXT = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch"
APPLY_PATCH: Any = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}
CALL = f"Add hello.txt [[emulate:tool apply_patch {json.dumps({'input': PATCH_TEXT})}]]"


def test_a_custom_tool_is_offered_and_its_call_comes_back_as_text(
    base_url: str, emulator: Server
) -> None:
    api = client(base_url)
    answer = api.responses.with_raw_response.create(model=MODEL, input=CALL, tools=[APPLY_PATCH])
    prompt = job_prompt(emulator, answer.headers["x-job-id"])
    assert "apply_patch" in prompt and "edit files" in prompt  # offered to the model
    body = json.loads(answer.text)
    check("Response", body)
    assert body["tools"] == [APPLY_PATCH]
    response = answer.parse()
    call = response.output[-1]
    assert call.type == "custom_tool_call"
    assert call.name == "apply_patch" and call.input == PATCH_TEXT
    assert call.id is not None and call.id.startswith("ctc_")

    # The tool's output continues the conversation: as history, and chained by id.
    result = {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}
    history: list[Any] = [{"role": "user", "content": CALL}, call.model_dump(exclude_none=True)]
    second = api.responses.create(model=MODEL, input=[*history, result], tools=[APPLY_PATCH])
    assert "Done!" in second.output_text
    chained = api.responses.create(
        model=MODEL, previous_response_id=response.id, input=[result], tools=[APPLY_PATCH]
    )
    assert "Done!" in chained.output_text
    items = api.responses.input_items.list(chained.id)
    assert [item.type for item in items.data] == ["custom_tool_call_output"]


def test_a_custom_call_streams_as_openai_sends_it(base_url: str) -> None:
    answer = raw(
        base_url,
        "POST",
        "/responses",
        json={"model": MODEL, "input": CALL, "tools": [APPLY_PATCH], "stream": True},
    )
    assert answer.status_code == 200, answer.text
    events = sse_events(answer.text)
    for event in events:
        check_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" not in types
    delta = next(e for e in events if e["type"] == "response.custom_tool_call_input.delta")
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "custom_tool_call" and added["item"]["input"] == ""
    assert delta["delta"] == done["input"] == PATCH_TEXT
    assert delta["item_id"] == done["item_id"] == added["item"]["id"]
    final = events[-1]["response"]
    assert final["output"][-1]["input"] == PATCH_TEXT

    # The openai SDK's stream helper assembles the same item.
    api = client(base_url)
    with api.responses.stream(model=MODEL, input=CALL, tools=[APPLY_PATCH]) as stream:
        seen = [event.type for event in stream]
        response = stream.get_final_response()
    assert "response.custom_tool_call_input.done" in seen
    call = response.output[-1]
    assert call.type == "custom_tool_call" and call.input == PATCH_TEXT


def test_a_custom_tool_choice_forces_it(base_url: str, emulator: Server) -> None:
    api = client(base_url)
    answer = api.responses.with_raw_response.create(
        model=MODEL,
        input=CALL,
        tools=[APPLY_PATCH],
        tool_choice={"type": "custom", "name": "apply_patch"},
    )
    assert answer.parse().output[-1].type == "custom_tool_call"
    check("Response", json.loads(answer.text))
    try:
        api.responses.create(
            model=MODEL,
            input=CALL,
            tools=[APPLY_PATCH],
            tool_choice={"type": "custom", "name": "x"},
        )
    except openai.BadRequestError as error:
        assert error.body is not None and "'x'" in str(error.body)
    else:
        raise AssertionError("a custom tool_choice naming no tool was accepted")


def test_a_custom_tool_in_a_namespace_is_offered(base_url: str, emulator: Server) -> None:
    namespace = {
        "type": "namespace",
        "name": "files",
        "description": "File tools",
        "tools": [{k: v for k, v in APPLY_PATCH.items() if k != "format"}],
    }
    answer = raw(
        base_url,
        "POST",
        "/responses",
        json={"model": MODEL, "input": CALL, "tools": [namespace]},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    check("Response", body)
    call = body["output"][-1]
    assert call["type"] == "custom_tool_call" and call["namespace"] == "files"
    assert call["input"] == PATCH_TEXT
