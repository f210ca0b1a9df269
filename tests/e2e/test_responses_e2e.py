"""End to end: the Responses API through the openai SDK and the Agents SDK.

Everything runs against the session's real gateway and emulator; every raw object and stream
event is validated against OpenAI's own OpenAPI document (:mod:`tests.openai_spec`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.servers import ALICE_KEY, BOB_KEY, Server
from tests.openai_spec import check, check_event

MODEL = "gemma-2b"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
PARIS = 'Weather in Paris? [[emulate:tool get_weather {"city": "Paris"}]]'


def client(base_url: str, key: str = ALICE_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def raw(base_url: str, method: str, path: str, key: str = ALICE_KEY, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.request(method, base_url + path, headers=headers, timeout=30, **kw)


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            events.append(json.loads("".join(data)))
    return events


# ------------------------------------------------------------------------------ create


def test_create_answers_with_the_emulators_text_as_a_valid_response(base_url: str) -> None:
    api = client(base_url)
    response = api.responses.create(
        model=MODEL,
        instructions="Be brief.",
        input="Say it [[emulate:reply Hello from the grid]]",
        metadata={"case": "create"},
        temperature=0.2,
    )
    assert response.output_text == "Hello from the grid"
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.metadata == {"case": "create"}
    body = raw(base_url, "GET", f"/responses/{response.id}").json()
    check("Response", body)
    assert body["output"][0]["content"][0]["text"] == "Hello from the grid"


def test_stream_helpers_see_openais_event_sequence(base_url: str) -> None:
    api = client(base_url)
    seen: list[str] = []
    text = ""
    with api.responses.stream(
        model=MODEL, input="Go [[emulate:reply one two three four five six]]"
    ) as stream:
        for event in stream:
            seen.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert text == "one two three four five six" == final.output_text
    assert seen[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert seen[-1] == "response.completed"
    assert seen.count("response.output_text.delta") >= 2  # streamed, not one chunk at the end

    answer = raw(
        base_url,
        "POST",
        "/responses",
        json={"model": MODEL, "input": PARIS, "tools": [WEATHER], "stream": True},
    )
    events = sse_events(answer.text)
    for event in events:
        check_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types


def test_failures_and_cuts(base_url: str) -> None:
    failing = raw(
        base_url,
        "POST",
        "/responses",
        json={
            "model": MODEL,
            "input": "x [[emulate:words 30]] [[emulate:fail boom]]",
            "stream": True,
        },
    )
    events = sse_events(failing.text)
    for event in events:
        check_event(event)
    assert "response.output_text.delta" in [e["type"] for e in events]  # it had begun
    assert events[-1]["type"] == "response.failed"  # then ended: no hang, no empty success
    assert events[-1]["response"]["error"]["code"] == "server_error"
    with pytest.raises(openai.APIStatusError) as info:  # not streamed: a real status
        client(base_url).responses.create(model=MODEL, input="x [[emulate:fail boom]]")
    assert info.value.status_code == 502
    cut = client(base_url).responses.create(
        model=MODEL, input="x [[emulate:words 40]]", max_output_tokens=16
    )
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"


def test_parse_with_a_pydantic_model(base_url: str) -> None:
    class Person(BaseModel):
        name: str
        age: int

    parsed = client(base_url).responses.parse(
        model=MODEL,
        input='Who? [[emulate:json {"name": "Ada", "age": 36}]]',
        text_format=Person,
    )
    assert parsed.output_parsed == Person(name="Ada", age=36)


def test_a_tool_loop_by_history_and_by_previous_response_id(base_url: str) -> None:
    api = client(base_url)
    first = api.responses.create(model=MODEL, input=PARIS, tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 24C"}

    # The Agents SDK way: the whole history again.
    history: list[Any] = [{"role": "user", "content": PARIS}]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    second = api.responses.create(model=MODEL, input=[*history, result], tools=[WEATHER])
    assert "Sunny, 24C" in second.output_text

    # The stored way: only the new item.
    chained = api.responses.create(
        model=MODEL, previous_response_id=first.id, input=[result], tools=[WEATHER]
    )
    assert "Sunny, 24C" in chained.output_text
    assert chained.previous_response_id == first.id


def test_retrieve_input_items_delete(base_url: str) -> None:
    api = client(base_url)
    made = api.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Answer plainly."},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hi [[emulate:reply Stored answer]]"}],
            },
        ],
    )
    assert api.responses.retrieve(made.id).output_text == "Stored answer"
    items = list(api.responses.input_items.list(made.id, order="asc"))
    assert [i.role for i in items] == ["developer", "user"]  # type: ignore[union-attr]
    listing = raw(base_url, "GET", f"/responses/{made.id}/input_items").json()
    check("ResponseItemList", listing)
    replayed = sse_events(
        raw(base_url, "GET", f"/responses/{made.id}", params={"stream": "true"}).text
    )
    for event in replayed:
        check_event(event)
    assert replayed[-1]["type"] == "response.completed"
    assert (
        replayed[-1]["response"]["output"]
        == raw(base_url, "GET", f"/responses/{made.id}").json()["output"]
    )
    api.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(made.id)


def test_store_false_keeps_nothing(base_url: str) -> None:
    api = client(base_url)
    made = api.responses.create(model=MODEL, input="x [[emulate:reply gone]]", store=False)
    assert made.output_text == "gone"
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(made.id)


def test_another_keys_response_is_not_found(base_url: str) -> None:
    made = client(base_url).responses.create(model=MODEL, input="mine [[emulate:reply mine]]")
    bob = client(base_url, BOB_KEY)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.input_items.list(made.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model=MODEL, input="and?", previous_response_id=made.id)
    assert client(base_url).responses.retrieve(made.id).output_text == "mine"


def test_bad_input_is_a_400_naming_the_item(base_url: str) -> None:
    api = client(base_url)
    image = {"type": "input_image", "image_url": "https://example.com/cat.png"}
    with pytest.raises(openai.BadRequestError) as info:
        api.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [image]}],  # type: ignore[list-item]
        )
    assert info.value.param == "input[0].content[0]"
    with pytest.raises(openai.BadRequestError) as info:
        api.responses.create(
            model=MODEL,
            input="hi",
            tool_choice={"type": "function", "name": "nope"},
            tools=[WEATHER],
        )
    assert info.value.param == "tool_choice"
    for body in ([1, 2], {"model": MODEL, "input": 7}, {"model": MODEL, "background": "yes"}):
        answer = raw(base_url, "POST", "/responses", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_hosted_tools_are_ignored_and_namespaces_offered(base_url: str) -> None:
    answer = raw(
        base_url,
        "POST",
        "/responses",
        json={
            "model": MODEL,
            "input": 'Go [[emulate:tool crm_lookup {"id": "7"}]]',
            "tools": [
                {"type": "web_search"},
                {
                    "type": "namespace",
                    "name": "crm",
                    "description": "CRM",
                    "tools": [
                        {
                            "type": "function",
                            "name": "crm_lookup",
                            "parameters": {
                                "type": "object",
                                "properties": {"id": {"type": "string"}},
                            },
                        }
                    ],
                },
            ],
            "reasoning": {"effort": "low"},
            "include": ["reasoning.encrypted_content"],
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    check("Response", body)
    call = body["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "crm_lookup"
    assert call["namespace"] == "crm"


def test_a_codex_shaped_request_works_as_sent(base_url: str) -> None:
    body = {
        "model": MODEL,
        "instructions": "You are a coding agent.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Sandbox: read-only."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "List files [[emulate:reply Done]]"}],
            },
        ],
        "tools": [
            {
                "type": "function",
                "name": "shell",
                "description": "Run a command.",
                "strict": False,
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                    "required": ["command"],
                },
            },
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Patch files.",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
            },
            {"type": "web_search"},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
    }
    answer = raw(base_url, "POST", "/responses", json=body)
    assert answer.status_code == 200, answer.text
    events = sse_events(answer.text)
    for event in events:
        check_event(event)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Done"


def test_input_tokens_and_compact(base_url: str) -> None:
    count = raw(base_url, "POST", "/responses/input_tokens", json={"model": MODEL, "input": "hi"})
    assert count.status_code == 200
    check("TokenCountsResource", count.json())
    assert count.json()["input_tokens"] > 0
    compact = raw(base_url, "POST", "/responses/compact", json={"model": MODEL, "input": "hi"})
    assert compact.status_code == 400
    assert compact.json()["error"]["code"] == "unsupported_endpoint"


# ------------------------------------------------------------------------------ background


def _wait(api: openai.OpenAI, response_id: str, until: set[str], limit: float = 20) -> Any:
    deadline = time.monotonic() + limit
    while True:
        got = api.responses.retrieve(response_id)
        if got.status in until or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_background_then_polling(base_url: str, gateway: Server) -> None:
    api = client(base_url)
    answer = api.responses.with_raw_response.create(
        model=MODEL,
        input="bg [[emulate:wps 20]] [[emulate:reply a b c d e f g h]]",
        background=True,
    )
    made = answer.parse()
    request_id = answer.headers["x-request-id"]
    assert made.status == "queued"
    check("Response", raw(base_url, "GET", f"/responses/{made.id}").json())
    done = _wait(api, made.id, {"completed", "failed"})
    assert done.status == "completed"
    assert done.output_text == "a b c d e f g h"
    assert done.usage is not None and done.usage.output_tokens > 0
    # The request is one access line (and ledger row) with its usage, written when it ends.
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in gateway.output().splitlines() if request_id in line]
        ended = [r for r in lines if r.get("outcome") == "ok" and r.get("route") == "/v1/responses"]
        if ended or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ended and ended[0]["completion_tokens"] == done.usage.output_tokens
    assert len(lines) == 1, lines  # one request, one record: the POST's is the run's


def test_cancel_a_background_response(base_url: str) -> None:
    api = client(base_url)
    made = api.responses.create(
        model=MODEL, input="long [[emulate:wps 4]] [[emulate:words 60]]", background=True
    )
    _wait(api, made.id, {"in_progress"})
    cancelled = api.responses.cancel(made.id)
    assert cancelled.status == "cancelled"
    assert api.responses.retrieve(made.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        plain = api.responses.create(model=MODEL, input="x [[emulate:reply y]]")
        api.responses.cancel(plain.id)


def test_a_dropped_background_stream_resumes_with_starting_after(base_url: str) -> None:
    api = client(base_url)
    reply = "alpha beta gamma delta epsilon zeta eta theta"
    stream = api.responses.create(
        model=MODEL,
        input=f"[[emulate:wps 10]] [[emulate:reply {reply}]]",
        background=True,
        stream=True,
    )
    first: list[Any] = []
    for event in stream:
        first.append(event)
        if event.type == "response.output_text.delta":
            break
    stream.close()  # the client drops
    response_id = first[0].response.id
    last = first[-1].sequence_number
    resumed = raw(
        base_url,
        "GET",
        f"/responses/{response_id}",
        params={"stream": "true", "starting_after": str(last)},
    )
    rest = sse_events(resumed.text)
    for event in rest:
        check_event(event)
    assert [e["sequence_number"] for e in rest] == list(range(last + 1, last + 1 + len(rest)))
    text = "".join(e.delta for e in first if e.type == "response.output_text.delta")
    text += "".join(e["delta"] for e in rest if e["type"] == "response.output_text.delta")
    assert text == reply
    assert rest[-1]["type"] == "response.completed"


def test_the_agents_sdk_runs_an_agent_with_a_function_tool(base_url: str) -> None:
    agents = pytest.importorskip("agents")
    import asyncio

    agents.set_tracing_disabled(True)  # traces would go to api.openai.com

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city now."""
        return f"Sunny in {city}"

    async def main() -> Any:
        api = openai.AsyncOpenAI(base_url=base_url, api_key=ALICE_KEY, max_retries=0)
        model = agents.OpenAIResponsesModel(model=MODEL, openai_client=api)
        agent = agents.Agent(
            name="weather", instructions="Use the tool.", tools=[get_weather], model=model
        )
        try:
            return await agents.Runner.run(agent, PARIS)
        finally:
            await api.close()

    result = asyncio.run(main())
    assert "Sunny in Paris" in result.final_output
