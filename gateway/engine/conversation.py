"""The neutral request every front door translates its wire request into.

A :class:`Conversation` says what the answer must be made from (messages with roles, text,
tool calls and their results), what the model may do (tools, the output format), and how the
answer is cut (stop sequences, a token cap, ``n``). It knows no wire protocol: the OpenAI and
Anthropic doors both build one, and :func:`gateway.engine.planning.plan_conversation` turns
it into a :class:`~gateway.engine.planning.Plan`.

Each definition keeps ``param``, where the client wrote it in its own request, so that an
error found deep in the engine (a bad schema, say) still names the client's field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made earlier in the conversation; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    text: str = ""
    #: A participant's name, or on a ``tool`` message the name of the tool that answered.
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    #: On a ``tool`` message: the call it answers.
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool = False
    param: str = "tools"
    #: A free-text tool (OpenAI's ``custom``): the model writes its input as the string
    #: argument ``input`` (:data:`CUSTOM_INPUT`), and the door hands it back as text.
    custom: bool = False


#: The one argument of a free-text tool as the model is asked to call it.
CUSTOM_INPUT: Mapping[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "the tool's whole input, as text"}},
    "required": ["input"],
}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["auto", "required", "none"] = "auto"
    #: The one function the answer must call.
    forced: str | None = None
    #: Only these tools are offered (OpenAI's ``allowed_tools``); None offers every tool.
    allowed: tuple[str, ...] | None = None
    param: str = "tool_choice"


@dataclass(frozen=True, slots=True)
class OutputFormat:
    kind: Literal["json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool = False
    param: str = "response_format"

    @property
    def schema_param(self) -> str:
        return f"{self.param}.schema"


@dataclass(slots=True)
class Conversation:
    model: str
    messages: list[Message]
    tools: list[ToolDefinition] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    output_format: OutputFormat | None = None
    stops: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    #: The client's name for the token cap, for error messages.
    max_tokens_param: str = "max_tokens"
    #: A cap above the limit is lowered to it rather than refused (Anthropic's clients ask for
    #: far more than any served model writes).
    clamp_max_tokens: bool = False
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    #: The answer continues the last message, an assistant's (a "prefill"), where the template
    #: allows it, rather than opening a new turn.
    continue_final: bool = False
    #: Request fields accepted and not forwarded, for the access log.
    ignored: list[str] = field(default_factory=list)
    #: The oldest turns may be left out to fit the model's window (Responses' ``truncation``).
    truncation: bool = False
    #: The client's name for the messages, for a too-long prompt's error.
    messages_param: str = "messages"
