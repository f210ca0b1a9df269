from __future__ import annotations

import json

import pytest

from gateway.emulator.directives import ToolCall, render_tool_call
from gateway.engine.tools import ParsedCall, parse_answer
from gateway.engine.tools.parsing import scan_answer
from tests.engine.tools.tools_support import WEATHER, tool_spec

PARIS = ParsedCall("get_weather", '{"city": "Paris"}')
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.mark.parametrize(
    ("text", "content"),
    [
        (f"<tool_call>{CALL}</tool_call>", ""),
        (f"<tool_call>\n{CALL}\n</tool_call>", ""),
        (f"<tool_call>{CALL}", ""),  # the closing tag is often forgotten
        (f"<tool_call>\n```json\n{CALL}\n```\n</tool_call>", ""),
        (f"```json\n{CALL}\n```", ""),
        (f"```\n{CALL}\n```", ""),
        (CALL, ""),
        (f"  {CALL}  ", ""),
        (f"Sure! {CALL}", "Sure!"),
        (f"Let me check.\n<tool_call>{CALL}</tool_call>\nI will report back.", "Let me check."),
        (f"[{CALL}]", ""),
        (f'{{"tool_calls": [{CALL}]}}', ""),
        (f"[TOOL_CALLS] [{CALL}]", ""),
        ('{"arguments": {"city": "Paris"}, "name": "get_weather"}', ""),
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}', ""),
        (
            '{"id": "x", "type": "function", "function": {"name": "get_weather", '
            '"arguments": "{\\"city\\": \\"Paris\\"}"}}',
            "",
        ),
    ],
)
def test_tolerated_forms_of_one_call(text: str, content: str) -> None:
    answer = parse_answer(text, tool_spec())
    assert answer.problem is None
    assert answer.calls == (PARIS,)
    assert answer.content == content
    assert answer.called


@pytest.mark.parametrize("style", ["plain", "fenced", "prose"])
def test_every_style_the_emulator_writes_is_understood(style: str) -> None:
    text = render_tool_call(ToolCall("get_weather", {"city": "Paris"}, style))  # type: ignore[arg-type]
    answer = parse_answer(text, tool_spec())
    assert answer.calls == (PARIS,) and answer.problem is None


def test_the_emulators_invalid_style_is_a_problem() -> None:
    text = render_tool_call(ToolCall("get_weather", {"city": "Paris"}, "invalid"))
    answer = parse_answer(text, tool_spec())
    assert answer.calls == () and answer.problem is not None and not answer.called


def test_parallel_calls_in_any_mix_of_forms() -> None:
    now = '{"name": "now", "arguments": {}}'
    for text in (
        f"<tool_call>{CALL}</tool_call>\n<tool_call>{now}</tool_call>",
        f"<tool_call>{CALL}\n{now}</tool_call>",
        f"[{CALL}, {now}]",
        f"```json\n{CALL}\n```\nand\n```json\n{now}\n```",
        f"{CALL} and then {now}",
        f'{{"tool_calls": [{CALL}, {{"type": "function", "function": {now}}}]}}',
    ):
        answer = parse_answer(text, tool_spec())
        assert answer.calls == (PARIS, ParsedCall("now", "{}")), text


def test_without_parallel_calls_only_the_first_is_kept() -> None:
    text = f"<tool_call>{CALL}</tool_call><tool_call>" + '{"name": "now"}</tool_call>'
    assert parse_answer(text, tool_spec(parallel=False)).calls == (PARIS,)


def test_missing_or_null_arguments_are_an_empty_object() -> None:
    for text in ('<tool_call>{"name": "now"}</tool_call>', '{"name": "now", "arguments": null}'):
        assert parse_answer(text, tool_spec()).calls == (ParsedCall("now", "{}"),)


@pytest.mark.parametrize(
    "text",
    [
        "The weather is nice today.",
        'Here is data: {"name": "Alice", "age": 3}.',
        '{"city": "Paris"}',
        "Use `x[0]` and {braces} and [links](http://x) and <b>tags</b>.",
        "```python\nprint({'name': 'get_weather'})\n```",
        '[1, 2, {"name": "get_weather"}]',
        '{"tool_calls": []}',
        '{"data": {"name": "get_weather", "arguments": {}}}',
    ],
)
def test_ordinary_text_and_json_stay_content(text: str) -> None:
    answer = parse_answer(text, tool_spec())
    assert answer.calls == () and answer.problem is None
    assert answer.content == text.strip()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>', "invalid"),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "P"', "incomplete"),
        ("<tool_call>not json</tool_call>", "holds no JSON"),
        ("<tool_call>", "empty"),
        ('<tool_call>{"arguments": {}}</tool_call>', "names no function"),
        ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', "no function named 'fly'"),
        ('<tool_call>{"name": 3}</tool_call>', "not a string"),
        ('<tool_call>{"name": "now", "arguments": [1]}</tool_call>', "not a JSON object"),
        ('<tool_call>{"name": "now", "arguments": "{oops"}</tool_call>', "not valid JSON"),
        ('<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', "'city' is a required"),
        ('{"name": "get_weather", "arguments": {"city": 7}}', "at city: 7 is not of type"),
        (
            '{"name": "get_weather", "arguments": {"city": "P", "unit": "K"}}',
            "at unit: 'K' is not one of",
        ),
        ("<tool_call>[]</tool_call>", "empty"),
    ],
)
def test_invalid_calls_are_problems_not_calls(text: str, problem: str) -> None:
    answer = parse_answer(text, tool_spec())
    assert answer.problem is not None and problem in answer.problem
    assert not answer.called


def test_a_named_tool_choice_rejects_calls_to_other_tools() -> None:
    named = tool_spec({"type": "function", "function": {"name": "now"}})
    answer = parse_answer(f"<tool_call>{CALL}</tool_call>", named)
    assert answer.problem is not None and "requires 'now'" in answer.problem
    assert parse_answer('<tool_call>{"name": "now"}</tool_call>', named).called


def test_a_bare_object_naming_an_unknown_function_is_content() -> None:
    text = '{"name": "fly", "arguments": {}}'
    answer = parse_answer(text, tool_spec())
    assert answer.calls == () and answer.problem is None and answer.content == text


def test_a_tool_without_parameters_takes_any_object() -> None:
    text = '<tool_call>{"name": "now", "arguments": {"tz": "UTC"}}</tool_call>'
    assert parse_answer(text, tool_spec()).calls == (ParsedCall("now", '{"tz": "UTC"}'),)


def test_arguments_keep_the_models_own_json_text() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {\n  "city":"Paris" }}</tool_call>'
    (call,) = parse_answer(text, tool_spec()).calls
    assert call.arguments == '{\n  "city":"Paris" }'
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_partial_scans_hold_back_what_may_start_a_call() -> None:
    names = frozenset({"get_weather", "now"})
    for text, content_end in (
        ("Hello <tool", 6),
        ("Hello ``", 6),
        ("Hello [TOOL", 6),
        ('Hello {"name": "get_w', 6),
        ('Hello {"name": "Alice", "age"', 29),  # not a call: all of it is content
        ("Hello {x} and more", 18),
        ("Hello ```json\n", 6),
    ):
        scan = scan_answer(text, names, final=False)
        assert scan.content_end == content_end, text
        assert scan.call_start is None


def test_a_schema_given_as_a_tool_is_checked_with_its_draft() -> None:
    tools = [{**WEATHER, "function": {**WEATHER["function"], "name": "w"}}]  # type: ignore[dict-item]
    spec = tool_spec(tools=tools)
    assert parse_answer('{"name": "w", "arguments": {"city": "x"}}', spec).called


def test_a_decision_far_into_a_long_value_is_still_found() -> None:
    long = "x" * 5000
    text = f'{{"arguments": {{"note": "{long}"}}, "name": "now"}}'
    assert parse_answer(text, tool_spec()).calls == (ParsedCall("now", f'{{"note": "{long}"}}'),)
    not_a_call = f'{{"arguments": {{"note": "{long}"}}, "name": "fly"}}'
    assert parse_answer(not_a_call, tool_spec()).content == not_a_call
