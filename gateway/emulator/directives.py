"""What a prompt asks the emulator to do, and the text it will answer.

A prompt may carry directives ``[[emulate:NAME ARGS]]`` anywhere (the gateway renders chat
messages into one prompt, so a directive typed in any message ends up in it). Parsing is pure:
the same prompt always gives the same :class:`Directives` and the same reply, so tests compute
the expected text with :func:`reply_for` instead of hard-coding it.

Directives (timings are in ``engine.build_script``):

    reply TEXT      the reply is exactly TEXT
    words N         a default-style reply of N words
    wps X           words per second for this job
    queue SECONDS   length of the queue phase for this job
    fail [MESSAGE]  after a few words: status "failed", log + "\n" + MESSAGE
    hang            after a few words the log stops growing; status stays "running"
    rewrite         half-way, the log is replaced by a different text, then grows again
    shrink          half-way, the log loses its last few words for a while, then regrows
    ansi            terminal colour codes around some words of the log
    vanish          after the queue phase the job is absent from status answers
    reject          a submission holding this input is refused whole:
                    ``{"success": false, "error": "Invalid input format"}`` (no job is made)
    status NAME     the finished status is NAME instead of the configured one
    tool NAME [ARGS_JSON] [style=plain|fenced|prose|invalid]
                    the reply is ``<tool_call>{"name": NAME, "arguments": ARGS}</tool_call>``
    json JSON [style=plain|fenced|prose|invalid] [invalid_first=N]
                    the reply is JSON; the first N jobs with this exact directive text get
                    an unparsable variant (counted per engine)

Rules:

* Unknown names and malformed directives (``words abc``, ``tool f {bad json``) are plain text.
* Of each name, the LAST well-formed directive counts.
* ``reply``, ``words``, ``tool`` and ``json`` choose the content; the one appearing last wins.
* ``tool`` group: the last ``tool`` directive plus the ``tool`` directives right before it that
  are separated from it only by whitespace form one reply with parallel calls, in prompt order.
* ``tool`` history: if any tool name of the group occurs in the prompt *after* the group (the
  rendered history shows the call and its result), the reply is prose instead of a call:
  ``The result of NAME is: <last 200 chars after NAME's last occurrence, stripped>``, one line
  per such name, so an agent loop ends. Tool definitions must therefore be rendered before the
  conversation, not after it.
* ``reply TEXT`` ends at the first ``]]``; one whitespace character after ``reply`` is the
  separator, everything else (spaces, newlines) is kept.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from gateway.emulator.improvise import improvise
from gateway.emulator.prose import sentences

Style = Literal["plain", "fenced", "prose", "invalid"]

OPEN = "[[emulate:"
CLOSE = "]]"
DEFAULT_WORDS = 24
STYLES: tuple[Style, ...] = ("plain", "fenced", "prose", "invalid")
_CONTENT = ("reply", "words", "tool", "json")
_FLAGS = ("hang", "rewrite", "shrink", "ansi", "vanish", "reject")
_NAME = re.compile(r"[a-z_]+")
_TOOL_NAME = re.compile(r"\s+([\w.\-]+)")
_SPACE = re.compile(r"\s*")
_DIGITS = re.compile(r"[0-9]{1,9}")
_DECODER = json.JSONDecoder()
_RESULT_CHARS = 200
_MAX_WORDS = 100_000


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One requested call: ``[[emulate:tool NAME ARGS_JSON style=...]]``."""

    name: str
    arguments: Any
    style: Style = "plain"


@dataclass(frozen=True, slots=True)
class JsonReply:
    """``[[emulate:json JSON style=... invalid_first=N]]``.

    ``key`` is the directive's exact text: jobs carrying the same text share one count of
    ``invalid_first`` answers, kept by the engine.
    """

    value: Any
    style: Style = "plain"
    invalid_first: int = 0
    key: str = ""


@dataclass(frozen=True, slots=True)
class Directives:
    """Everything a prompt asks for. At most one of ``text``/``words``/``tools``/``json`` is set."""

    text: str | None = None
    words: int | None = None
    tools: tuple[ToolCall, ...] = ()
    tool_results: tuple[tuple[str, str], ...] = ()
    json: JsonReply | None = None
    wps: float | None = None
    queue: float | None = None
    fail: str | None = None
    status: str | None = None
    hang: bool = False
    rewrite: bool = False
    shrink: bool = False
    ansi: bool = False
    vanish: bool = False
    reject: bool = False


def rejects(prompt: str) -> bool:
    """True when ``prompt`` carries a well-formed ``reject`` directive."""
    return OPEN + "reject" in prompt and parse_directives(prompt).reject


@dataclass(frozen=True, slots=True)
class _Found:
    name: str
    start: int
    end: int
    value: Any = None


def parse_directives(prompt: str) -> Directives:
    """Read every directive of ``prompt`` and apply the rules of this module's docstring."""
    found = list(_scan(prompt))
    if not found:
        return Directives()
    last = {item.name: item for item in found}
    fields: dict[str, Any] = {name: True for name in _FLAGS if name in last}
    for name in ("wps", "queue", "fail", "status"):
        if name in last:
            fields[name] = last[name].value
    content = [item for item in found if item.name in _CONTENT]
    if content:
        chosen = content[-1]
        if chosen.name == "reply":
            fields["text"] = chosen.value
        elif chosen.name == "words":
            fields["words"] = chosen.value
        elif chosen.name == "json":
            fields["json"] = chosen.value
        else:
            group = _tool_group(prompt, found, found.index(chosen))
            fields["tools"] = tuple(item.value for item in group)
            fields["tool_results"] = _tool_results(prompt[group[-1].end :], fields["tools"])
    return Directives(**fields)


def reply_for(prompt: str, default_words: int = DEFAULT_WORDS, variant: int = 0) -> str:
    """The full text a job for ``prompt`` ends with (``json invalid_first`` aside: its valid form).

    Without directives: ``default_words`` words of sentences seeded by the prompt's sha256
    (and by ``variant``, the job's place among the same prompt's ``n`` choices).
    """
    return compose_reply(prompt, parse_directives(prompt), default_words, variant=variant)


def compose_reply(
    prompt: str,
    directives: Directives,
    default_words: int,
    *,
    broken_json: bool = False,
    variant: int = 0,
) -> str:
    """The reply text once ``directives`` are known; ``broken_json`` breaks a ``json`` reply.

    ``variant`` tells apart the ``n`` choices of one prompt: a default reply differs for each
    (variant 0 is the prompt's usual text), a directive's reply is what it says for all."""
    if directives.text is not None:
        return directives.text
    if directives.json is not None:
        return render_json(directives.json.value, directives.json.style, broken=broken_json)
    if directives.tool_results:
        return "\n".join(
            f"The result of {name} is: {result}" for name, result in directives.tool_results
        )
    if directives.tools:
        return "\n".join(render_tool_call(call) for call in directives.tools)
    if directives.words is None and (improvised := improvise(prompt)) is not None:
        return improvised  # the gateway's tool or JSON instructions, answered as asked
    count = directives.words if directives.words is not None else default_words
    return pseudo_text(prompt if variant == 0 else f"{prompt}\x00choice {variant}", count)


def pseudo_text(seed: str, words: int) -> str:
    """``words`` words of readable sentences (:mod:`gateway.emulator.prose`), the same for the
    same ``seed``."""
    return sentences(seed, words)


def render_tool_call(call: ToolCall) -> str:
    """The canonical ``<tool_call>{"name": .., "arguments": ..}</tool_call>`` in ``call.style``."""
    payload = json.dumps({"name": call.name, "arguments": call.arguments})
    if call.style == "fenced":
        return f"```json\n{payload}\n```"
    if call.style == "invalid":
        return f"<tool_call>{_broken(payload)}</tool_call>"
    canonical = f"<tool_call>{payload}</tool_call>"
    if call.style == "prose":
        return f"Let me call {call.name} to find out.\n{canonical}\nI will go on once I have it."
    return canonical


def render_json(value: Any, style: Style, *, broken: bool = False) -> str:
    """``value`` as JSON in ``style``; ``broken`` (or style ``invalid``) makes it unparsable."""
    text = json.dumps(value, indent=2 if style == "fenced" else None)
    if broken or style == "invalid":
        text = _broken(text)
    if style == "fenced":
        return f"```json\n{text}\n```"
    if style == "prose":
        return f"Here is the JSON you asked for:\n{text}\nLet me know if anything should change."
    return text


def _broken(text: str) -> str:
    """An unparsable JSON text: ``{`` then half of ``text`` can never close validly."""
    return "{" + text[: len(text) // 2]


def _scan(prompt: str) -> list[_Found]:
    found: list[_Found] = []
    pos = 0
    while (start := prompt.find(OPEN, pos)) != -1:
        pos = start + len(OPEN)
        name = _NAME.match(prompt, pos)
        if name is None:
            continue
        if name.group() in ("tool", "json"):
            item = _scan_json(prompt, name.group(), start, name.end())
        else:
            item = _scan_plain(prompt, name.group(), start, name.end())
        if item is not None:
            found.append(item)
            pos = item.end
    return found


def _scan_plain(prompt: str, name: str, start: int, args_at: int) -> _Found | None:
    close = prompt.find(CLOSE, args_at)
    if close == -1:
        return None
    args = prompt[args_at:close]
    if args and not args[0].isspace():
        return None
    try:
        value = _plain_value(name, args[1:])
    except ValueError:
        return None
    return _Found(name, start, close + len(CLOSE), value)


def _plain_value(name: str, args: str) -> Any:
    """The parsed argument of a non-JSON directive; ValueError when malformed or unknown."""
    if name == "reply":
        return args
    if name in _FLAGS:
        return True
    if name == "fail":
        return args.strip()
    if name == "status":
        words = args.split()
        if not words:
            raise ValueError("status needs a name")
        return words[0]
    if name == "words":
        count = int(args.strip())
        if not 0 <= count <= _MAX_WORDS:
            raise ValueError("word count out of range")
        return count
    if name in ("wps", "queue"):
        number = float(args.strip())
        low_ok = number > 0 if name == "wps" else number >= 0
        if not (low_ok and math.isfinite(number)):
            raise ValueError("number out of range")
        return number
    raise ValueError(f"unknown directive {name}")


def _scan_json(prompt: str, name: str, start: int, args_at: int) -> _Found | None:
    pos = args_at
    tool_name = ""
    if name == "tool":
        match = _TOOL_NAME.match(prompt, pos)
        if match is None:
            return None
        tool_name, pos = match.group(1), match.end()
    space = _SPACE.match(prompt, pos)
    pos = space.end() if space else pos
    value: Any = {}
    if pos == args_at and name == "json":
        return None
    try:
        value, pos = _DECODER.raw_decode(prompt, pos)
    except json.JSONDecodeError:
        if name == "json":
            return None  # a tool may omit its arguments: {} then
    close = prompt.find(CLOSE, pos)
    if close == -1:
        return None
    options = _options(prompt[pos:close])
    if options is None:
        return None
    style, invalid_first = options
    end = close + len(CLOSE)
    if name == "tool":
        return _Found(name, start, end, ToolCall(tool_name, value, style))
    return _Found(name, start, end, JsonReply(value, style, invalid_first, prompt[start:end]))


def _options(text: str) -> tuple[Style, int] | None:
    """``style=...`` and ``invalid_first=N``; None when an option is malformed."""
    style: Style = "plain"
    invalid_first = 0
    for word in text.split():
        key, _, value = word.partition("=")
        if key == "style" and value in STYLES:
            style = value
        elif key == "invalid_first" and _DIGITS.fullmatch(value):
            invalid_first = int(value)
        else:
            return None
    return style, invalid_first


def _tool_group(prompt: str, found: list[_Found], last: int) -> list[_Found]:
    group = [found[last]]
    for index in range(last - 1, -1, -1):
        item = found[index]
        if item.name != "tool" or prompt[item.end : group[0].start].strip():
            break
        group.insert(0, item)
    return group


def _tool_results(after: str, calls: tuple[ToolCall, ...]) -> tuple[tuple[str, str], ...]:
    results: list[tuple[str, str]] = []
    for name in dict.fromkeys(call.name for call in calls):
        where = after.rfind(name)
        if where != -1:
            results.append((name, after[where + len(name) :][-_RESULT_CHARS:].strip()))
    return tuple(results)
