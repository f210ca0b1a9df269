"""The streaming detector against the whole-answer parser: same answer, whatever the split."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.emulator.directives import ToolCall, render_tool_call
from gateway.engine.tools import ToolCallChunk, ToolSpec, ToolStream, parse_answer
from tests.engine.tools.tools_support import assemble, splits, tool_spec


def run(text: str, spec: ToolSpec, parts: list[str] | None) -> tuple[Any, ...]:
    """Feed ``parts`` (or everything at the end when None); what the client ends up with."""
    stream = ToolStream(spec, streaming=parts is not None)
    pieces = []
    for part in parts if parts is not None else [text]:
        pieces += stream.feed(part)
    end = stream.finish()
    content, calls = assemble([*pieces, *end.pieces])
    return content, calls, end.called, end.problem


# ------------------------------------------------------------------------------- strategies

CITIES = st.sampled_from(["Paris", "Rio de Janeiro", 'Qu"ote', "Zürich", "a\\b", "{}[]"])
CALLS = st.one_of(
    st.builds(lambda c: ("get_weather", {"city": c}), CITIES),
    st.builds(lambda c, u: ("get_weather", {"city": c, "unit": u}), CITIES, st.sampled_from("CF")),
    st.just(("now", {})),
    st.builds(lambda n: ("now", {"n": n, "nested": {"l": [n, None]}}), st.integers(-99, 99)),
)
FORMS = st.sampled_from(["tag", "tag_lines", "fenced", "bare", "openai", "string_args"])
PROSE = st.lists(
    st.sampled_from(
        ["Sure", " ", "\n", "let me check", "{x}", "[1]", "`code`", "<b>", "a < b", "``", "é"]
    ),
    max_size=5,
).map("".join)


def render(name: str, args: dict[str, Any], form: str, compact: bool) -> str:
    seps = (",", ":") if compact else (", ", ": ")
    arguments = json.dumps(args, separators=seps, ensure_ascii=False)
    call = f'{{"name": "{name}", "arguments": {arguments}}}'
    if form == "tag":
        return f"<tool_call>{call}</tool_call>"
    if form == "tag_lines":
        return f"<tool_call>\n{call}\n</tool_call>"
    if form == "fenced":
        return f"```json\n{call}\n```"
    if form == "openai":
        inner = json.dumps({"name": name, "arguments": arguments})
        return f'{{"type": "function", "function": {inner}}}'
    if form == "string_args":
        return f'<tool_call>{{"name": "{name}", "arguments": {json.dumps(arguments)}}}</tool_call>'
    return call


@st.composite
def answers(draw: st.DrawFn) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    calls = draw(st.lists(CALLS, min_size=1, max_size=3))
    compact = draw(st.booleans())
    if draw(st.booleans()) and len(calls) > 1:
        body = "[" + ", ".join(render(n, a, "bare", compact) for n, a in calls) + "]"
        if draw(st.booleans()):
            body = f"<tool_call>{body}</tool_call>"
    else:
        forms = [draw(FORMS) for _ in calls]
        body = "\n".join(render(n, a, f, compact) for (n, a), f in zip(calls, forms, strict=True))
    prose = draw(PROSE)
    before = "" if not prose.strip() else prose + "\n"
    after = draw(st.sampled_from(["", "\n", "\nI will wait for the result.", " {oops"]))
    return before + body + after, calls


# ------------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(answers(), st.lists(st.integers(0, 400), max_size=12), st.booleans())
def test_any_split_reassembles_to_the_non_streamed_call(
    answer: tuple[str, list[tuple[str, dict[str, Any]]]], cuts: list[int], parallel: bool
) -> None:
    text, calls = answer
    spec = tool_spec(parallel=parallel)
    streamed = run(text, spec, splits(text, cuts))
    whole = run(text, spec, None)
    assert streamed == whole
    content, got, called, problem = whole
    expected = calls if parallel else calls[:1]
    assert problem is None and called
    assert [(name, json.loads(args)) for name, args in got] == expected
    parsed = parse_answer(text, spec)
    assert [(c.name, c.arguments) for c in parsed.calls] == got
    assert content == parsed.content


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "Hello",
                " ",
                "\n",
                "{",
                "}",
                "[",
                "]",
                '"name"',
                ":",
                '"get_weather"',
                '"now"',
                ",",
                '"arguments"',
                '{"city": "P"}',
                "<tool_call>",
                "</tool_call>",
                "```",
                "json",
                "<tool",
                "[TOOL_CALLS]",
                "x",
                '"data"',
            ]
        ),
        max_size=25,
    ).map("".join),
    st.lists(st.integers(0, 200), max_size=10),
    st.sampled_from(["auto", "required"]),
)
def test_any_text_streams_to_what_the_whole_text_gives(
    text: str, cuts: list[int], choice: str
) -> None:
    spec = tool_spec(choice)
    streamed = run(text, spec, splits(text, cuts))
    whole = run(text, spec, None)
    if streamed[3] is None:
        assert streamed == whole
    elif whole[3] is None:
        # Only a call already announced and then found invalid may differ: the stream
        # cannot take it back, so it reports the problem where a whole text is sent as text.
        assert choice == "auto" and whole[2] is False


# ------------------------------------------------------------------------------- behaviour


def words(text: str) -> list[str]:
    """The text as the emulator's log grows: one word (and the space before it) at a time."""
    return re.findall(r"\s*\S+", text) + (
        [text[len(text.rstrip()) :]] if text[-1:].isspace() else []
    )


def test_a_call_streams_as_it_arrives_not_in_one_chunk_at_the_end() -> None:
    text = render_tool_call(
        ToolCall("get_weather", {"city": "Rio de Janeiro", "unit": "C"}, "prose")
    )
    stream = ToolStream(tool_spec())
    during: list[list[Any]] = [stream.feed(part) for part in words(text)]
    end = stream.finish()
    flat = [piece for pieces in during for piece in pieces]
    content = [p for p in flat if isinstance(p, str)]
    chunks = [p for p in flat if isinstance(p, ToolCallChunk)]
    assert "".join(content) == "Let me call get_weather to find out."
    assert len(content) > 1  # prose streamed word by word
    assert chunks[0].id is not None and chunks[0].name == "get_weather"
    assert chunks[0].arguments == ""
    assert len(chunks) > 3  # argument fragments as they arrived
    assert all(c.id is None and c.name is None for c in chunks[1:])
    assert end.called and end.problem is None and end.pieces == []
    assert json.loads("".join(c.arguments for c in chunks)) == {
        "city": "Rio de Janeiro",
        "unit": "C",
    }


def test_only_a_possible_marker_is_held_back() -> None:
    stream = ToolStream(tool_spec())
    assert stream.feed("Let me see <to") == ["Let me see"]
    assert stream.feed("day> it is") == [" <today> it is"]
    assert stream.feed(" sunny.\n\n") == [" sunny."]
    assert stream.finish().pieces == []


def test_required_holds_prose_until_a_call_comes() -> None:
    stream = ToolStream(tool_spec("required"))
    assert stream.feed("I think the weather ") == []
    assert not stream.emitted
    pieces = stream.feed('is unknown. {"name": "now"}')
    assert pieces[0] == "I think the weather is unknown."
    assert isinstance(pieces[1], ToolCallChunk) and pieces[1].name == "now"
    assert assemble(pieces) == ("I think the weather is unknown.", [("now", "{}")])
    end = stream.finish()
    assert end.called and end.problem is None and end.pieces == []


def test_required_without_a_call_is_a_problem_and_nothing_was_sent() -> None:
    stream = ToolStream(tool_spec("required"))
    assert stream.feed("It is sunny in Paris.") == []
    end = stream.finish()
    assert end.problem == "the answer holds no tool call" and not end.called
    assert not stream.emitted and end.pieces == []


def test_auto_falls_back_to_text_when_an_unsent_call_is_invalid() -> None:
    stream = ToolStream(tool_spec())
    text = 'Checking.\n<tool_call>{"name": "fly", "arguments": {}}</tool_call>'
    pieces = stream.feed(text)
    assert pieces == ["Checking."]
    end = stream.finish()
    assert end.problem is None and end.note is not None and not end.called
    assert assemble([*pieces, *end.pieces]) == (text, [])


def test_a_sent_call_that_turns_out_invalid_is_a_problem() -> None:
    stream = ToolStream(tool_spec())
    assert stream.feed('<tool_call>{"name": "get_weather", "arguments": {"town"')
    end = stream.finish()
    assert end.problem is not None and stream.emitted


def test_only_the_first_call_streams_without_parallel_calls() -> None:
    stream = ToolStream(tool_spec(parallel=False))
    pieces = stream.feed('{"name": "now"} {"name": "get_weather", "arguments": {"city": "P"}}')
    end = stream.finish()
    assert assemble([*pieces, *end.pieces]) == ("", [("now", "{}")])


def test_arguments_before_the_name_wait_for_it() -> None:
    stream = ToolStream(tool_spec())
    assert stream.feed('{"arguments": {"city": "Oslo"}, ') == []
    pieces = stream.feed('"name": "get_weather"}')
    assert assemble(pieces) == ("", [("get_weather", '{"city": "Oslo"}')])


def test_a_call_inside_ordinary_json_stays_content_however_it_is_split() -> None:
    text = 'Data: {"data": {"name": "now", "arguments": {}}, "more": [1]} done'
    for cut in range(len(text) + 1):
        assert run(text, tool_spec(), [text[:cut], text[cut:]]) == (text, [], False, None)


def test_long_values_stream_the_same_as_short_ones() -> None:
    long = "word " * 1000
    text = f'Note: {{"data": "{long}"}}\n{{"arguments": {{"note": "{long}"}}, "name": "now"}}'
    parts = [text[i : i + 97] for i in range(0, len(text), 97)]
    assert run(text, tool_spec(), parts) == run(text, tool_spec(), None)
    content, calls, called, _ = run(text, tool_spec(), parts)
    assert called and content == f'Note: {{"data": "{long}"}}' and calls[0][0] == "now"
