"""End to end: tools and structured output through the real SDKs, gateway and emulator.

The emulator plays a model that calls tools or writes JSON when the user message carries a
directive (``[[emulate:tool NAME ARGS]]``, ``[[emulate:json JSON]]``). This module starts its
own emulator and gateway (subprocesses on free loopback ports), so it depends on no shared
fixture.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import yaml
from pydantic import BaseModel

from tests.e2e.servers import Server, free_port, running

KEY = "sk-test-tools-0123456789"
TOKEN = "upstream-token-tools"
MODEL = "gemma-2b"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PARIS = 'What is the weather in Paris? [[emulate:tool get_weather {"city": "Paris"}]]'
# Slow and long enough that the call arrives over many polls.
SLOW_CALL = (
    "[[emulate:wps 25]] What is the weather in Rio? [[emulate:tool get_weather "
    '{"city": "Rio de Janeiro", "note": "one two three four five six seven eight nine ten"} '
    "style=prose]]"
)


class Person(BaseModel):
    name: str
    age: int


ADA = 'Who wrote the first program? [[emulate:json {"name": "Ada", "age": 36} style=prose]]'


# ------------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Servers:
    gateway: str
    emulator: str

    @property
    def base_url(self) -> str:
        return self.gateway + "/v1"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("tools-e2e")
    emulator_port, gateway_port = free_port(), free_port()
    emulator_args = ["emulator", "--port", str(emulator_port), "--token", TOKEN]
    emulator_args += ["--queue-seconds", "0.05", "--words-per-second", "200"]
    config = {
        "upstream": {"base_url": f"http://127.0.0.1:{emulator_port}", "poll_interval": 0.05},
        "models": [{"name": MODEL, "tag": "gemma:2b"}],
        "keys": [{"name": "tools", "key": KEY, "upstream_token": TOKEN}],
        "limits": {"keepalive_interval": 1.0, "default_deadline": 30},
        "ledger": {"url": "sqlite:///:memory:"},
        "logging": {"format": "json", "level": "info"},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    gateway_args = ["serve", "--config", str(path), "--port", str(gateway_port)]
    emulator_log, gateway_log = tmp / "emulator.log", tmp / "gateway.log"
    with (
        running(Server(emulator_args, emulator_port, "/emulator/stats", emulator_log)) as emulator,
        running(Server(gateway_args, gateway_port, "/healthz", gateway_log)) as gateway,
    ):
        yield Servers(gateway.url, emulator.url)


def client(servers: Servers) -> openai.OpenAI:
    return openai.OpenAI(base_url=servers.base_url, api_key=KEY, max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------------------- openai SDK


def test_sdk_tool_call_and_its_streamed_reassembly_agree(servers: Servers) -> None:
    sdk = client(servers)
    whole = sdk.chat.completions.create(model=MODEL, messages=user(SLOW_CALL), tools=[WEATHER_TOOL])
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = call.function.arguments  # type: ignore[union-attr]
    assert json.loads(arguments)["city"] == "Rio de Janeiro"

    with sdk.chat.completions.stream(
        model=MODEL, messages=user(SLOW_CALL), tools=[WEATHER_TOOL]
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert streamed.function.name == "get_weather"
    assert streamed.function.arguments == arguments
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.content == choice.message.content
    fragments = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len(fragments) > 1  # the arguments arrived in pieces, not one chunk at the end


def test_sdk_parse_returns_a_validated_object(servers: Servers) -> None:
    sdk = client(servers)
    parsed = sdk.chat.completions.parse(model=MODEL, messages=user(ADA), response_format=Person)
    assert parsed.choices[0].message.parsed == Person(name="Ada", age=36)

    with sdk.chat.completions.stream(
        model=MODEL, messages=user(ADA), response_format=Person
    ) as stream:
        for _ in stream:
            pass
        assert stream.get_final_completion().choices[0].message.parsed == Person(name="Ada", age=36)


def test_sdk_parse_with_a_pydantic_function_tool(servers: Servers) -> None:
    completion = client(servers).chat.completions.parse(
        model=MODEL,
        messages=user('Who? [[emulate:tool Person {"name": "Ada", "age": 36} style=fenced]]'),
        tools=[openai.pydantic_function_tool(Person)],
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == Person(name="Ada", age=36)


def test_invalid_json_is_asked_for_again_then_answered(servers: Servers) -> None:
    text = 'Who? [[emulate:json {"name": "Bo", "age": 7} invalid_first=1]]'
    raw = client(servers).chat.completions.with_raw_response.create(
        model=MODEL, messages=user(text), response_format={"type": "json_object"}
    )
    assert json.loads(raw.parse().choices[0].message.content or "") == {"name": "Bo", "age": 7}
    job_ids = raw.headers["x-job-id"].split(",")
    prompt = httpx.get(f"{servers.emulator}/emulator/jobs/{job_ids[0]}/timeline").json()["prompt"]
    assert "Answer with one JSON object" in prompt


def test_a_required_call_that_never_comes_is_a_clear_error(servers: Servers) -> None:
    text = 'Paris? [[emulate:tool get_weather {"city": "Paris"} style=invalid]]'
    with pytest.raises(openai.APIStatusError) as caught:
        client(servers).chat.completions.create(
            model=MODEL, messages=user(text), tools=[WEATHER_TOOL], tool_choice="required"
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "tool_call_invalid"


def test_json_that_does_not_fit_the_schema_is_an_error_not_an_answer(servers: Servers) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(servers).chat.completions.parse(
            model=MODEL, messages=user('[[emulate:json {"name": "Ada"}]]'), response_format=Person
        )
    assert caught.value.status_code == 502 and caught.value.code == "invalid_json_output"


def test_tools_and_a_format_together(servers: Servers) -> None:
    sdk = client(servers)
    fmt: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": Person.model_json_schema()},
    }
    called = sdk.chat.completions.create(
        model=MODEL, messages=user(PARIS), tools=[WEATHER_TOOL], response_format=fmt
    )
    assert called.choices[0].finish_reason == "tool_calls"
    answered = sdk.chat.completions.create(
        model=MODEL, messages=user(ADA), tools=[WEATHER_TOOL], response_format=fmt
    )
    assert json.loads(answered.choices[0].message.content or "") == {"name": "Ada", "age": 36}
    assert answered.choices[0].message.tool_calls is None


def test_tool_choice_none_answers_in_text(servers: Servers) -> None:
    completion = client(servers).chat.completions.create(
        model=MODEL,
        messages=user("Hello [[emulate:reply Hi there.]]"),
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert completion.choices[0].message.content == "Hi there."
    assert completion.choices[0].finish_reason == "stop"


# ------------------------------------------------------------------------------- LangChain


def get_weather(city: str) -> str:
    """The weather in a city now."""
    return f"22 C and sunny in {city}"


def _chat_model(servers: Servers) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=servers.base_url, api_key=KEY, max_retries=0)  # type: ignore[arg-type]


def test_langchain_bind_tools_streamed_and_not(servers: Servers) -> None:
    bound = _chat_model(servers).bind_tools([get_weather])
    message = bound.invoke(PARIS)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    chunks = list(bound.stream(SLOW_CALL))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert [(c["name"], c["args"]["city"]) for c in whole.tool_calls] == [
        ("get_weather", "Rio de Janeiro")
    ]
    assert sum(1 for c in chunks if c.tool_call_chunks) > 2
    assert whole.content == "Let me call get_weather to find out."


def test_langchain_structured_output_by_every_method(servers: Servers) -> None:
    model = _chat_model(servers)
    assert model.with_structured_output(Person).invoke(ADA) == Person(name="Ada", age=36)
    json_mode = model.with_structured_output(Person, method="json_mode")
    assert json_mode.invoke(ADA) == Person(name="Ada", age=36)
    by_tool = model.with_structured_output(Person, method="function_calling")
    ask = 'Who? [[emulate:tool Person {"name": "Ada", "age": 36}]]'
    assert by_tool.invoke(ask) == Person(name="Ada", age=36)


def test_langchain_agent_loop_runs_to_a_final_answer(servers: Servers) -> None:
    from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage

    bound = _chat_model(servers).bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage(PARIS)]
    for _ in range(4):
        reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            result = get_weather(**call["args"])
            messages.append(ToolMessage(result, tool_call_id=call["id"]))
    kinds = [type(m).__name__ for m in messages]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert "22 C and sunny in Paris" in str(messages[-1].content)


# ------------------------------------------------------------------------------- LlamaIndex


def _llama(servers: Servers) -> Any:
    from llama_index.llms.openai_like import OpenAILike  # type: ignore[import-untyped]

    return OpenAILike(
        model=MODEL,
        api_base=servers.base_url,
        api_key=KEY,
        is_chat_model=True,
        is_function_calling_model=True,
        context_window=8192,
        max_retries=0,
    )


def test_llamaindex_function_tool_and_structured_predict(servers: Servers) -> None:
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.tools import FunctionTool

    llm = _llama(servers)
    output = llm.predict_and_call([FunctionTool.from_defaults(fn=get_weather)], user_msg=PARIS)
    assert str(output) == "22 C and sunny in Paris"
    person = llm.structured_predict(
        Person, PromptTemplate("Who? {q}"), q='[[emulate:tool Person {"name": "Ada", "age": 36}]]'
    )
    assert person == Person(name="Ada", age=36)


def test_llamaindex_function_agent_streams_a_call_and_finishes(servers: Servers) -> None:
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=get_weather)], llm=_llama(servers))

    async def run() -> Any:
        return await agent.run(PARIS)

    result = asyncio.run(run())
    assert [c.tool_kwargs for c in result.tool_calls] == [{"city": "Paris"}]
    assert "22 C and sunny in Paris" in str(result)
