"""The response cache: an answer the grid already gave, replayed instead of asked for again.

Protocol-free. The key (:func:`cache_key`) is everything in a :class:`Plan` that decides the
answer: the model's tag, the rendered prompt of each choice (so the template, the messages,
the tool and JSON instructions and n), the stops, the token cap and the tool/JSON
specification. How the answer is written on the wire (chat or completions, streamed or not,
usage chunk or not) is not in the key: what is stored is the engine's neutral
:class:`~gateway.engine.answer.Answer` (each choice's text, tool calls, finish reason and stop
sequence), and a hit is replayed as the engine's events (:func:`replay`), which each door's
codec encodes as it encodes a live answer. So one stored answer serves every door, streamed or
not.

Only complete answers are stored: :meth:`ResponseCache.recording` watches the events of a live
answer and stores it once they ended with every choice complete.

Off by default, per model: the upstream takes no sampling parameters, so two identical
requests would get two different samples from the grid; a hit replays one of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import CacheSettings, KeySettings, ModelSettings, Settings
from gateway.engine.answer import Answer, AnswerBuilder, ChoiceAnswer
from gateway.engine.cache_stores import CacheStore, MemoryStore, RedisStore
from gateway.engine.conversation import ToolCall
from gateway.engine.events import ChoiceEnd, Event, TextDelta, ToolCallChunk, ToolCallDelta
from gateway.engine.planning import Plan
from gateway.engine.tools import new_call_id
from gateway.engine.tools.spec import OutputSpec

logger = logging.getLogger("gateway.cache")

#: Bumped whenever what a key covers, or the stored shape, changes: old entries then miss.
KEY_VERSION = "v2"

#: Called with (event, bytes): event is "hit" | "miss" | "store" | "join".
CacheHook = Callable[[str, int], None]


def _output_description(output: OutputSpec | None) -> Any:
    if output is None:
        return None
    tools = output.tools
    json_spec = output.json
    return {
        "tools": None
        if tools is None
        else {
            "tools": [[t.name, t.description, t.parameters, t.strict] for t in tools.tools],
            "choice": tools.choice,
            "forced": tools.forced,
            "parallel": tools.parallel,
        },
        "json": None
        if json_spec is None
        else [
            json_spec.kind,
            json_spec.name,
            json_spec.description,
            json_spec.schema,
            json_spec.strict,
        ],
        "retries": output.retries,
    }


def cache_key(plan: Plan, account: str | None = None) -> str:
    """The sha256 of everything in ``plan`` that decides the answer (never the wire format),
    and of the upstream ``account`` it is kept for (None: shared by every account)."""
    described = {
        "account": account,
        "tag": plan.model.tag,
        "prompts": plan.prompts,
        "stops": plan.stops,
        "max_tokens": plan.max_tokens,
        "output": _output_description(plan.output),
    }
    try:
        raw = orjson.dumps(described, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # an integer beyond 64 bits in a client's schema: the stdlib takes it
        raw = json.dumps(described, sort_keys=True, default=str).encode()
    return KEY_VERSION + ":" + hashlib.sha256(raw).hexdigest()


def encode(answer: Answer) -> bytes:
    """The stored form of ``answer``: each choice's text, reason, stop and calls, and tokens."""
    choices = [
        [c.text, c.reason, c.stop_sequence, [[t.name, t.arguments] for t in c.tool_calls]]
        for c in answer.choices
    ]
    return orjson.dumps(
        {
            "choices": choices,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
        }
    )


def decode(raw: bytes) -> Answer | None:
    """The answer in ``raw``, or None when it is not one (another version wrote it, say)."""
    try:
        data = orjson.loads(raw)
        choices = [
            ChoiceAnswer(
                text=str(text),
                reason=str(reason),
                stop_sequence=None if stop is None else str(stop),
                tool_calls=[ToolCall("", str(name), str(args)) for name, args in calls],
            )
            for text, reason, stop, calls in data["choices"]
        ]
        return Answer(choices, int(data["prompt_tokens"]), int(data["completion_tokens"]))
    except (ValueError, TypeError, KeyError):
        return None


async def replay(answer: Answer) -> AsyncIterator[Event]:
    """A stored answer as the events of a live one, all at once (tool call ids made afresh:
    ids are unique per answer, and one conversation may hold the same hit twice)."""
    for index, choice in enumerate(answer.choices):
        if choice.text:
            yield TextDelta(index, choice.text)
        for number, call in enumerate(choice.tool_calls):
            yield ToolCallDelta(
                index, ToolCallChunk(number, new_call_id(), call.name, call.arguments)
            )
        yield ChoiceEnd(index, choice.reason, choice.stop_sequence)


class _NoRewrites:
    rewrites = 0


class ReplayedChoice:
    """What the answer writers read of a choice (tokens, jobs, log rewrites), for a hit."""

    __slots__ = ("completion_tokens", "cursor", "job_ids")

    def __init__(self, completion_tokens: int) -> None:
        self.completion_tokens = completion_tokens
        self.cursor = _NoRewrites()
        self.job_ids: list[str] = []

    @classmethod
    def of(cls, answer: Answer) -> list[ReplayedChoice]:
        """One per choice; the answer's tokens are counted on the first."""
        return [
            cls(answer.completion_tokens if index == 0 else 0)
            for index in range(len(answer.choices))
        ]


@dataclass(frozen=True, slots=True)
class Policy:
    """What one request may do with the cache."""

    read: bool
    store: bool

    @property
    def active(self) -> bool:
        return self.read or self.store


BYPASS = Policy(read=False, store=False)


class ResponseCache:
    """The cache of one gateway process: which requests use it, and its store."""

    def __init__(
        self, settings: CacheSettings, store: CacheStore, *, on_event: CacheHook | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self._on_event = on_event

    @classmethod
    def from_settings(cls, settings: Settings, on_event: CacheHook | None = None) -> ResponseCache:
        cache = settings.cache
        store: CacheStore
        if cache.backend == "redis":
            url = cache.redis_url or settings.redis.url
            assert url is not None  # checked by the settings
            redis = settings.redis
            store = RedisStore(
                url,
                cache.prefix,
                cache.ttl,
                redis.timeout,
                pool_size=redis.pool_size,
                pool_timeout=redis.pool_timeout,
            )
        else:
            store = MemoryStore(cache.max_entries, cache.max_bytes, cache.ttl)
        return cls(cache, store, on_event=on_event)

    def enabled_for(self, model: ModelSettings) -> bool:
        if model.cache is not None:
            return model.cache
        names = self.settings.models
        return "*" in names or model.name in names or any(a in names for a in model.aliases)

    def policy(
        self, key: KeySettings, model: ModelSettings, *, no_cache: bool, no_store: bool
    ) -> Policy:
        """``no_cache``: do not read (the fresh answer refreshes the entry); ``no_store``: do
        not store this answer. A key or model without the cache bypasses it: it neither reads
        nor writes, so it can neither learn nor replace what other keys stored."""
        if not key.cache or not self.enabled_for(model):
            return BYPASS
        return Policy(read=not no_cache, store=not no_store)

    def entry_key(self, plan: Plan, account: str) -> str:
        """Where ``plan``'s answer is kept: per upstream account unless ``scope: global``."""
        return cache_key(plan, None if self.settings.scope == "global" else account)

    async def lookup(self, key: str) -> Answer | None:
        raw = await self.store.get(key)
        answer = decode(raw) if raw is not None else None
        self._count("hit" if answer is not None else "miss", len(raw or b""))
        return answer

    async def put(self, key: str, answer: Answer) -> None:
        raw = encode(answer)
        if len(raw) > self.settings.max_entry_bytes:
            return
        await self.store.put(key, raw)
        self._count("store", len(raw))

    async def recording(
        self,
        events: AsyncIterator[Event],
        key: str,
        n_choices: int,
        prompt_tokens: int,
        completion_tokens: Callable[[], int],
    ) -> AsyncIterator[Event]:
        """``events`` passed on unchanged; once they ended with every choice complete (not on
        an error, not when the client left), the answer is stored under ``key``."""
        builder = AnswerBuilder(n_choices)
        ended: set[int] = set()
        try:
            async for event in events:
                builder.add(event)
                if isinstance(event, ChoiceEnd):
                    ended.add(event.index)
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        if len(ended) == n_choices:
            await self.put(key, builder.answer(prompt_tokens, completion_tokens()))

    def count_join(self) -> None:
        self._count("join", 0)

    def _count(self, event: str, size: int) -> None:
        if self._on_event is not None:
            self._on_event(event, size)

    async def aclose(self) -> None:
        await self.store.aclose()
