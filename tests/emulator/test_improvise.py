"""The emulator answers the gateway's own tool and JSON instructions without hints (issue 27)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from gateway.emulator.directives import pseudo_text, reply_for
from gateway.emulator.prose import SENTENCES
from gateway.engine.conversation import ToolCall
from gateway.engine.prompts import PromptMessage, template_for
from gateway.engine.tools.parsing import parse_answer
from gateway.engine.tools.prompting import assistant_text, instructions, with_instructions
from gateway.engine.tools.spec import JsonSpec, OutputSpec, Tool, ToolSpec

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "born": {"type": "string", "format": "date"},
        "fields": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "place": {"$ref": "#/$defs/place"},
        "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "alive": {"type": "boolean"},
    },
    "required": ["name", "born", "fields", "place", "nickname", "score", "alive"],
    "additionalProperties": False,
    "$defs": {
        "place": {
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 2}},
            "required": ["city"],
            "additionalProperties": False,
        }
    },
}


def tool(name: str, description: str, parameters: dict[str, Any]) -> Tool:
    return Tool(name, description, parameters, False, None)


TOOLS = (
    tool("get_time", "The current time in a time zone", {"type": "object", "properties": {}}),
    tool("get_weather", "The weather forecast for a city", WEATHER),
)


def calls_of(reply: str, spec: OutputSpec) -> list[tuple[str, Any]]:
    """The calls the gateway itself reads from ``reply`` (none refused)."""
    assert spec.tools is not None
    parsed = parse_answer(reply, spec.tools)
    assert parsed.problem is None, (parsed.problem, reply)
    return [(c.name, json.loads(c.arguments)) for c in parsed.calls]


def prompt(spec: OutputSpec, messages: list[PromptMessage], template: str = "gemma") -> str:
    return template_for(template).render(with_instructions(messages, instructions(spec)))


ASK = [PromptMessage("user", "What will the weather be in Paris this week?")]


@pytest.mark.parametrize("template", ["gemma", "llama2"])
@pytest.mark.parametrize("choice", ["auto", "required"])
def test_a_tool_call_valid_for_the_schema(template: str, choice: str) -> None:
    spec = OutputSpec(ToolSpec(TOOLS, choice, None, True), None, 1)  # type: ignore[arg-type]
    reply = reply_for(prompt(spec, ASK, template))
    ((name, arguments),) = calls_of(reply, spec)
    assert name == "get_weather", reply  # the one the question is about
    jsonschema.validate(arguments, WEATHER)
    assert arguments["city"] == "Paris"


def test_a_forced_tool_is_the_one_called() -> None:
    spec = OutputSpec(ToolSpec(TOOLS, "required", "get_time", False), None, 1)  # type: ignore[arg-type]
    assert calls_of(reply_for(prompt(spec, ASK)), spec) == [("get_time", {})]


def test_a_question_no_tool_is_about_gets_prose_under_auto() -> None:
    spec = OutputSpec(ToolSpec(TOOLS, "auto", None, True), None, 1)  # type: ignore[arg-type]
    reply = reply_for(prompt(spec, [PromptMessage("user", "Tell me a story about owls.")]))
    assert "<tool_call>" not in reply and reply.endswith(".")


def test_after_the_result_the_answer_is_prose_from_it() -> None:
    spec = OutputSpec(ToolSpec(TOOLS, "auto", None, True), None, 1)  # type: ignore[arg-type]
    call = ToolCall("call_1", "get_weather", '{"city": "Paris", "unit": "celsius", "days": 1}')
    history = [
        *ASK,
        PromptMessage("assistant", assistant_text("", [call])),
        PromptMessage("tool", '{"forecast": "sunny, 21 degrees"}'),
    ]
    reply = reply_for(prompt(spec, history))
    assert "<tool_call>" not in reply
    assert reply.startswith("Here is what get_weather returned:") and "sunny, 21 degrees" in reply


def test_structured_output_matches_its_schema() -> None:
    spec = OutputSpec(None, JsonSpec("json_schema", "person", None, PERSON, True), 1)
    ask = [PromptMessage("user", "Describe the physicist Marie Curie.")]
    value = json.loads(reply_for(prompt(spec, ask)))
    jsonschema.validate(value, PERSON)
    assert value["name"] == "Marie Curie"


def test_json_mode_is_one_object_of_sentences() -> None:
    spec = OutputSpec(None, JsonSpec("json_object"), 1)
    value = json.loads(reply_for(prompt(spec, ASK)))
    assert isinstance(value, dict) and value
    assert all(isinstance(v, str) and v.endswith(".") for v in value.values())


def test_hints_still_win_and_plain_prompts_get_sentences() -> None:
    spec = OutputSpec(None, JsonSpec("json_object"), 1)
    hinted = [PromptMessage("user", '[[emulate:json {"a": 1}]]')]
    assert json.loads(reply_for(prompt(spec, hinted))) == {"a": 1}
    text = reply_for("Hello there")
    first = text.split(". ")[0] + "."
    assert first in SENTENCES  # whole sentences from the built-in source, not random words
    assert len(pseudo_text("seed", 40).split()) == 40
