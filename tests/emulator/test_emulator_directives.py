"""Directive parsing and reply texts: pure functions of the prompt."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.emulator.directives import (
    DEFAULT_WORDS,
    Directives,
    JsonReply,
    ToolCall,
    compose_reply,
    parse_directives,
    pseudo_text,
    render_json,
    render_tool_call,
    reply_for,
)

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


def test_no_directive_gives_defaults() -> None:
    assert parse_directives("Tell me about rivers [[not a directive]]") == Directives()


def test_default_reply_is_deterministic_readable_and_prompt_dependent() -> None:
    reply = reply_for("hello")
    assert reply == reply_for("hello")
    assert reply != reply_for("hello!")
    assert len(reply.split()) == DEFAULT_WORDS
    assert reply[0].isupper() and reply.endswith(".")
    assert len(reply_for("hello", default_words=5).split()) == 5
    assert reply_for("hello", default_words=0) == ""


def test_pseudo_text_word_count() -> None:
    for count in (1, 2, 13, 100):
        assert len(pseudo_text("seed", count).split()) == count


def test_words_directive() -> None:
    prompt = "User: hi [[emulate:words 7]]\nAssistant:"
    assert parse_directives(prompt).words == 7
    assert reply_for(prompt) == pseudo_text(prompt, 7)


def test_reply_keeps_spaces_and_newlines_up_to_closing_brackets() -> None:
    prompt = "x [[emulate:reply Hello,  world!\nSecond line ]] y"
    assert reply_for(prompt) == "Hello,  world!\nSecond line "
    assert reply_for("[[emulate:reply]]") == ""


def test_last_directive_of_a_name_wins() -> None:
    prompt = "[[emulate:wps 5]] [[emulate:queue 2]] [[emulate:wps 7.5]] [[emulate:status done]]"
    directives = parse_directives(prompt)
    assert directives.wps == 7.5
    assert directives.queue == 2.0
    assert directives.status == "done"


def test_last_content_directive_wins() -> None:
    assert reply_for("[[emulate:reply first]] [[emulate:words 3]]") == pseudo_text(
        "[[emulate:reply first]] [[emulate:words 3]]", 3
    )
    assert reply_for("[[emulate:words 3]] [[emulate:reply last]]") == "last"
    assert reply_for('[[emulate:reply x]] [[emulate:json {"a": 1}]]') == '{"a": 1}'


def test_flags_and_fail_message() -> None:
    directives = parse_directives(
        "[[emulate:hang]][[emulate:rewrite]][[emulate:shrink]][[emulate:ansi]][[emulate:vanish]]"
        "[[emulate:fail out of memory ]]"
    )
    assert directives.hang and directives.rewrite and directives.shrink
    assert directives.ansi and directives.vanish
    assert directives.fail == "out of memory"
    assert parse_directives("[[emulate:fail]]").fail == ""


@pytest.mark.parametrize(
    "prompt",
    [
        "[[emulate:words many]]",
        "[[emulate:words -1]]",
        "[[emulate:wps 0]]",
        "[[emulate:wps nan]]",
        "[[emulate:queue -1]]",
        "[[emulate:queue inf]]",
        "[[emulate:status]]",
        "[[emulate:unknown 3]]",
        "[[emulate:words 3",
        "[[emulate:wordsx]]",
        "[[emulate:tool f {bad json]]",
        "[[emulate:tool]]",
        "[[emulate:json]]",
        "[[emulate:json {} style=weird]]",
        '[[emulate:json {"a": 1} invalid_first=x]]',
    ],
)
def test_malformed_directives_are_plain_text(prompt: str) -> None:
    assert parse_directives(prompt) == Directives()


def test_malformed_directive_does_not_hide_an_earlier_valid_one() -> None:
    assert parse_directives("[[emulate:words 4]] [[emulate:words x]]").words == 4


def test_tool_call_canonical_format() -> None:
    prompt = 'User: weather? [[emulate:tool get_weather {"city": "Paris"}]]\nAssistant:'
    reply = reply_for(prompt)
    match = TOOL_CALL.fullmatch(reply)
    assert match is not None
    assert json.loads(match.group(1)) == {"name": "get_weather", "arguments": {"city": "Paris"}}


def test_tool_arguments_may_contain_closing_brackets_and_default_to_empty() -> None:
    directives = parse_directives('[[emulate:tool f {"m": [[1, 2]], "s": "]]"}]]')
    assert directives.tools == (ToolCall("f", {"m": [[1, 2]], "s": "]]"}),)
    assert parse_directives("[[emulate:tool now]]").tools == (ToolCall("now", {}),)
    assert parse_directives("[[emulate:tool now style=prose]]").tools == (
        ToolCall("now", {}, "prose"),
    )


def test_adjacent_tool_directives_are_parallel_calls() -> None:
    prompt = '[[emulate:tool a {}]]\n  [[emulate:tool b {"x": 1}]] [[emulate:tool c]]'
    reply = reply_for(prompt)
    calls = [json.loads(body) for body in TOOL_CALL.findall(reply)]
    assert [call["name"] for call in calls] == ["a", "b", "c"]
    assert calls[1]["arguments"] == {"x": 1}


def test_tool_directives_separated_by_text_are_not_grouped() -> None:
    directives = parse_directives("[[emulate:tool a]] then [[emulate:tool b]]")
    assert [call.name for call in directives.tools] == ["b"]


def test_tool_styles() -> None:
    fenced = render_tool_call(ToolCall("f", {"q": 1}, "fenced"))
    body = re.fullmatch(r"```json\n(.*)\n```", fenced, re.S)
    assert body is not None
    assert json.loads(body.group(1)) == {"name": "f", "arguments": {"q": 1}}

    prose = render_tool_call(ToolCall("f", {"q": 1}, "prose"))
    match = TOOL_CALL.search(prose)
    assert match is not None and json.loads(match.group(1))["name"] == "f"
    assert prose.index("<tool_call>") > 0 and not prose.endswith("</tool_call>")

    invalid = render_tool_call(ToolCall("f", {"q": 1}, "invalid"))
    match = TOOL_CALL.fullmatch(invalid)
    assert match is not None
    with pytest.raises(json.JSONDecodeError):
        json.loads(match.group(1))


def test_tool_answered_in_history_replies_in_prose() -> None:
    prompt = (
        'User: weather? [[emulate:tool get_weather {"city": "Paris"}]]\n'
        'Assistant: <tool_call>{"name": "get_weather"}</tool_call>\n'
        "Tool (get_weather): 22 C and sunny\nAssistant:"
    )
    directives = parse_directives(prompt)
    assert directives.tool_results == (("get_weather", "): 22 C and sunny\nAssistant:"),)
    assert reply_for(prompt) == "The result of get_weather is: ): 22 C and sunny\nAssistant:"


def test_tool_result_is_the_last_200_characters() -> None:
    prompt = "[[emulate:tool f]] f " + "x" * 300 + "END"
    result = reply_for(prompt).removeprefix("The result of f is: ")
    assert len(result) == 200 and result.endswith("END")


def test_tool_name_before_the_directive_does_not_count_as_answered() -> None:
    prompt = "Tools: get_weather(city)\nUser: [[emulate:tool get_weather {}]]\nAssistant:"
    assert TOOL_CALL.fullmatch(reply_for(prompt)) is not None


def test_json_directive_and_styles() -> None:
    prompt = '[[emulate:json {"a": [1, 2]} style=fenced invalid_first=2]]'
    directives = parse_directives(prompt)
    assert directives.json == JsonReply({"a": [1, 2]}, "fenced", 2, prompt)
    fenced = reply_for(prompt)
    body = re.fullmatch(r"```json\n(.*)\n```", fenced, re.S)
    assert body is not None and json.loads(body.group(1)) == {"a": [1, 2]}
    assert json.loads(reply_for('[[emulate:json {"a": 1}]]')) == {"a": 1}
    prose = reply_for('[[emulate:json {"a": 1} style=prose]]')
    assert '{"a": 1}' in prose and not prose.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply_for('[[emulate:json {"a": 1} style=invalid]]'))


def test_broken_json_keeps_its_style() -> None:
    directives = parse_directives('[[emulate:json {"a": 1} style=fenced invalid_first=1]]')
    broken = compose_reply("", directives, 24, broken_json=True)
    body = re.fullmatch(r"```json\n(.*)\n```", broken, re.S)
    assert body is not None
    with pytest.raises(json.JSONDecodeError):
        json.loads(body.group(1))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(json_values)
def test_broken_json_never_parses(value: object) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(render_json(value, "plain", broken=True))


@given(st.text(max_size=200))
def test_any_prompt_parses_and_replies(prompt: str) -> None:
    parse_directives(prompt)
    assert isinstance(reply_for(prompt), str)
