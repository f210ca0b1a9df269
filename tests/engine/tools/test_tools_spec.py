from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.tools import output_spec
from gateway.errors import BadRequest
from tests.engine.tools.tools_support import NOW, WEATHER, request, spec


def test_no_tools_and_no_format_need_no_shaping() -> None:
    assert output_spec(request(), 2) is None
    assert output_spec(request(response_format={"type": "text"}), 2) is None


def test_tool_choice_none_offers_no_tools() -> None:
    assert output_spec(request(tools=[WEATHER], tool_choice="none"), 2) is None
    found = spec(tools=[WEATHER], tool_choice="none", response_format={"type": "json_object"})
    assert found.tools is None and found.json is not None


@pytest.mark.parametrize(
    ("choice", "mode", "forced", "must"),
    [
        (None, "auto", None, False),
        ("auto", "auto", None, False),
        ("required", "required", None, True),
        ({"type": "function", "function": {"name": "now"}}, "auto", "now", True),
    ],
)
def test_tool_choice_modes(choice: Any, mode: str, forced: str | None, must: bool) -> None:
    tools = spec(tools=[WEATHER, NOW], tool_choice=choice).tools
    assert tools is not None
    assert (tools.choice, tools.forced, tools.must_call) == (mode, forced, must)
    assert tools.names == {"get_weather", "now"}
    assert tools.parallel


def test_parallel_tool_calls_false_is_kept() -> None:
    tools = spec(tools=[WEATHER], parallel_tool_calls=False).tools
    assert tools is not None and not tools.parallel


def test_the_retry_budget_is_never_negative() -> None:
    assert spec(retries=-1, tools=[WEATHER]).retries == 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools[0].function.parameters",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nope"}},
                }
            },
            "response_format.json_schema.schema",
        ),
    ],
)
def test_requests_that_cannot_work_are_refused_before_anything_is_sent(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        output_spec(request(**fields), 2)
    assert caught.value.param == param


def test_a_json_schema_is_compiled_with_its_declared_draft() -> None:
    found = spec(
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "p",
                "strict": True,
                "schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
            },
        }
    ).json
    assert found is not None and found.strict and found.validator is not None
    assert found.validator.draft == "Draft7Validator"
    assert found.opener == "{"
