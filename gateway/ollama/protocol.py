"""Ollama API request models: what the gateway reads from ``/api/chat``, ``/api/generate`` and
``/api/show`` bodies.

Lenient as every door's models (unknown fields kept and reported as ignored); strict on the
types of the fields the gateway uses. ``options`` is a free mapping: ``num_predict`` and
``stop`` are read from it (:mod:`gateway.ollama.translate`), the rest is reported as ignored.
Answers are plain dicts (:mod:`gateway.ollama.answers`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from gateway.http.bodies import LenientModel as _Lenient

#: Top-level fields accepted and not forwarded: they tune a local Ollama server (how long a
#: model stays loaded, whether it shows its thinking) and change nothing a grid answer says.
IGNORED_FIELDS = frozenset({"keep_alive", "think", "logprobs", "top_logprobs", "truncate"})


class FunctionCall(_Lenient):
    name: str = Field(min_length=1)
    #: Ollama sends arguments as an object (some clients as its JSON text).
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(_Lenient):
    function: FunctionCall
    id: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[Any] | None = None
    tool_calls: list[ToolCall] | None = None
    #: On a ``tool`` message: the tool that answered (Ollama's field), or the call it answers.
    tool_name: str | None = None
    tool_call_id: str | None = None
    thinking: str | None = None


class FunctionDefinition(_Lenient):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


def _format_tag(value: Any) -> str:
    return "Text" if isinstance(value, str) else "Schema"


#: ``"json"``, ``""`` (none) or a JSON schema.
Format = Annotated[
    Annotated[Literal["json", ""], Tag("Text")] | Annotated[dict[str, Any], Tag("Schema")],
    Discriminator(_format_tag),
]


class CompletionRequest(_Lenient):
    model: str = Field(min_length=1)
    format: Format | None = None
    options: dict[str, Any] | None = None
    #: Ollama streams unless told not to.
    stream: bool = True


class ChatRequest(CompletionRequest):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[Tool] | None = None


class GenerateRequest(CompletionRequest):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool = False
    context: list[int] | None = None
    images: list[Any] | None = None


class ShowRequest(_Lenient):
    #: ``model``; older clients send ``name``.
    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1)
    verbose: bool = False
