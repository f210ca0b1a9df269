"""Fitting a prompt into its model's context window, leaving room for the answer.

Clients send far more than a small model can read: Open WebUI offers 36 tools with every chat
turn, coding agents a long system prompt and a long history. A prompt longer than the window
is a job that cannot work, so before anything is sent the prompt is made to fit, in steps,
each only when the one before was not enough:

1. the tool definitions are rendered in short (:func:`~gateway.engine.tools.compact_definition`);
2. the tools that matter least are left out: a tool the request forces or named in an earlier
   call of the conversation matters most, then the others in the order the client gave them;
3. where the door allows it (the Responses API's ``truncation: "auto"``, or the model's
   ``truncation: auto``), the oldest turns are left out; system messages and the last turn stay;
4. where the door allows it and that was not enough (a coding agent's 20 KB developer prompt
   in an 8k window), the longest system message is cut in its middle, keeping its head (who
   the model is, the rules) and its tail (the task's setting), down to :data:`SYSTEM_FLOOR`
   characters at least; the tools go first (they are how an agent acts): the most tools that
   fit with the message at its floor are kept, then as much of the message as still fits;
5. otherwise the request is refused at once with ``context_length_exceeded`` (400).

Every step taken is reported, so the access log lists it as it lists ignored fields. Token
counts are the gateway's estimate (:mod:`gateway.engine.tokens`), which errs high.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.config import ModelSettings
from gateway.engine.catalog import context_window
from gateway.engine.prompts import PromptMessage
from gateway.engine.tokens import count_tokens
from gateway.engine.tools import OutputSpec, Tool
from gateway.errors import BadRequest

__all__ = [
    "Fitted",
    "Window",
    "cut_middle",
    "fit_prompt",
    "rank_tools",
    "too_long",
    "window_for",
]

#: The largest share of the window a request's ``max_tokens`` may claim from the prompt.
MAX_ANSWER_SHARE = 0.5
#: The answer's room when neither the request nor the model says: a share of the window, capped.
DEFAULT_RESERVE_SHARE = 0.25
DEFAULT_RESERVE_CAP = 1024

#: The fewest characters a cut system message keeps (head and tail); below this it is refused.
SYSTEM_FLOOR = 256
#: What stands where a system message's middle was cut out.
CUT_MARK = "\n[...]\n"

#: Renders messages (and the output spec, in short when ``compact``) into the prompt.
Render = Callable[[Sequence[PromptMessage], OutputSpec | None, bool], str]


@dataclass(frozen=True, slots=True)
class Window:
    """A model's context window and the part of it kept for the answer."""

    size: int
    reserve: int

    @property
    def budget(self) -> int:
        """The most tokens the prompt may have."""
        return self.size - self.reserve


def window_for(model: ModelSettings, max_tokens: int | None, *, cap_only: bool = False) -> Window:
    """The window the prompt must fit: the answer keeps ``max_tokens`` (at most half the
    window), or the model's ``answer_reserve``, or a quarter of the window up to 1024.

    ``cap_only``: ``max_tokens`` is only a ceiling (Anthropic's clients ask for 32,000 and more
    whatever the model), so the answer keeps the default room, or less if it asks for less.
    """
    size = context_window(model)
    if model.answer_reserve is not None:
        default = min(model.answer_reserve, int(size * MAX_ANSWER_SHARE))
    else:
        default = min(int(size * DEFAULT_RESERVE_SHARE), DEFAULT_RESERVE_CAP)
    if max_tokens is None:
        reserve = default
    elif cap_only:
        reserve = min(max_tokens, default)
    else:
        reserve = min(max_tokens, int(size * MAX_ANSWER_SHARE))
    return Window(size, max(reserve, 1))


@dataclass(slots=True)
class Fitted:
    prompt: str
    tokens: int
    messages: list[PromptMessage]
    output: OutputSpec | None
    compact: bool = False
    trims: list[str] = dataclasses.field(default_factory=list)


def rank_tools(tools: Sequence[Tool], forced: str | None, called: Sequence[str]) -> list[Tool]:
    """Tools by how much they matter: the forced one, those called (latest first), the rest."""
    order: dict[str, int] = {}
    if forced is not None:
        order[forced] = 0
    for name in reversed(called):
        order.setdefault(name, len(order))
    last = len(order)
    return sorted(tools, key=lambda tool: order.get(tool.name, last))  # stable: client order


def _with_tools(output: OutputSpec | None, kept: Sequence[Tool]) -> OutputSpec | None:
    if output is None or output.tools is None:
        return output
    if not kept:
        return dataclasses.replace(output, tools=None) if output.json is not None else None
    names = {tool.name for tool in kept}
    tools = tuple(tool for tool in output.tools.tools if tool.name in names)  # client order
    return dataclasses.replace(output, tools=dataclasses.replace(output.tools, tools=tools))


def _turns(messages: Sequence[PromptMessage]) -> list[list[int]]:
    """Indexes of the non-system messages, grouped in turns that each start at a user message."""
    groups: list[list[int]] = []
    for i, message in enumerate(messages):
        if message.role == "system":
            continue
        if message.role == "user" or not groups:
            groups.append([])
        groups[-1].append(i)
    return groups


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest k in [low, high] with ok(k), for ok true up to some k and false above."""
    if not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def cut_middle(text: str, keep: int) -> str:
    """``text`` with its middle left out: ``keep`` characters of it, split head and tail."""
    if keep >= len(text):
        return text
    head = (keep + 1) // 2
    return text[:head] + CUT_MARK + text[len(text) - (keep - head) :]


def _longest_system(messages: Sequence[PromptMessage]) -> int | None:
    sizes = [(len(m.content), i) for i, m in enumerate(messages) if m.role == "system"]
    return max(sizes)[1] if sizes else None


def too_long(tokens: int, window: Window, param: str) -> BadRequest:
    """The refusal, in words both OpenAI's and Anthropic's clients recognise."""
    return BadRequest(
        f"prompt is too long: {tokens} tokens > {window.budget} maximum. This model's maximum "
        f"context length is {window.size} tokens, of which {window.reserve} are kept for the "
        f"answer; your messages resulted in {tokens} tokens. Please reduce the length of the "
        "messages or tools.",
        param=param,
        code="context_length_exceeded",
    )


def fit_prompt(
    messages: Sequence[PromptMessage],
    output: OutputSpec | None,
    render: Render,
    window: Window,
    *,
    called: Sequence[str] = (),
    truncation: bool = False,
    param: str = "messages",
) -> Fitted:
    """The prompt of ``messages`` and ``output`` within ``window.budget`` tokens (see above)."""
    budget = window.budget
    cache: dict[tuple[int, int, bool, int | None], tuple[str, int]] = {}
    ranked = (
        rank_tools(output.tools.tools, output.tools.forced, called)
        if output and output.tools
        else []
    )
    fewest = 1 if output and output.tools and output.tools.must_call else 0
    groups = _turns(messages)

    longest = _longest_system(messages) if truncation else None

    def shown(dropped: int, cut: int | None = None) -> list[PromptMessage]:
        gone = {i for group in groups[:dropped] for i in group}
        kept = [
            m
            if i != longest or cut is None
            else dataclasses.replace(m, content=cut_middle(m.content, cut))
            for i, m in enumerate(messages)
        ]
        return [m for i, m in enumerate(kept) if i not in gone]

    def attempt(dropped: int, kept: int, compact: bool, cut: int | None = None) -> tuple[str, int]:
        key = (dropped, kept, compact, cut)
        if key not in cache:
            text = render(shown(dropped, cut), _with_tools(output, ranked[:kept]), compact)
            cache[key] = (text, count_tokens(text))
        return cache[key]

    prompt, tokens = attempt(0, len(ranked), False)
    if tokens <= budget:
        return Fitted(prompt, tokens, list(messages), output)
    first_tokens = tokens
    compact = bool(ranked)
    dropped = 0
    kept: int | None = None
    cut: int | None = None
    if compact:
        kept = _largest(fewest, len(ranked), lambda k: attempt(0, k, True)[1] <= budget)
    if kept is None and truncation and len(groups) > 1:
        least = _largest(  # the fewest turns dropped (most kept) with the fewest tools
            -(len(groups) - 1), 0, lambda j: attempt(-j, fewest, compact)[1] <= budget
        )
        if least is not None:
            dropped = -least
            kept = _largest(
                fewest, len(ranked), lambda k: attempt(dropped, k, compact)[1] <= budget
            )
    if kept is None and longest is not None:
        dropped = max(len(groups) - 1, 0)
        size = len(messages[longest].content)
        floor = min(SYSTEM_FLOOR, size)

        def cut_for(k: int) -> int | None:  # the most of the system message kept, k tools
            return _largest(floor, size, lambda c: attempt(dropped, k, compact, c)[1] <= budget)

        kept = _largest(fewest, len(ranked), lambda k: cut_for(k) is not None)
        cut = cut_for(kept) if kept is not None else None
    if kept is None:
        raise too_long(first_tokens, window, param)
    prompt, tokens = attempt(dropped, kept, compact, cut)
    trims = []
    if compact:
        trims.append(f"tools: definitions shortened to fit the {window.size}-token context window")
    if kept < len(ranked):
        trims.append(
            f"tools: {len(ranked) - kept} of {len(ranked)} left out to fit the context window"
        )
    if dropped:
        gone = sum(len(group) for group in groups[:dropped])
        trims.append(f"{param}: the {gone} oldest left out to fit the context window")
    if cut is not None and longest is not None:
        size = len(messages[longest].content)
        trims.append(
            f"{param}: a system message cut from {size} to {cut} characters (its head and "
            "tail kept) to fit the context window"
        )
    return Fitted(
        prompt,
        tokens,
        shown(dropped, cut),
        _with_tools(output, ranked[:kept]),
        compact,
        trims,
    )
