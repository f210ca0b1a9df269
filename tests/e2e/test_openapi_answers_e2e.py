"""End to end: the gateway's own /openapi.json agrees with what it answers (issue 14, item 6).

Real answers of the session's gateway (chat, text, Responses, models, errors; objects and
stream chunks) are validated against the schemas of the document the same gateway serves, and
the chat/completions fixes found by validating against OpenAI's document each get a test.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import jsonschema
import pytest

from tests.e2e.servers import ALICE_KEY

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
PARIS = 'Weather in Paris? [[emulate:tool get_weather {"city": "Paris"}]]'
HEADERS = {"authorization": f"Bearer {ALICE_KEY}"}


@functools.cache
def _document(base_url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(base_url.removesuffix("/v1") + "/openapi.json").json()
    return document


def check(base_url: str, name: str, instance: Any) -> None:
    schema = {
        "components": _document(base_url)["components"],
        "$ref": f"#/components/schemas/{name}",
    }
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    assert not errors, f"{name}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]
    )


def post(base_url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base_url + path, json=body, headers=HEADERS, timeout=30)


def chunks(answer: httpx.Response) -> list[dict[str, Any]]:
    datas = [line[6:] for line in answer.text.split("\n") if line.startswith("data: ")]
    return [json.loads(d) for d in datas if d != "[DONE]"]


def test_chat_objects_and_chunks_match_the_document(base_url: str) -> None:
    plain = post(
        base_url,
        "/chat/completions",
        {"model": "gemma-2b", "messages": [{"role": "user", "content": "hi [[emulate:reply Hi]]"}]},
    )
    check(base_url, "ChatCompletion", plain.json())
    documented = _document(base_url)["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    for header in ("x-request-id", "x-job-id"):
        assert header in documented["headers"] and header in plain.headers
    called = post(
        base_url,
        "/chat/completions",
        {"model": "gemma-2b", "messages": [{"role": "user", "content": PARIS}], "tools": [WEATHER]},
    )
    check(base_url, "ChatCompletion", called.json())
    assert called.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == (
        "get_weather"
    )
    streamed = post(
        base_url,
        "/chat/completions",
        {
            "model": "gemma-2b",
            "messages": [{"role": "user", "content": PARIS}],
            "tools": [WEATHER],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    got = chunks(streamed)
    for chunk in got:
        check(base_url, "ChatCompletionChunk", chunk)
    # usage: null on every chunk before the usage chunk, as OpenAI sends them
    assert all("usage" in c and c["usage"] is None for c in got[:-1])
    assert got[-1]["choices"] == [] and got[-1]["usage"]["total_tokens"] > 0


def test_text_completions_match_the_document_and_take_the_specs_edge_values(
    base_url: str,
) -> None:
    answer = post(
        base_url, "/completions", {"model": "gemma-2b", "prompt": "Once [[emulate:reply upon]]"}
    )
    check(base_url, "Completion", answer.json())
    streamed = post(
        base_url,
        "/completions",
        {"model": "gemma-2b", "prompt": "x [[emulate:reply y z]]", "stream": True},
    )
    for chunk in chunks(streamed):
        check(base_url, "CompletionChunk", chunk)
    # The spec allows a null prompt (a new document) and max_tokens 0 (with echo: the prompt).
    nothing = post(base_url, "/completions", {"model": "gemma-2b", "prompt": None, "max_tokens": 4})
    assert nothing.status_code == 200, nothing.text
    echoed = post(
        base_url,
        "/completions",
        {"model": "gemma-2b", "prompt": "Score me", "max_tokens": 0, "echo": True},
    )
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["choices"][0]["text"] == "Score me"
    assert echoed.json()["usage"]["completion_tokens"] == 0


def test_responses_objects_match_the_document(base_url: str) -> None:
    made = post(base_url, "/responses", {"model": "gemma-2b", "input": "hi [[emulate:reply yo]]"})
    check(base_url, "Response", made.json())
    streamed = post(
        base_url,
        "/responses",
        {
            "model": "gemma-2b",
            "input": PARIS,
            "stream": True,
            "tools": [{"type": "function", "name": "get_weather"}],
        },
    )
    for event in chunks(streamed):
        check(base_url, "ResponsesStreamEvent", event)
        if "response" in event:
            check(base_url, "Response", event["response"])
    rid = made.json()["id"]
    items = httpx.get(f"{base_url}/responses/{rid}/input_items", headers=HEADERS)
    check(base_url, "ResponseItemList", items.json())
    count = post(base_url, "/responses/input_tokens", {"model": "gemma-2b", "input": "hi"})
    check(base_url, "ResponseInputTokens", count.json())
    deleted = httpx.delete(f"{base_url}/responses/{rid}", headers=HEADERS)
    check(base_url, "ResponseDeleted", deleted.json())
    missing = httpx.get(f"{base_url}/responses/{rid}", headers=HEADERS)
    assert missing.status_code == 404
    check(base_url, "Error", missing.json())
    check(base_url, "ModelList", httpx.get(base_url + "/models", headers=HEADERS).json())


def test_the_document_states_the_real_stop_limit(base_url: str) -> None:
    stop = _document(base_url)["components"]["schemas"]["ChatCompletionRequest"]["properties"][
        "stop"
    ]
    limit = stop["anyOf"][1]["maxItems"]
    body = {"model": "gemma-2b", "messages": [{"role": "user", "content": "hi"}]}
    too_many = post(base_url, "/chat/completions", {**body, "stop": ["a"] * (limit + 1)})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "stop"


def test_chat_takes_allowed_tools(base_url: str) -> None:
    body = {
        "model": "gemma-2b",
        "messages": [{"role": "user", "content": PARIS}],
        "tools": [WEATHER, TIME],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            },
        },
    }
    answer = post(base_url, "/chat/completions", body)
    assert answer.status_code == 200, answer.text
    calls = answer.json()["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    unknown = json.loads(json.dumps(body))
    unknown["tool_choice"]["allowed_tools"]["tools"][0]["function"]["name"] = "nope"
    refused = post(base_url, "/chat/completions", unknown)
    assert refused.status_code == 400


@pytest.mark.parametrize("where", ["tools", "history"])
def test_custom_tools_are_refused_clearly_and_their_history_continues(
    base_url: str, where: str
) -> None:
    custom = {"type": "custom", "custom": {"name": "apply_patch", "description": "Patch files."}}
    if where == "tools":
        answer = post(
            base_url,
            "/chat/completions",
            {
                "model": "gemma-2b",
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [custom],
            },
        )
        assert answer.status_code == 400
        assert "Custom (free-text) tools are not supported" in answer.json()["error"]["message"]
        assert answer.json()["error"]["param"] == "tools[0]"
        return
    history = [
        {"role": "user", "content": "Patch it."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "custom",
                    "custom": {"name": "apply_patch", "input": "*** x"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Done. [[emulate:reply Patched.]]"},
    ]
    answer = post(base_url, "/chat/completions", {"model": "gemma-2b", "messages": history})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Patched."
