"""What a conversation asks of the answer's shape: tool calls, a JSON format, or plain text.

Read once per request from the conversation's tools, tool choice and output format; schemas
are checked and compiled here, so a bad schema is a 400 before anything is sent upstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.engine.conversation import Conversation, OutputFormat, ToolChoice, ToolDefinition
from gateway.engine.tools.schemas import DEFAULT_CHECK_SECONDS, Schema, compile_schema
from gateway.errors import BadRequest

__all__ = ["JsonSpec", "OutputSpec", "Tool", "ToolSpec", "compile_schema", "output_spec"]

Choice = Literal["auto", "required"]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None
    parameters: Mapping[str, Any] | None
    strict: bool
    validator: Schema | None
    custom: bool = False  # a free-text tool: its one argument is ``input``

    def definition(self) -> dict[str, Any]:
        """The tool as OpenAI's ``tools`` entry, for the prompt."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters or {"type": "object", "properties": {}})
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """Tools offered to the model; absent when ``tool_choice`` is ``none``."""

    tools: tuple[Tool, ...]
    choice: Choice
    forced: str | None  # the function a named tool_choice insists on
    parallel: bool

    @property
    def must_call(self) -> bool:
        return self.choice == "required" or self.forced is not None

    @property
    def names(self) -> frozenset[str]:
        """Every defined name: what counts as a call attempt in a bare JSON object."""
        return frozenset(tool.name for tool in self.tools)

    @property
    def custom(self) -> frozenset[str]:
        """The free-text tools' names: a door hands their calls' ``input`` back as text."""
        return frozenset(tool.name for tool in self.tools if tool.custom)

    def allowed(self, name: str) -> Tool | None:
        """The tool ``name`` if this answer may call it."""
        if self.forced is not None and name != self.forced:
            return None
        return next((tool for tool in self.tools if tool.name == name), None)


@dataclass(frozen=True, slots=True)
class JsonSpec:
    kind: Literal["json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool = False
    validator: Schema | None = None

    @property
    def opener(self) -> str:
        """The characters the JSON answer may start with."""
        kind = (self.schema or {}).get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "array" in kinds:
            return "[{" if "object" in kinds else "["
        return "{"


@dataclass(frozen=True, slots=True)
class OutputSpec:
    tools: ToolSpec | None
    json: JsonSpec | None
    retries: int  # how many times an answer that does not fit is asked for again

    @property
    def checks_schemas(self) -> bool:
        """Whether answers are checked against a client schema (worth a worker thread)."""
        tools = self.tools.tools if self.tools else ()
        return any(t.validator for t in tools) or bool(self.json and self.json.validator)


def _tool(definition: ToolDefinition, seconds: float) -> Tool:
    parameters = definition.parameters
    validator = compile_schema(parameters, definition.param, seconds) if parameters else None
    return Tool(
        definition.name,
        definition.description,
        parameters,
        definition.strict,
        validator,
        definition.custom,
    )


def _tools(conversation: Conversation, seconds: float) -> ToolSpec | None:
    choice = conversation.tool_choice or ToolChoice()
    if not conversation.tools:
        if conversation.tool_choice is not None and choice.mode != "none":
            raise BadRequest(
                "tool_choice is only allowed when tools are specified.", param=choice.param
            )
        return None
    if choice.mode == "none":
        return None
    tools = tuple(_tool(definition, seconds) for definition in conversation.tools)
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise BadRequest("Tool names must be unique.", param="tools")
    if choice.allowed is not None:
        unknown = [name for name in choice.allowed if name not in names]
        if unknown:
            raise BadRequest(
                f"tool_choice allows the tool {unknown[0]!r}, which is not among the tools.",
                param=choice.param,
            )
        tools = tuple(tool for tool in tools if tool.name in choice.allowed)
        names = [tool.name for tool in tools]
    forced = None
    if choice.forced is not None:
        if choice.forced not in names:
            raise BadRequest(
                f"tool_choice names the function {choice.forced!r}, which is not among the tools.",
                param=choice.param,
            )
        forced = choice.forced
    mode: Choice = "required" if choice.mode == "required" else "auto"
    return ToolSpec(tools, mode, forced, conversation.parallel_tool_calls)


def _json(fmt: OutputFormat | None, seconds: float) -> JsonSpec | None:
    if fmt is None:
        return None
    if fmt.kind == "json_object":
        return JsonSpec("json_object")
    if fmt.schema is None:
        raise BadRequest("An output format of type json_schema needs a schema.", param=fmt.param)
    validator = compile_schema(fmt.schema, fmt.schema_param, seconds)
    return JsonSpec("json_schema", fmt.name, fmt.description, fmt.schema, fmt.strict, validator)


def schema_nodes(schemas: Iterable[Any], most: int) -> int:
    """How many values the ``schemas`` hold together, counting stops past ``most``."""
    count = 0
    stack = list(schemas)
    while stack and count <= most:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _check_size(conversation: Conversation, most: int) -> None:
    """Every schema of the request together stays within ``most`` values: the checks that
    follow (compiling, the meta-schema) cost time in proportion, so one request is bounded."""
    schemas: list[Any] = [t.parameters for t in conversation.tools or () if t.parameters]
    fmt = conversation.output_format
    if fmt is not None and fmt.schema is not None:
        schemas.append(fmt.schema)
    if schemas and schema_nodes(schemas, most) > most:
        raise BadRequest(
            f"The request's JSON schemas (every tool's parameters and the output format "
            f"together) hold more than {most} values; send fewer or smaller tools.",
            param="tools" if conversation.tools else (fmt.schema_param if fmt else None),
            code="schemas_too_large",
        )


def output_spec(
    conversation: Conversation,
    retries: int,
    check_seconds: float = DEFAULT_CHECK_SECONDS,
    max_nodes: int | None = None,
) -> OutputSpec | None:
    """The shape the answer must take, or None when plain text will do.

    ``check_seconds`` bounds each check of an answer against one of the request's schemas;
    ``max_nodes`` the values of all of the request's schemas together.
    """
    if max_nodes is not None:
        _check_size(conversation, max_nodes)
    tools = _tools(conversation, check_seconds)
    fmt = _json(conversation.output_format, check_seconds)
    if tools is None and fmt is None:
        return None
    return OutputSpec(tools, fmt, max(0, retries))
