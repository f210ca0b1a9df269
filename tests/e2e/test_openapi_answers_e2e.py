"""End to end: the gateway's own /openapi.json agrees with what it answers (issue 14, item 6).

Real answers of the session's gateway (chat, text, Responses, models, errors; objects and
stream chunks) are validated against the schemas of the document the same gateway serves, and
the chat/completions fixes found by validating against OpenAI's document each get a test.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import httpx
import jsonschema
import pytest

from tests.e2e.servers import ALICE_KEY
from tests.openai_spec import check as spec_check

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


CUSTOM = {"type": "custom", "custom": {"name": "apply_patch", "description": "Patch files."}}
PATCH = 'Patch it. [[emulate:tool apply_patch {"input": "*** Begin Patch\\n+x"}]]'


@pytest.mark.parametrize("stream", [False, True])
def test_a_custom_tool_is_called_with_its_input_as_text(base_url: str, stream: bool) -> None:
    """Item 24.2: a free-text tool (and a custom tool_choice) as OpenAI's spec has them."""
    body = {
        "model": "gemma-2b",
        "messages": [{"role": "user", "content": PATCH}],
        "tools": [CUSTOM, WEATHER],
        "tool_choice": {"type": "custom", "custom": {"name": "apply_patch"}},
        "stream": stream,
    }
    answer = post(base_url, "/chat/completions", body)
    assert answer.status_code == 200, answer.text
    expected = {"name": "apply_patch", "input": "*** Begin Patch\n+x"}
    if not stream:
        check(base_url, "ChatCompletion", answer.json())
        spec_check("CreateChatCompletionResponse", answer.json())
        (call,) = answer.json()["choices"][0]["message"]["tool_calls"]
        assert call["type"] == "custom" and call["custom"] == expected
        assert answer.json()["choices"][0]["finish_reason"] == "tool_calls"
        return
    parts = chunks(answer)
    for part in parts:
        check(base_url, "ChatCompletionChunk", part)
    calls = [
        c for p in parts if p["choices"] for c in p["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert len(calls) == 1 and calls[0]["type"] == "custom" and calls[0]["custom"] == expected
    assert calls[0]["index"] == 0 and calls[0]["id"].startswith("call_")
    assert parts[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_custom_tool_named_in_tool_choice_must_exist(base_url: str) -> None:
    body = {
        "model": "gemma-2b",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [CUSTOM],
        "tool_choice": {"type": "custom", "custom": {"name": "nope"}},
    }
    refused = post(base_url, "/chat/completions", body)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tool_choice"


def test_a_custom_tool_call_in_the_history_continues(base_url: str) -> None:
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


def test_text_completion_chunks_carry_no_null_usage(base_url: str) -> None:
    """Item 24.2: OpenAI's spec allows no ``usage: null`` on a text completion chunk."""
    body = {
        "model": "gemma-2b",
        "prompt": "Say [[emulate:reply one two three]]",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parts = chunks(post(base_url, "/completions", body))
    assert parts and all("usage" not in p for p in parts[:-1])
    assert parts[-1]["usage"]["total_tokens"] > 0 and parts[-1]["choices"] == []
    for part in parts:
        check(base_url, "CompletionChunk", part)
        if not part["choices"] or part["choices"][0]["finish_reason"] is not None:
            # The spec types a chunk as the whole object, whose finish_reason is never null.
            spec_check("CreateCompletionResponse", part)


def test_text_completion_without_max_tokens_writes_the_specs_16(base_url: str) -> None:
    """Item 24.2: ``max_tokens`` defaults to 16 on /v1/completions, as OpenAI and vLLM do."""
    words = " ".join(f"w{i}" for i in range(40))
    answer = post(
        base_url, "/completions", {"model": "gemma-2b", "prompt": f"[[emulate:reply {words}]]"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 16
    assert answer.json()["choices"][0]["finish_reason"] == "length"


def test_a_response_object_has_no_null_where_the_spec_allows_none(base_url: str) -> None:
    """Item 24.2: every field of the Response object as the spec types it; ``user`` and
    ``prompt_cache_options`` (which may not be null) are left out rather than null."""
    body = {
        "model": "gemma-2b",
        "input": "Hi [[emulate:reply Hello.]]",
        "prompt_cache_options": {"mode": "auto"},
        "store": False,
    }
    answer = post(base_url, "/responses", body)
    assert answer.status_code == 200, answer.text
    obj = answer.json()
    spec_check("Response", obj)
    assert "user" not in obj and "prompt_cache_options" not in obj
    assert all(obj[k] is not None for k in ("tools", "tool_choice", "text", "usage", "output"))


# ------------------------------------------------ the document declares what the gateway enforces

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def test_every_undeclared_method_is_a_405_naming_the_declared_ones(base_url: str) -> None:
    """Item 24.2: the 405s the document declares are the ones the gateway sends."""
    document = _document(base_url)
    declared_405 = document["components"]["responses"]["MethodNotAllowed"]
    assert "allow" in declared_405["headers"]
    root = base_url.removesuffix("/v1")
    templates = {
        re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", path) + "$"): {m.upper() for m in item}
        for path, item in document["paths"].items()
    }
    checked = 0
    for path in document["paths"]:
        url = path.replace("{", "").replace("}", "")  # any value will do
        # Every documented path the URL matches ("/v1/responses/compact" is also a response id).
        declared = set().union(*(methods for rx, methods in templates.items() if rx.match(url)))
        for method in METHODS:
            if method in declared:
                continue
            answer = httpx.request(method, root + url, headers=HEADERS, timeout=10)
            assert answer.status_code == 405, (method, path, answer.status_code)
            allowed = {m.strip() for m in answer.headers["allow"].split(",")}
            assert allowed == declared, (method, path)
            checked += 1
    assert checked > 100


def _limit(base_url: str, schema: str, field: str, key: str) -> int:
    node = _document(base_url)["components"]["schemas"][schema]["properties"][field]
    for branch in [node, *node.get("anyOf", [])]:
        if key in branch:
            return int(branch[key])
    raise AssertionError(f"{schema}.{field} declares no {key}")


@pytest.mark.parametrize(
    ("path", "schema", "field", "key"),
    [
        ("/chat/completions", "ChatCompletionRequest", "n", "maximum"),
        ("/chat/completions", "ChatCompletionRequest", "max_tokens", "maximum"),
        ("/chat/completions", "ChatCompletionRequest", "max_completion_tokens", "maximum"),
        ("/completions", "CompletionRequest", "n", "maximum"),
        ("/completions", "CompletionRequest", "max_tokens", "maximum"),
        ("/completions", "CompletionRequest", "max_tokens", "minimum"),
        ("/chat/completions", "ChatCompletionRequest", "max_tokens", "minimum"),
    ],
)
def test_a_declared_limit_is_accepted_and_one_past_it_refused(
    base_url: str, path: str, schema: str, field: str, key: str
) -> None:
    """Item 24.2: what /openapi.json declares is exactly what the gateway accepts."""
    limit = _limit(base_url, schema, field, key)
    body: dict[str, Any] = {"model": "gemma-2b"}
    if path == "/completions":
        body["prompt"] = "Hi [[emulate:reply ok]]"
    else:
        body["messages"] = [{"role": "user", "content": "Hi [[emulate:reply ok]]"}]
    past = limit + 1 if key == "maximum" else limit - 1
    accepted = post(base_url, path, {**body, field: limit})
    assert accepted.status_code == 200, accepted.text
    refused = post(base_url, path, {**body, field: past})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == field


def test_the_declared_message_and_stop_counts_are_enforced(base_url: str) -> None:
    most = _limit(base_url, "ChatCompletionRequest", "messages", "maxItems")
    message = {"role": "user", "content": "Hi [[emulate:reply ok]]"}
    assert post(base_url, "/chat/completions", {"model": "gemma-2b", "messages": [message] * most})
    too_many = post(
        base_url, "/chat/completions", {"model": "gemma-2b", "messages": [message] * (most + 1)}
    )
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "messages"
    stops = _document(base_url)["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    most_stops = next(b["maxItems"] for b in stops["stop"]["anyOf"] if "maxItems" in b)
    body = {"model": "gemma-2b", "messages": [message]}
    ok = post(base_url, "/chat/completions", {**body, "stop": ["x"] * most_stops})
    assert ok.status_code == 200
    refused = post(base_url, "/chat/completions", {**body, "stop": ["x"] * (most_stops + 1)})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stop"
