"""One response as it is generated: the engine's events -> Responses stream events and object.

A :class:`ResponseRun` holds the response object (its output items so far) and the next
``sequence_number``. :meth:`feed` turns an engine event into the Responses events it means
(a message item opens at the first text, a ``function_call`` item at the first piece of a
call, arguments stream as they come; a custom tool's ``custom_tool_call`` item opens likewise
and its ``input``, the text inside the call's JSON, is sent whole when the call ends);
:meth:`finish` / :meth:`fail` close the open item and
add the terminal event. Streamed, non-streamed and background responses all go through it,
so the object a client retrieves is the one the stream described.

A run restored from a stored object (:meth:`restore`) after a restart is fed the job's events
again from the start; what the stored object already holds is skipped, so the stream resumes
where it stopped with the same item ids and sequence numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from gateway.engine.events import ChoiceEnd, ChoiceReset, Event, KeepAlive, TextDelta, ToolCallDelta
from gateway.engine.tools import ToolCallChunk
from gateway.errors import GatewayError
from gateway.ids import sortable_hex
from gateway.openai.codec import custom

#: Output items that are calls of the client's tools.
_CALLS = frozenset({"function_call", "custom_tool_call"})

StreamEvent = dict[str, Any]

TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})


def new_id(prefix: str) -> str:
    """48 hex digits after the prefix, in time order: responses and items are stored, and
    their ids are index keys (:mod:`gateway.ids`)."""
    return f"{prefix}_{sortable_hex(48)}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_object(error: GatewayError) -> dict[str, str]:
    """A failure as the ``response.error`` the spec allows (its codes are a closed list)."""
    code = "rate_limit_exceeded" if error.status_code == 429 else "server_error"
    return {"code": code, "message": error.message}


def _text_part(text: str = "") -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponseRun:
    """The response object and its stream, built from one choice's events."""

    __slots__ = (
        "_call_item",
        "_custom",
        "_ids",
        "_message",
        "_namespaces",
        "_quiet",
        "_seen_calls",
        "_skip",
        "ended",
        "obj",
        "seq",
    )

    def __init__(
        self,
        obj: dict[str, Any],
        namespaces: Mapping[str, str] | None = None,
        ids: list[str] | None = None,
        *,
        quiet: bool = False,
    ) -> None:
        self.obj = obj
        #: Nobody reads the events (a response answered whole): they carry no copies, and the
        #: ended object is ``obj`` itself.
        self._quiet = quiet
        self.seq = 0
        self._ids = ids or []  # item ids to use before making new ones (replaying a stored run)
        self._namespaces = dict(namespaces or {})
        self._custom = custom_names(obj.get("tools") or [])
        self._message: dict[str, Any] | None = None  # the open message item
        self._call_item: dict[int, dict[str, Any]] = {}  # engine call index -> its item
        self._seen_calls = 0  # calls the engine has started
        # Restored runs: how much of the engine's text / each call's arguments to skip.
        self._skip: list[int] = [0]
        #: The object as the terminal event sent it (finish or fail): the one to answer and
        #: store, not copied again (nothing changes a run once it has ended).
        self.ended: dict[str, Any] | None = None

    # ------------------------------------------------------------------ building blocks

    @property
    def output(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.obj["output"]
        return items

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def status(self) -> str:
        return str(self.obj["status"])

    def _new_id(self, prefix: str) -> str:
        return self._ids.pop(0) if self._ids else new_id(prefix)

    def _event(self, kind: str, **fields: Any) -> StreamEvent:
        event = {"type": kind, **fields, "sequence_number": self.seq}
        self.seq += 1
        return event

    def snapshot(self) -> dict[str, Any]:
        """The object now, safe to store or send (a copy)."""
        copied: dict[str, Any] = _copy(self.obj)
        return copied

    def _shown(self, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` as an event carries it: a copy, unless no event is read (quiet)."""
        return value if self._quiet else _copy(value)

    def _end(self) -> dict[str, Any]:
        """The ended object: a copy, unless quiet (the run is read no more) and it holds no
        private key."""
        obj = self.obj
        if self._quiet and not (
            any(k in obj for k in _OBJECT_PRIVATE) or any(_private(i) for i in self.output)
        ):
            return obj
        return self.snapshot()

    # ------------------------------------------------------------------ lifecycle

    def opening(self) -> list[StreamEvent]:
        """``response.created`` and, unless queued, ``response.in_progress``."""
        events = [self._event("response.created", response=self.snapshot())]
        if self.status == "queued":
            events.append(self._event("response.queued", response=self.snapshot()))
        else:
            events.append(self._event("response.in_progress", response=self.snapshot()))
        return events

    def start(self) -> list[StreamEvent]:
        """A queued (background) response whose job began: ``response.in_progress``."""
        if self.status != "queued":
            return []
        self.obj["status"] = "in_progress"
        return [self._event("response.in_progress", response=self.snapshot())]

    def feed(self, event: Event) -> list[StreamEvent]:
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, ToolCallDelta):
            return self._call(event)
        if isinstance(event, ChoiceEnd):
            self.obj["_reason"] = event.reason
            return self._close_all()
        if isinstance(event, ChoiceReset):  # non-streamed only: the final log replaces it all
            self.obj["output"] = []
            self._message = None
            self._call_item.clear()
            self._seen_calls = 0
            return []
        assert isinstance(event, KeepAlive)
        return []

    def finish(self, prompt_tokens: int, completion_tokens: int) -> list[StreamEvent]:
        """Every choice ended: close what is open, then the terminal event."""
        events = self._close_all()
        reason = self.obj.pop("_reason", "stop")
        self.obj["usage"] = usage(prompt_tokens, completion_tokens)
        if reason == "length":
            self.obj["status"] = "incomplete"
            self.obj["incomplete_details"] = {"reason": "max_output_tokens"}
            kind = "response.incomplete"
        else:
            self.obj["status"] = "completed"
            self.obj["completed_at"] = int(time.time())
            kind = "response.completed"
        self.ended = self._end()
        events.append(self._event(kind, response=self.ended))
        return events

    def fail(
        self, error: GatewayError, prompt_tokens: int, completion_tokens: int
    ) -> list[StreamEvent]:
        events = self._close_all(status="incomplete")
        self.obj.pop("_reason", None)
        self.obj["status"] = "failed"
        self.obj["error"] = error_object(error)
        self.obj["usage"] = usage(prompt_tokens, completion_tokens)
        self.ended = self._end()
        events.append(self._event("response.failed", response=self.ended))
        return events

    def cancel(self) -> None:
        self.ended = None
        self._close_all(status="incomplete")
        self.obj.pop("_reason", None)
        self.obj["status"] = "cancelled"

    # ------------------------------------------------------------------ items

    def _text(self, text: str) -> list[StreamEvent]:
        if self._skip[0]:
            dropped = min(self._skip[0], len(text))
            self._skip[0] -= dropped
            text = text[dropped:]
        if not text:
            return []
        events: list[StreamEvent] = []
        message = self._message
        if message is None:
            events.extend(self._close_calls())
            message = self._message = {
                "id": self._new_id("msg"),
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }
            index = len(self.output)
            self.output.append(message)
            events.append(
                self._event(
                    "response.output_item.added", output_index=index, item=self._shown(message)
                )
            )
            message["content"].append(_text_part())
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=message["id"],
                    output_index=index,
                    content_index=0,
                    part=_text_part(),
                )
            )
        part = message["content"][0]
        part["text"] += text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=message["id"],
                output_index=self.output.index(message),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call(self, event: ToolCallDelta) -> list[StreamEvent]:
        piece = event.call
        events: list[StreamEvent] = []
        if piece.id is not None:  # a new call
            number = self._seen_calls
            self._seen_calls += 1
            restored = self._restored_call(number)
            if restored is not None:
                self._call_item[piece.index] = restored
            else:
                events.extend(self._close_message())
                item = self._call_opened(piece.id, piece.name or "")
                namespace = self._namespaces.get(piece.name or "")
                if namespace:
                    item["namespace"] = namespace
                self._call_item[piece.index] = item
                self.output.append(item)
                events.append(
                    self._event(
                        "response.output_item.added",
                        output_index=len(self.output) - 1,
                        item=self._shown(item),
                    )
                )
        item = self._call_item[piece.index]
        arguments = piece.arguments
        if item["type"] == "custom_tool_call":  # its input is known once the JSON is whole
            if item["status"] == "in_progress":
                item["_arguments"] = item.get("_arguments", "") + arguments
            return events
        skip = item.pop("_skip", 0)
        if skip:
            item["_skip"] = max(0, skip - len(arguments))
            arguments = arguments[skip:]
            if not item["_skip"]:
                item.pop("_skip")
        if arguments:
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.output.index(item),
                    delta=arguments,
                )
            )
        return events

    def _call_opened(self, call_id: str, name: str) -> dict[str, Any]:
        if name in self._custom:
            return {
                "id": self._new_id("ctc"),
                "type": "custom_tool_call",
                "status": "in_progress",
                "call_id": call_id,
                "name": name,
                "input": "",
            }
        return {
            "id": self._new_id("fc"),
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call_id,
            "name": name,
        }

    def _restored_call(self, number: int) -> dict[str, Any] | None:
        calls = [i for i in self.output if i.get("type") in _CALLS]
        if number >= len(calls):
            return None
        item = calls[number]
        if item["type"] == "custom_tool_call":  # nothing of an open one was sent: collect anew
            return item
        if item.get("status") == "in_progress":
            item["_skip"] = len(item["arguments"])
        else:
            item["_skip"] = 1 << 60  # finished before the restart: nothing of it is new
        return item

    def _close_message(self, status: str = "completed") -> list[StreamEvent]:
        message, self._message = self._message, None
        if message is None:
            return []
        index = self.output.index(message)
        part = message["content"][0]
        message["status"] = status
        return [
            self._event(
                "response.output_text.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            ),
            self._event(
                "response.content_part.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                part=self._shown(part),
            ),
            self._event("response.output_item.done", output_index=index, item=self._shown(message)),
        ]

    def _close_calls(self, status: str = "completed") -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for item in self.output:
            if item.get("type") not in _CALLS or item.get("status") != "in_progress":
                continue
            if "_skip" in item:  # restored, its job has not reached it again yet
                continue
            item["status"] = status
            index = self.output.index(item)
            if item["type"] == "custom_tool_call":
                events.extend(self._custom_input(item, index))
                continue
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    name=item["name"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
            events.append(
                self._event("response.output_item.done", output_index=index, item=self._shown(item))
            )
        return events

    def _custom_input(self, item: dict[str, Any], index: int) -> list[StreamEvent]:
        """A custom call's whole input: one delta, its done event, the item done."""
        item["input"] = custom(item["name"], item.pop("_arguments", None) or "")["input"]
        events = []
        if item["input"]:
            events.append(
                self._event(
                    "response.custom_tool_call_input.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=item["input"],
                )
            )
        events.append(
            self._event(
                "response.custom_tool_call_input.done",
                item_id=item["id"],
                output_index=index,
                input=item["input"],
            )
        )
        events.append(
            self._event("response.output_item.done", output_index=index, item=self._shown(item))
        )
        return events

    def _close_all(self, status: str = "completed") -> list[StreamEvent]:
        events = self._close_message(status)
        for item in self.output:
            item.pop("_skip", None)
        return events + self._close_calls(status)

    # ------------------------------------------------------------------ restarts

    @classmethod
    def restore(
        cls, obj: dict[str, Any], seq: int, namespaces: Mapping[str, str] | None = None
    ) -> ResponseRun:
        """A run continuing ``obj`` (stored at sequence number ``seq``) after a restart."""
        run = cls(obj, namespaces)
        run.seq = seq
        messages = [i for i in run.output if i.get("type") == "message"]
        run._skip = [sum(len(m["content"][0]["text"]) for m in messages if m["content"])]
        open_messages = [m for m in messages if m.get("status") == "in_progress"]
        run._message = open_messages[-1] if open_messages else None
        return run


def replay(obj: dict[str, Any]) -> list[StreamEvent]:
    """The stream events a stored (finished) response would have been sent with."""
    output = obj.get("output") or []
    start = {
        **obj,
        "output": [],
        "status": "in_progress",
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    start.pop("usage", None)
    run = ResponseRun(start, ids=[str(item.get("id")) for item in output])
    events = run.opening()
    calls = 0
    for item in output:
        if item.get("type") == "message":
            text = "".join(p.get("text", "") for p in item.get("content") or [])
            events.extend(run.feed(TextDelta(0, text)) if text else [])
        elif item.get("type") in _CALLS:
            arguments = item.get("arguments", "")
            if item["type"] == "custom_tool_call":
                arguments = json.dumps({"input": item.get("input", "")})
            chunk = ToolCallChunk(
                calls, str(item.get("call_id")), str(item.get("name")), str(arguments)
            )
            calls += 1
            events.extend(run.feed(ToolCallDelta(0, chunk)))
    events.extend(run._close_all())
    kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
        str(obj.get("status")), "response.completed"
    )
    events.append(run._event(kind, response=_copy(obj)))
    return events


def custom_names(tools: list[Any]) -> frozenset[str]:
    """The names of the custom tools among ``tools`` (as the response object echoes them)."""
    names: set[str] = set()
    for tool in tools:
        inner = tool.get("tools") or [] if tool.get("type") == "namespace" else [tool]
        names.update(str(t.get("name")) for t in inner if t.get("type") == "custom")
    return frozenset(names)


_CONTAINERS = (dict, list)


def _copy(value: Any) -> Any:
    """A deep copy of JSON data without the run's private ``_`` keys (a scalar is not
    passed down: most values are)."""
    if type(value) is dict:
        return {
            k: _copy(v) if type(v) in _CONTAINERS else v for k, v in value.items() if k[:1] != "_"
        }
    if type(value) is list:
        return [_copy(v) if type(v) in _CONTAINERS else v for v in value]
    return value


def _private(value: dict[str, Any]) -> bool:
    return any(k[:1] == "_" for k in value)


#: The private keys a run sets on the object itself (its items have their own): the object's
#: thirty-odd keys are its own making, so naming them is enough (and cheaper than a scan).
_OBJECT_PRIVATE = ("_reason",)
