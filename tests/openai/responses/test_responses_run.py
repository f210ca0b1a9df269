"""ResponseRun: engine events -> Responses stream events and object, checked against the spec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway.engine.events import ChoiceEnd, KeepAlive, TextDelta, ToolCallDelta
from gateway.engine.tools import ToolCallChunk
from gateway.errors import UpstreamError
from gateway.openai.responses import run as run_module
from gateway.openai.responses.render import response_object
from gateway.openai.responses.run import ResponseRun, replay
from gateway.openai.responses.translate import translate
from gateway.openai.responses.wire import CreateResponse
from tests.openai_spec import check, check_event

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def _run(**fields: Any) -> ResponseRun:
    request = CreateResponse.model_validate({"model": "gemma-2b", "input": "hi", **fields})
    translated = translate(request, [], [{"role": "user", "content": "hi"}], {})
    return ResponseRun(response_object(request, translated, "gemma-2b"), translated.namespaces)


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def _all_valid(events: list[dict[str, Any]]) -> None:
    for event in events:
        check_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_text_streams_as_openai_sequence() -> None:
    run = _run()
    events = run.opening()
    events += run.feed(TextDelta(0, "Hello "))
    events += run.feed(KeepAlive())
    events += run.feed(TextDelta(0, "world"))
    events += run.feed(ChoiceEnd(0, "stop"))
    events += run.finish(3, 2)
    assert _types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    _all_valid(events)
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello world"
    assert final["usage"]["total_tokens"] == 5
    check("Response", run.snapshot())


def test_tool_call_arguments_stream_piece_by_piece() -> None:
    run = _run(tools=[WEATHER])
    events = run.opening()
    events += run.feed(TextDelta(0, "Let me look."))
    events += run.feed(ToolCallDelta(0, ToolCallChunk(0, "call_1", "get_weather", '{"ci')))
    events += run.feed(ToolCallDelta(0, ToolCallChunk(0, None, None, 'ty": "Paris"}')))
    events += run.feed(ToolCallDelta(0, ToolCallChunk(1, "call_2", "get_weather", "{}")))
    events += run.feed(ChoiceEnd(0, "tool_calls"))
    events += run.finish(3, 9)
    _all_valid(events)
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"ci', 'ty": "Paris"}', "{}"]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [e["arguments"] for e in done] == ['{"city": "Paris"}', "{}"]
    output = run.snapshot()["output"]
    assert [i["type"] for i in output] == ["message", "function_call", "function_call"]
    assert output[1]["call_id"] == "call_1" and output[1]["status"] == "completed"
    check("Response", run.snapshot())


def test_length_cut_is_incomplete_and_failure_is_failed() -> None:
    run = _run(max_output_tokens=2)
    events = run.opening() + run.feed(TextDelta(0, "one two")) + run.feed(ChoiceEnd(0, "length"))
    events += run.finish(3, 2)
    _all_valid(events)
    assert events[-1]["type"] == "response.incomplete"
    assert run.snapshot()["incomplete_details"] == {"reason": "max_output_tokens"}

    failing = _run()
    events = failing.opening() + failing.feed(TextDelta(0, "part"))
    events += failing.fail(UpstreamError("The upstream job failed."), 3, 1)
    _all_valid(events)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {
        "code": "server_error",
        "message": "The upstream job failed.",
    }


def test_a_restored_run_skips_what_it_already_sent() -> None:
    run = _run(background=True)
    events = run.opening() + run.feed(TextDelta(0, "Hello "))
    stored, seq = run.snapshot(), run.seq
    again = ResponseRun.restore(stored, seq)
    more = again.feed(TextDelta(0, "Hello wor")) + again.feed(TextDelta(0, "ld"))
    more += again.feed(ChoiceEnd(0, "stop")) + again.finish(1, 2)
    _all_valid(events + more)
    deltas = [e["delta"] for e in events + more if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hello ", "wor", "ld"]
    assert again.snapshot()["output"][0]["id"] == stored["output"][0]["id"]


def test_replay_derives_the_stream_of_a_stored_response() -> None:
    run = _run(tools=[WEATHER])
    run.feed(TextDelta(0, "Sure."))
    run.feed(ToolCallDelta(0, ToolCallChunk(0, "call_1", "get_weather", '{"city": "Rome"}')))
    run.feed(ChoiceEnd(0, "tool_calls"))
    run.finish(1, 1)
    events = replay(run.snapshot())
    _all_valid(events)
    assert events[-1]["response"] == run.snapshot()
    added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [i["id"] for i in run.snapshot()["output"]]


PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files."}


def test_a_custom_call_is_a_custom_tool_call_item_with_its_input_whole() -> None:
    run = _run(tools=[PATCH])
    events = run.opening()
    events += run.feed(ToolCallDelta(0, ToolCallChunk(0, "call_1", "apply_patch", '{"inp')))
    events += run.feed(ToolCallDelta(0, ToolCallChunk(0, None, None, 'ut": "*** Begin"}')))
    events += run.feed(ChoiceEnd(0, "tool_calls")) + run.finish(1, 1)
    _all_valid(events)
    assert _types(events)[2:] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    item = run.snapshot()["output"][0]
    assert item["type"] == "custom_tool_call" and item["input"] == "*** Begin"
    assert item["id"].startswith("ctc_") and item["status"] == "completed"
    check("Response", run.snapshot())

    # Replayed from the store, and restored mid-call after a restart: the same item.
    replayed = replay(run.snapshot())
    _all_valid(replayed)
    assert replayed[-1]["response"] == run.snapshot()
    early = _run(background=True, tools=[PATCH])
    sent = early.opening() + early.feed(
        ToolCallDelta(0, ToolCallChunk(0, "call_1", "apply_patch", '{"in'))
    )
    again = ResponseRun.restore(early.snapshot(), early.seq)
    more = again.feed(ToolCallDelta(0, ToolCallChunk(0, "call_1", "apply_patch", '{"in')))
    more += again.feed(ToolCallDelta(0, ToolCallChunk(0, None, None, 'put": "x"}')))
    more += again.feed(ChoiceEnd(0, "tool_calls")) + again.finish(1, 1)
    _all_valid(sent + more)
    assert [e["type"] for e in more].count("response.output_item.added") == 0
    assert again.snapshot()["output"][0]["input"] == "x"


def test_the_ended_object_is_the_terminal_events_and_copied_once() -> None:
    """What a finished run answers and stores is the object its terminal event carries (one
    copy of it, not one per use), and it no longer follows the run."""
    run = _run()
    assert run.ended is None
    run.feed(TextDelta(0, "Hello"))
    run.feed(ChoiceEnd(0, "stop"))
    events = run.finish(3, 1)
    assert run.ended is events[-1]["response"]
    assert run.ended == run.snapshot() and run.ended is not run.obj
    check("Response", run.ended)
    failed = _run()
    events = failed.fail(UpstreamError("boom"), 3, 0)
    assert failed.ended is events[-1]["response"] and failed.ended["status"] == "failed"


def _same_but_ids(a: dict[str, Any], b: dict[str, Any]) -> None:
    def bare(obj: dict[str, Any]) -> dict[str, Any]:
        output = [{k: v for k, v in item.items() if k != "id"} for item in obj["output"]]
        return {**obj, "id": None, "output": output, "created_at": 0, "completed_at": 0}

    assert bare(a) == bare(b)


def test_a_quiet_run_ends_with_the_same_object_and_copies_nothing() -> None:
    """A response answered whole sends no events: its run builds them without copies, and
    the object it ends with is its own (nothing reads the run after it ends)."""
    events = [
        TextDelta(0, "Let me look."),
        ToolCallDelta(0, ToolCallChunk(0, "call_1", "get_weather", '{"city"')),
        ToolCallDelta(0, ToolCallChunk(0, None, None, ': "Paris"}')),
        ToolCallDelta(0, ToolCallChunk(1, "call_2", "apply_patch", '{"input": "*** x"}')),
        ChoiceEnd(0, "tool_calls"),
    ]
    loud, quiet = _run(tools=[WEATHER, PATCH]), _run(tools=[WEATHER, PATCH])
    quiet = ResponseRun(quiet.obj, quiet._namespaces, quiet=True)
    for event in events:
        loud.feed(event)
        quiet.feed(event)
    loud.finish(5, 7)
    quiet.finish(5, 7)
    assert quiet.ended is quiet.obj and loud.ended is not loud.obj
    _same_but_ids(quiet.ended, loud.ended)
    assert [i["type"] for i in quiet.ended["output"]] == [
        "message",
        "function_call",
        "custom_tool_call",
    ]
    assert not any(k.startswith("_") for i in quiet.ended["output"] for k in i)
    check("Response", quiet.ended)

    # A key the run keeps for itself is never answered: then the ended object is a copy.
    held = _run()
    held = ResponseRun(held.obj, quiet=True)
    held.feed(TextDelta(0, "Hi"))
    held.obj["output"][0]["_note"] = 0  # any private key left on an item
    held.finish(1, 1)
    assert held.ended is not held.obj and "_note" not in held.ended["output"][0]


def test_every_private_key_the_run_sets_on_its_object_is_one_it_checks() -> None:
    """A quiet run answers with its own object unless a private key is left on it; for the
    object itself the check looks only for the keys the run names, so a new one must be
    named there too (items are scanned whole)."""
    source = Path(run_module.__file__).read_text()
    on_object = set(re.findall(r'self\.obj\[\s*"(_[a-z_]+)"\s*\]\s*=', source))
    assert on_object == {"_reason"}
    assert on_object <= set(run_module._OBJECT_PRIVATE)
    held = _run()
    held = ResponseRun(held.obj, quiet=True)
    held.feed(TextDelta(0, "Hi"))
    held.obj["_reason"] = "stop"
    held.obj["_other"] = 1  # not the run's: a copy drops it all the same
    ended = held._end()
    assert ended is not held.obj and "_reason" not in ended and "_other" not in ended
