"""Tools and answer formats as prompt text, for models that know neither.

The instructions (tool definitions, how to call them, the JSON format) join the system part of
the conversation, *before* it: a model reads the rules first, and a tool name appearing after
the user's request then means the conversation already called it. The canonical call format is
the one many open models were trained on (Hermes, Qwen)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Earlier calls in the history are written back in that format, and tool results go in as
``tool`` messages that the model's chat template labels, so a multi-step agent reads its own
past steps the way it is asked to write them.

The instructions are a Jinja template rendered in a sandbox, so a model may bring its own.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.engine.conversation import Message, ToolCall
from gateway.engine.prompts import PromptMessage
from gateway.engine.tools.spec import OutputSpec

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "assistant_text",
    "compact_definition",
    "instructions",
    "tool_call_names",
    "with_instructions",
]

DEFAULT_INSTRUCTIONS = r"""
{% if tools %}
# Tools

You can call functions to help you answer. Their JSON Schema signatures are in <tools></tools>:
<tools>
{% for tool in tools %}
{{ tool | tojson }}
{% endfor %}
</tools>

To call a function, write its name and arguments as JSON inside <tool_call></tool_call> tags:
<tool_call>
{"name": "<function name>", "arguments": <arguments as a JSON object>}
</tool_call>
{% if parallel %}
To call several functions at once, write one <tool_call> block for each call.
{% else %}
Call at most one function in an answer.
{% endif %}
Write nothing after your tool calls: their results will come in the next message.
{% if forced %}
You must call the function "{{ forced }}" now.
{% elif required %}
You must call at least one of these functions now; do not answer in prose.
{% else %}
Call a function only when it helps. Otherwise, answer directly in plain text.
{% endif %}
{% endif %}
{% if json %}
{% if tools %}

{% endif %}
# Answer format

{% set what = 'value' if json.schema else 'object' %}
{% if tools %}
When you answer without calling a function, answer with one JSON {{ what }} and nothing else:
{% else %}
Answer with one JSON {{ what }} and nothing else:
{% endif %}
no explanations, no code fences.
{% if json.schema %}
It must conform to this JSON Schema{{ ' ("' ~ json.name ~ '")' if json.name else '' }}:
{{ json.schema | tojson }}
{% endif %}
{% if json.description %}
{{ json.description }}
{% endif %}
{% endif %}
{% if correction %}

Your previous answer could not be used: {{ correction }}.
Answer again, following the format above exactly.
{% endif %}
"""


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@functools.lru_cache(maxsize=32)
def _template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"the tool instructions template does not compile: {exc}") from None


#: Schema keywords a compact rendering leaves out: they help a model little and cost many tokens.
_NOISE = frozenset({"title", "examples", "example", "$schema", "$comment", "default"})
#: The longest description a compact rendering keeps, in characters.
COMPACT_DESCRIPTION = 160


def _short(text: str) -> str:
    """A description's first sentence, at most :data:`COMPACT_DESCRIPTION` characters."""
    first = " ".join(text.split())
    cut = first.find(". ")
    if cut > 0:
        first = first[: cut + 1]
    return first if len(first) <= COMPACT_DESCRIPTION else first[: COMPACT_DESCRIPTION - 1] + "…"


def _compact_schema(node: Any) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _NOISE:
                continue
            if key == "description" and isinstance(value, str):
                out[key] = _short(value)
            elif key == "properties" and isinstance(value, dict):  # names, not keywords
                out[key] = {name: _compact_schema(v) for name, v in value.items()}
            else:
                out[key] = _compact_schema(value)
        return out
    if isinstance(node, list):
        return [_compact_schema(item) for item in node]
    return node


def compact_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A tool as few tokens say it: name, a short description, the bare parameter schema."""
    function = definition.get("function", definition)
    out: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = _short(str(function["description"]))
    out["parameters"] = _compact_schema(function.get("parameters") or {})
    return out


def instructions(
    spec: OutputSpec,
    correction: str | None = None,
    source: str | None = None,
    *,
    compact: bool = False,
) -> str:
    """The system-prompt text that asks for ``spec`` (and says what was wrong last time).

    ``compact`` renders the tools in short (:func:`compact_definition`), for a prompt that
    does not fit its model's window otherwise.
    """
    tools = spec.tools
    fmt = spec.json
    shape = compact_definition if compact else (lambda d: d)
    context: dict[str, Any] = {
        "tools": [shape(tool.definition()) for tool in tools.tools] if tools else [],
        "required": bool(tools and tools.choice == "required"),
        "forced": tools.forced if tools else None,
        "parallel": bool(tools and tools.parallel),
        "json": None,
        "correction": correction,
    }
    if fmt is not None:
        context["json"] = {
            "kind": fmt.kind,
            "name": fmt.name,
            "description": fmt.description,
            "schema": dict(fmt.schema) if fmt.schema is not None else None,
        }
    return _template(source or DEFAULT_INSTRUCTIONS).render(context).strip()


def with_instructions(messages: Sequence[PromptMessage], text: str) -> list[PromptMessage]:
    """``messages`` with ``text`` at the end of their leading system part (or as one)."""
    result = list(messages)
    lead = 0
    while lead < len(result) and result[lead].role == "system":
        lead += 1
    if lead == 0:
        return [PromptMessage("system", text), *result]
    last = result[lead - 1]
    joined = f"{last.content}\n\n{text}" if last.content.strip() else text
    result[lead - 1] = PromptMessage("system", joined, last.name)
    return result


def assistant_text(content: str, calls: Iterable[ToolCall]) -> str:
    """An assistant turn that called tools, in the format the model is asked to use."""
    blocks = [content.strip()] if content.strip() else []
    for call in calls:
        raw = call.arguments or "{}"
        try:
            arguments: Any = json.loads(raw)
        except ValueError:
            arguments = raw
        payload = _tojson({"name": call.name, "arguments": arguments})
        blocks.append(f"<tool_call>\n{payload}\n</tool_call>")
    return "\n".join(blocks)


def tool_call_names(messages: Iterable[Message]) -> Mapping[str, str]:
    """Tool call id -> function name, so a ``tool`` message can say which call it answers."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.tool_calls:
            if call.id:
                names[call.id] = call.name
    return names
