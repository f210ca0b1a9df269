"""Anthropic Messages API request models: what the gateway reads from a request body.

Models accept unknown fields (Claude Code sends many, and new ones every month); the door logs
the ones it ignores. Content blocks, tools and ``tool_choice`` are told apart by their
``type`` with a callable discriminator, so a malformed ``text`` block is reported as such
rather than silently read as "some other block". Answers are built as plain dicts
(:mod:`gateway.anthropic.answers`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from gateway.http.bodies import LenientModel as _Lenient

#: Top-level fields accepted and not forwarded: the jobs API takes nothing but a prompt, and
#: dropping these does not change what a correct answer looks like.
IGNORED_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "thinking",
        "context_management",
        "service_tier",
        "cache_control",
        "container",
        "mcp_servers",
        "inference_geo",
    }
)

#: Block types a client may send back from an earlier answer that carry nothing for a model
#: that thinks in the open: dropped.
DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


class TextBlock(_Lenient):
    type: Literal["text"]
    text: str


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class OtherBlock(_Lenient):
    """Any other block (images, documents, thinking, server tool results ...)."""

    type: str


#: Union branches are tagged in CamelCase: error locations then drop the tag (see
#: ``gateway.http.bodies.validate``), so a bad block is ``messages[0].content[1].text``.
_BLOCK_TAGS = {"text": "Text", "tool_use": "ToolUse", "tool_result": "ToolResult"}


def _block_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return _BLOCK_TAGS.get(kind, "Other") if isinstance(kind, str) else "Other"


def _text_or_list(value: Any) -> str:
    return "Text" if isinstance(value, str) else "List"


def _part_tag(value: Any) -> str:
    return "Text" if _block_tag(value) == "Text" else "Other"


ResultPart = Annotated[
    Annotated[TextBlock, Tag("Text")] | Annotated[OtherBlock, Tag("Other")],
    Discriminator(_part_tag),
]


#: ``str | list[...]``, told apart first, so a malformed list is reported for its block rather
#: than as "not a string".
ResultContent = Annotated[
    Annotated[str, Tag("Text")] | Annotated[list[ResultPart], Tag("List")],
    Discriminator(_text_or_list),
]


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: ResultContent = ""
    is_error: bool = False


Block = Annotated[
    Annotated[TextBlock, Tag("Text")]
    | Annotated[ToolUseBlock, Tag("ToolUse")]
    | Annotated[ToolResultBlock, Tag("ToolResult")]
    | Annotated[OtherBlock, Tag("Other")],
    Discriminator(_block_tag),
]


Content = Annotated[
    Annotated[str, Tag("Text")] | Annotated[list[Block], Tag("List")],
    Discriminator(_text_or_list),
]
System = Annotated[
    Annotated[str, Tag("Text")] | Annotated[list[TextBlock], Tag("List")],
    Discriminator(_text_or_list),
]


class InputMessage(_Lenient):
    """One turn. ``system`` turns may come anywhere (Claude Code sends them mid-conversation);
    their content is text only."""

    role: Literal["user", "assistant", "system"]
    content: Content


class CustomTool(_Lenient):
    """A client tool: the model may call it, the client runs it."""

    type: Literal["custom"] = "custom"
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None


class ServerTool(_Lenient):
    """One of Anthropic's own tools (``web_search_*``, ``bash_*``, ...): never offered here."""

    type: str
    name: str | None = None


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "Custom" if kind in (None, "custom") else "Server"


Tool = Annotated[
    Annotated[CustomTool, Tag("Custom")] | Annotated[ServerTool, Tag("Server")],
    Discriminator(_tool_tag),
]


class ToolChoiceAuto(_Lenient):
    type: Literal["auto"]
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(_Lenient):
    type: Literal["any"]
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(_Lenient):
    type: Literal["tool"]
    name: str = Field(min_length=1)
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(_Lenient):
    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class JsonOutputFormat(_Lenient):
    """Structured outputs: the answer is JSON matching ``schema``."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Lenient):
    """``effort`` and the rest are accepted and not forwarded; ``format`` is honoured."""

    format: JsonOutputFormat | None = None


class CountTokensRequest(_Lenient):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: str = Field(min_length=1)
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: System | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    #: The structured-outputs beta's spelling of ``output_config.format``.
    output_format: JsonOutputFormat | None = None


class MessagesRequest(CountTokensRequest):
    #: ``0`` is valid for Anthropic (warm the prompt cache, no answer): refused by the door
    #: (:func:`gateway.anthropic.translate.conversation`) with the reason, not by a bound.
    max_tokens: int = Field(ge=0)
    stop_sequences: list[str] | None = None
    stream: bool = False
