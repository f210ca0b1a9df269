"""End to end: valid requests from OpenAI's request schemas, every answer checked by the spec.

For chat completions, completions and the Responses API, each optional field of the request
schema is sent in turn, in each valid form the spec gives it (:mod:`tests.openai_requests`),
against the session's real gateway. Every answer must be what the spec says: a 200 whose body
(or every stream chunk / event) validates against the spec's answer schema, or a 400 whose
error names a field the docs list as refused, with the reason. Anything else is a finding: a
5xx, an invalid answer, or a valid field refused that the service could serve.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import ALICE_KEY
from tests.openai_requests import field_variants, flatten, minimal, resolve, schemas, variants
from tests.openai_spec import check, check_event

MODEL = "gemma-2b"
HEADERS = {"authorization": f"Bearer {ALICE_KEY}"}
DOCS = Path(__file__).resolve().parents[2] / "docs"
HI = "Say hi [[emulate:reply Hi there]]"
JSON = 'Answer in JSON [[emulate:json {"a": 1}]]'
CALL = "Call x [[emulate:tool x {}]]"
CALL_CUSTOM = 'Call y [[emulate:tool y {"input": "hi"}]]'
#: Tools a ``tool_choice`` may name.
RUNNABLE = ("function", "custom", "allowed_tools")

#: Fields refused on purpose: each must be listed as refused, with its reason, in the docs.
REFUSED = {
    "/chat/completions": {
        "logprobs",
        "audio",
        "web_search_options",
        "moderation",
    },
    "/completions": {"logprobs"},
    "/responses": {"top_logprobs", "include", "prompt", "conversation"},
}
#: Content the models cannot read (docs/openai.md: "content parts `image_url`, ... refused").
NOT_TEXT = re.compile(r"has type '(image_url|input_audio|file)'")
#: Fields a field is sent with (``top_logprobs`` needs ``logprobs``): a refusal may name them.
CONTEXT = {"top_logprobs": ("logprobs",), "modalities": ("audio",)}
#: Not varied: given by every request, or needing state (sent below with a real one).
FIXED = frozenset({"model", "messages", "prompt_text", "input", "previous_response_id"})


def _chat(field: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": HI}]}
    text = HI
    if field == "response_format" and value.get("type") != "text":
        text = JSON
    if field in ("tool_choice", "parallel_tool_calls"):
        body["tools"] = [
            {"type": "function", "function": {"name": "x"}},
            {"type": "custom", "custom": {"name": "y"}},
        ]
        if isinstance(value, dict) and value.get("type") == "allowed_tools":
            value = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}
            value["allowed_tools"]["tools"] = [{"type": "function", "function": {"name": "x"}}]
        if value == "required" or (isinstance(value, dict) and value.get("type") == "function"):
            text = CALL
        if isinstance(value, dict) and value.get("type") == "custom":
            text = CALL_CUSTOM
            value = {"type": "custom", "custom": {"name": "y"}}
    if field == "stream_options":
        body["stream"] = True
    if field == "top_logprobs":
        body["logprobs"] = True
    body["messages"][0]["content"] = text
    return {**body, field: value}


def _completions(field: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "prompt": HI, "max_tokens": 16}
    if field == "stream_options":
        body["stream"] = True
    return {**body, field: value}


def _responses(field: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "input": HI}
    if (
        field == "text"
        and isinstance(value, dict)
        and value.get("format", {}).get("type")
        in (
            "json_schema",
            "json_object",
        )
    ):
        body["input"] = JSON
    if field in ("tool_choice", "parallel_tool_calls", "max_tool_calls"):
        body["tools"] = [
            {"type": "function", "name": "x", "parameters": {"type": "object"}},
            {"type": "custom", "name": "y"},
        ]
        if isinstance(value, dict) and value.get("type") == "allowed_tools":
            value = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function"}]}
            value["tools"][0]["name"] = "x"
        if isinstance(value, dict) and value.get("type") == "custom":
            value = {"type": "custom", "name": "y"}
        if value == "required" or (isinstance(value, dict) and value.get("type") == "function"):
            body["input"] = CALL
        if isinstance(value, dict) and value.get("type") == "custom":
            body["input"] = CALL_CUSTOM
    if field == "stream_options":
        body["stream"] = True
    return {**body, field: value}


DOORS = {
    "/chat/completions": ("CreateChatCompletionRequest", _chat, "CreateChatCompletionResponse"),
    "/completions": ("CreateCompletionRequest", _completions, "CreateCompletionResponse"),
    "/responses": ("CreateResponse", _responses, "Response"),
}
STREAMED = {
    "/chat/completions": "CreateChatCompletionStreamResponse",
    "/completions": "CreateCompletionResponse",
}


def _message_cases() -> list[tuple[str, str, Any, dict[str, Any]]]:
    """Chat messages of every role before the user's, and every form of each role's content."""
    cases = []
    items = flatten(schemas()["CreateChatCompletionRequest"])[0]["messages"]["items"]
    for branch in resolve(items)["oneOf"]:
        message = resolve(branch)
        properties, _ = flatten(message)
        for form in variants(properties["role"]):
            for content in variants(properties["content"]) if "content" in properties else [None]:
                earlier = {**minimal(message), "role": form}
                if content is not None:
                    earlier["content"] = content
                if form == "user":
                    earlier["content"] = _with_directive(earlier.get("content"))
                    messages = [earlier]
                else:
                    messages = [earlier, {"role": "user", "content": HI}]
                body = {"model": MODEL, "messages": messages}
                cases.append(("/chat/completions", "messages", messages[0], body))
    return cases


def _input_cases() -> list[tuple[str, str, Any, dict[str, Any]]]:
    """Every form of a Responses input item, before the user's message."""
    param = resolve(flatten(schemas()["CreateResponse"])[0]["input"])
    array = next(b for b in param["oneOf"] if resolve(b).get("type") == "array")
    cases = []
    for item in variants(resolve(array)["items"]):
        body = {"model": MODEL, "input": [item, {"role": "user", "content": HI}]}
        cases.append(("/responses", "input", item, body))
    return cases


def _with_directive(content: Any) -> Any:
    """The user's content with the emulator's directive as its first text."""
    if isinstance(content, list):
        return [{"type": "text", "text": HI}, *content]
    return HI


def requests() -> list[tuple[str, str, Any, dict[str, Any]]]:
    cases = _message_cases() + _input_cases()
    for path, (schema, build, _) in DOORS.items():
        for field, value in field_variants(schema, FIXED):
            cases.append((path, field, value, build(field, value)))
    return cases


def _events(text: str) -> list[dict[str, Any]]:
    datas = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [json.loads(d) for d in datas if d != "[DONE]"]


def findings(
    path: str, field: str, value: Any, answer: httpx.Response, refused: set[str] | None = None
) -> list[str]:
    """What is wrong with ``answer`` to the valid request that set ``field`` to ``value``
    (a documented refusal's field is added to ``refused``)."""
    where = f"{path} {field}={json.dumps(value)[:80]}"
    if answer.status_code == 400:
        try:
            check("ErrorResponse", answer.json())
        except AssertionError as invalid:
            return [f"{where}: {invalid}"]
        error = answer.json().get("error", {})
        param = str(error.get("param") or "")
        if error.get("code") == "unsupported_content_type" and NOT_TEXT.search(error["message"]):
            return []  # images, audio, files: docs/openai.md lists them as refused, and why
        if field == "input" and "which is not stored" in error.get("message", ""):
            return []  # an item_reference to an id no response stored: nothing to refer to
        named = re.split(r"[.\[]", param)[0]
        if named in REFUSED[path] and named in (field, *CONTEXT.get(field, ())):
            if refused is not None:
                refused.add(f"{path} {named}")
            return []
        hosted = isinstance(value, dict) and value.get("type") not in RUNNABLE
        if path == "/responses" and field == named == "tool_choice" and hosted:
            return []  # a hosted or MCP tool's choice: refused, docs/responses.md says why
        return [f"{where}: refused: {answer.text[:300]}"]
    if answer.status_code != 200:
        return [f"{where}: {answer.status_code} {answer.text[:300]}"]
    problems = []
    try:
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            events = _events(answer.text)
            for i, event in enumerate(events):
                if path == "/responses":
                    check_event(event)
                    continue
                if path == "/completions" and i < len(events) - 1:
                    # The spec gives streamed text completions the answer's schema, whose
                    # finish_reason is required; OpenAI (and the gateway) send null until the
                    # choice ends: docs/openai.md lists it.
                    event = {
                        **event,
                        "choices": [
                            {**c, "finish_reason": c["finish_reason"] or "stop"}
                            for c in event["choices"]
                        ],
                    }
                check(STREAMED[path], _custom_calls_checked(event))
        else:
            check(DOORS[path][2], answer.json())
    except AssertionError as error:
        problems.append(f"{where}: {error}")
    return problems


def _custom_calls_checked(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chat chunk with its custom calls checked, and left out: the spec's stream deltas have
    only the function form, so a streamed custom call is checked as the non-streamed call
    schema (``ChatCompletionMessageCustomToolCall``) plus ``index`` (docs/openai.md says so)."""
    choices = []
    for choice in chunk.get("choices") or []:
        calls = (choice.get("delta") or {}).get("tool_calls") or []
        custom = [c for c in calls if c.get("type") == "custom"]
        for call in custom:
            assert isinstance(call.pop("index"), int)
            check("ChatCompletionMessageCustomToolCall", call)
        if custom:
            rest = [c for c in calls if c.get("type") != "custom"]
            choice = {**choice, "delta": {**choice["delta"], "tool_calls": rest}}
        choices.append(choice)
    return {**chunk, "choices": choices}


async def _send_all(
    base_url: str, cases: list[tuple[str, str, Any, dict[str, Any]]], refused: set[str]
) -> list[str]:
    gate = asyncio.Semaphore(6)
    async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, timeout=60) as client:

        async def one(path: str, field: str, value: Any, body: dict[str, Any]) -> list[str]:
            async with gate:
                answer = await client.post(path, json=body)
            return findings(path, field, value, answer, refused)

        results = await asyncio.gather(*(one(*case) for case in cases))
    return [problem for found in results for problem in found]


def streamed(cases: list[tuple[str, str, Any, dict[str, Any]]]) -> list[Any]:
    """Each case not already streamed, again with ``stream: true``."""
    return [
        (path, field, value, {**body, "stream": True})
        for path, field, value, body in cases
        if "stream" not in body and field != "stream"
    ]


def test_the_spec_checker_finds_nothing(base_url: str) -> None:
    cases = requests()
    cases += streamed(cases)
    assert len(cases) > 300
    refused: set[str] = set()
    problems = asyncio.run(_send_all(base_url, cases, refused))
    assert problems == [], "\n".join(problems)
    listed = {f"{path} {field}" for path, fields in REFUSED.items() for field in fields}
    assert refused == listed  # the list of refusals is not stale


def test_previous_response_id_chains_a_stored_response(base_url: str) -> None:
    first = httpx.post(
        base_url + "/responses", json={"model": MODEL, "input": HI}, headers=HEADERS, timeout=60
    )
    body = {"model": MODEL, "input": HI, "previous_response_id": first.json()["id"]}
    answer = httpx.post(base_url + "/responses", json=body, headers=HEADERS, timeout=60)
    assert findings("/responses", "previous_response_id", body, answer) == []


@pytest.mark.parametrize("path", sorted(REFUSED))
def test_every_refused_field_is_documented_with_its_reason(path: str) -> None:
    docs = (DOCS / "openai.md").read_text() + (DOCS / "responses.md").read_text()
    lines = [line for line in docs.splitlines() if "refused" in line.lower()]
    for field in REFUSED[path]:
        assert any(f"`{field}" in line for line in lines), f"{path} {field}: not documented"
