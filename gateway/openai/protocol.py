"""OpenAI request models: what the gateway reads from a request body.

Models accept unknown fields (clients send many) and the service logs the ones it ignores.
Responses are built as plain dicts in :mod:`gateway.http.responses`: they are on the hot path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.http.bodies import LenientModel as _Lenient

#: Sampling and bookkeeping fields that are accepted and not forwarded: the jobs API has no
#: parameters beyond the prompt, and dropping these does not change what an answer means.
IGNORED_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "user",
        "metadata",
        "store",
        "service_tier",
        "reasoning_effort",
        "prediction",
        "suffix",
        "best_of",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "verbosity",
    }
)


class TextPart(_Lenient):
    type: Literal["text", "input_text"]
    text: str


class OtherPart(_Lenient):
    type: str


class FunctionCall(_Lenient):
    name: str
    arguments: str = ""


class CustomCall(_Lenient):
    name: str
    input: str = ""


class ToolCall(_Lenient):
    """An earlier call in the history: a function call, or a custom tool's free-text call."""

    id: str = ""
    type: Literal["function", "custom"] = "function"
    function: FunctionCall | None = None
    custom: CustomCall | None = None

    @model_validator(mode="after")
    def _has_its_call(self) -> ToolCall:
        if (self.function if self.type == "function" else self.custom) is None:
            raise ValueError(f"a tool call of type {self.type!r} needs its '{self.type}' object")
        return self


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(_Lenient):
    role: Role
    content: str | list[TextPart | OtherPart] | None = None
    # OpenAI's rule; a name is written into the prompt's turn labels (gateway.engine.turns).
    name: str | None = Field(None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class FunctionDefinition(_Lenient):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class CustomToolDefinition(_Lenient):
    """A free-text tool: accepted by the model here, refused (with a message saying so)."""

    type: Literal["custom"]
    custom: dict[str, Any] = Field(default_factory=dict)


class NamedToolChoice(_Lenient):
    type: Literal["function", "custom"]
    function: dict[str, Any] | None = None
    custom: dict[str, Any] | None = None


class AllowedToolsChoice(_Lenient):
    """``{"type": "allowed_tools", "allowed_tools": {"mode": ..., "tools": [...]}}``."""

    type: Literal["allowed_tools"]
    allowed_tools: dict[str, Any]


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


Stop = str | list[str] | None


class _SamplingRequest(_Lenient):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    stop: Stop = None
    max_tokens: int | None = Field(None, ge=1)
    logprobs: Any = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: Stop) -> Stop:
        if isinstance(value, list) and not all(isinstance(s, str) for s in value):
            raise ValueError("stop must be a string or a list of strings")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]


class ChatCompletionRequest(_SamplingRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1)
    top_logprobs: int | None = None
    tools: list[ToolDefinition | CustomToolDefinition] | None = None
    tool_choice: (
        Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice | None
    ) = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: Any = None
    response_format: ResponseFormat | None = None
    modalities: list[str] | None = None
    audio: Any = None


class CompletionRequest(_SamplingRequest):
    #: The spec's default when null or missing: the model starts a new document.
    prompt: str | list[str] | list[int] | list[list[int]] = "<|endoftext|>"
    echo: bool = False
    #: 0 is allowed (with ``echo``, the prompt back and nothing generated).
    max_tokens: int | None = Field(None, ge=0)
