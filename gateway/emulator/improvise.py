"""Answers to the gateway's tool and JSON instructions, without ``[[emulate:...]]`` hints.

The gateway writes tools and answer formats into the prompt as text (see
``gateway/engine/tools/prompting.py``): the tool definitions one JSON object a line between
``<tools>`` and ``</tools>``, the JSON Schema of a structured answer on the line after "It must
conform to this JSON Schema". A model would read them; the emulator reads them too and answers
as a cooperative model would: a ``<tool_call>`` with arguments valid for the tool's schema (when
a call is required, or the conversation speaks of what a tool does), or one JSON value valid for
the answer's schema, filled with plausible values. Once the rendered history holds a call (and
so its result), it answers in prose from that result.

Pure: the same prompt gives the same answer. A prompt without these instructions gets None.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
from typing import Any

from gateway.emulator.prose import sentences, whole_sentences

_DECODER = json.JSONDecoder()
_TOOLS_OPEN = "<tools>\n"
_TOOLS_CLOSE = "\n</tools>"
_CALLS_END = "Write nothing after your tool calls"
_FORCED = re.compile(r'You must call the function "([^"\n]+)" now')
_REQUIRED = "You must call at least one of these functions now"
_JSON_ASKED = re.compile(r"nswer with one JSON (?:value|object) and nothing else")
_NO_FENCES = "no explanations, no code fences."
_SCHEMA_LEAD = re.compile(r"It must conform to this JSON Schema[^\n]*:\n")
_MARKUP = re.compile(r"<[^<>\n]{1,40}>|\[/?INST\]|<<SYS>>|<</SYS>>")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_NAMES = re.compile(r"(?<=[a-z,] )[A-Z][a-z]+(?: [A-Z][a-z]+)*")  # not a sentence's first word
_MAX_DEPTH = 6
_RESULT_CHARS = 200


def improvise(prompt: str) -> str | None:
    """The answer a model following the gateway's instructions would give, or None."""
    asked_json = bool(_JSON_ASKED.search(prompt))
    tools = _tools(prompt)
    rng = random.Random(hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest())
    history = _conversation(prompt)
    if tools:
        if "<tool_call>" not in history:
            tool, relevant = _chosen_tool(prompt, tools, history)
            must = _FORCED.search(prompt) is not None or _REQUIRED in prompt
            if must or relevant:  # as a model would: call when asked about what a tool does
                return _call(tool, history, rng)
        elif not asked_json:
            return _from_result(prompt)
    if asked_json:
        schema = _schema(prompt)
        context = _words(history[-2000:])
        value = _instance(schema, rng, context, 0) if schema is not None else _object(rng, context)
        return json.dumps(value, ensure_ascii=False)
    return None


def _conversation(prompt: str) -> str:
    """The prompt after the instructions: the conversation they precede."""
    start = 0
    if (calls := prompt.find(_CALLS_END)) >= 0:  # that line, then the one on tool choice
        start = prompt.find("\n", prompt.find("\n", calls) + 1)
    if (fences := prompt.find(_NO_FENCES)) >= 0:
        start = max(start, fences + len(_NO_FENCES))
    if leads := list(_SCHEMA_LEAD.finditer(prompt)):
        with contextlib.suppress(ValueError):
            start = max(start, _DECODER.raw_decode(prompt, leads[-1].end())[1])
    return prompt[max(start, 0) :]


def _tools(prompt: str) -> list[dict[str, Any]]:
    """The tool definitions of the instructions (OpenAI's ``{"type": "function", ...}``)."""
    start = prompt.find(_TOOLS_OPEN)
    end = prompt.find(_TOOLS_CLOSE, start)
    if start < 0 or end < 0:
        return []
    found = []
    for line in prompt[start + len(_TOOLS_OPEN) : end].splitlines():
        try:
            definition = json.loads(line)
        except ValueError:
            continue
        function = definition.get("function") if isinstance(definition, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            found.append(function)
    return found


def _chosen_tool(
    prompt: str, tools: list[dict[str, Any]], history: str
) -> tuple[dict[str, Any], bool]:
    """The forced tool, else the one whose name and description share most words with the
    conversation (the first on a tie), and whether it shares any."""
    if forced := _FORCED.search(prompt):
        for tool in tools:
            if tool["name"] == forced.group(1):
                return tool, True
    asked = _meaningful(history)

    def overlap(tool: dict[str, Any]) -> int:
        return len(
            _meaningful(f"{tool['name'].replace('_', ' ')} {tool.get('description')}") & asked
        )

    best = max(tools, key=overlap)
    return best, overlap(best) > 0


def _meaningful(text: str) -> set[str]:
    """The lower-cased words of ``text`` that say something (four letters or more)."""
    return {w.lower() for w in _WORD.findall(text) if len(w) > 3} - _COMMON


def _call(tool: dict[str, Any], history: str, rng: random.Random) -> str:
    parameters = tool.get("parameters")
    schema = parameters if isinstance(parameters, dict) else {"type": "object"}
    arguments = _instance(schema, rng, _words(history), 0)
    if not isinstance(arguments, dict):
        arguments = {}
    payload = json.dumps({"name": tool["name"], "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def _from_result(prompt: str) -> str:
    """Prose from the last tool call's result, as the history shows it."""
    last = prompt.rfind("</tool_call>")
    call = prompt[prompt.rfind("<tool_call>", 0, last) : last]
    name = "the tool"
    with_name = re.search(r'"name":\s*"([^"]+)"', call)
    if with_name:
        name = with_name.group(1)
    result = " ".join(_MARKUP.sub(" ", prompt[last + len("</tool_call>") :]).split())
    for role in ("model", "assistant", "user", "tool"):  # what chat templates leave around
        result = result.removesuffix(f" {role}").removeprefix(f"{role} ").strip()
    result = result.removeprefix("Tool result:").strip()
    if len(result) > _RESULT_CHARS:
        result = result[:_RESULT_CHARS].rsplit(" ", 1)[0] + " ..."
    if not result:
        return f"{name} returned nothing, so I cannot say more than that."
    return f"Here is what {name} returned: {result}"


def _schema(prompt: str) -> Any:
    """The answer's JSON Schema (the JSON value after the lead-in line), or None."""
    leads = list(_SCHEMA_LEAD.finditer(prompt))
    if not leads:
        return None
    lead = leads[-1]
    if lead is None:
        return None
    try:
        value, _ = _DECODER.raw_decode(prompt, lead.end())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _words(text: str) -> list[str]:
    """Words of the conversation to fill strings with: capitalised names first."""
    clean = _MARKUP.sub(" ", text)
    names = [w for w in _NAMES.findall(clean) if w.lower() not in _COMMON]
    words = [w for w in _WORD.findall(clean) if len(w) > 3 and w.lower() not in _COMMON]
    return list(dict.fromkeys(names + words))


_COMMON = frozenset(
    _WORD.findall(
        "the this that with from what when where which there their have your about answer "
        "json value object nothing else function functions call tool tools must schema "
        "format user model assistant system please write give tell name three"
    )
)


def _object(rng: random.Random, context: list[str]) -> dict[str, Any]:
    """A JSON object for JSON mode without a schema."""
    return {"answer": whole_sentences(" ".join(context) or "json", rng.randint(1, 2))}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _instance(schema: Any, rng: random.Random, context: list[str], depth: int) -> Any:
    return _Filler(schema if isinstance(schema, dict) else {}, rng, context).value(schema, depth)


class _Filler:
    """Plausible values for a JSON Schema: every property given, enums and bounds kept."""

    def __init__(self, root: dict[str, Any], rng: random.Random, context: list[str]) -> None:
        self.root = root
        self.rng = rng
        self.context = context
        self.strings = 0  # strings filled so far: each takes the next word of the context

    def value(self, schema: Any, depth: int, name: str = "") -> Any:
        if not isinstance(schema, dict):
            return self._string({}, name)
        schema = _resolve(schema, self.root)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        for combined in ("anyOf", "oneOf", "allOf"):
            options = schema.get(combined)
            if isinstance(options, list) and options:
                usable = [
                    o for o in options if not (isinstance(o, dict) and o.get("type") == "null")
                ]
                if combined == "allOf":
                    merged: dict[str, Any] = {}
                    for part in options:
                        merged.update(_resolve(part, self.root) if isinstance(part, dict) else {})
                    return self.value(merged, depth, name)
                return self.value((usable or options)[0], depth, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = (
                "object" if "properties" in schema else "array" if "items" in schema else "string"
            )
        if depth >= _MAX_DEPTH and kind in ("object", "array"):
            return {} if kind == "object" else []
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            low = int(schema.get("minItems", 1))
            high = max(low, min(int(schema.get("maxItems", 3)), low + 2))
            count = self.rng.randint(low, high)
            item = schema.get("items", {})
            return [self.value(item, depth + 1, name) for _ in range(count)]
        if kind in ("integer", "number"):
            return self._number(schema, kind)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema, name)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return {}
        return {
            key: self.value(sub, depth + 1, key)
            for key, sub in properties.items()
            if isinstance(key, str)
        }

    def _number(self, schema: dict[str, Any], kind: str) -> int | float:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", max(low, 0) + 50))
        low, high = float(low), float(high)
        if "exclusiveMinimum" in schema and "minimum" not in schema:
            low += 1 if kind == "integer" else 0.01
        if "exclusiveMaximum" in schema and "maximum" not in schema:
            high -= 1 if kind == "integer" else 0.01
        if kind == "integer":
            import math

            first, last = math.ceil(low), math.floor(high)
            return self.rng.randint(first, max(first, last))
        return round(self.rng.uniform(low, max(low, high)), 2)

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2026-01-15T09:30:00Z"
        if fmt == "date":
            return "2026-01-15"
        if fmt == "time":
            return "09:30:00"
        if fmt == "email":
            return "someone@example.com"
        if fmt in ("uri", "url"):
            return "https://example.com/"
        if fmt == "uuid":
            return "3f2b8c1e-6a4d-4e8f-9b1a-2c5d7e9f0a1b"
        lowered = name.lower()
        if any(part in lowered for part in ("description", "summary", "text", "reason", "answer")):
            text = whole_sentences(name + " ".join(self.context), self.rng.randint(1, 2))
        elif self.context:
            text = self.context[self.strings % len(self.context)]
            self.strings += 1
        else:
            text = sentences(name or "value", 2).rstrip(".").lower()
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        while len(text) < low:
            text += " " + sentences(text, 4)
        if isinstance(high, int):
            text = text[:high]
        return text
