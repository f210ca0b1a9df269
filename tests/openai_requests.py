"""Valid requests built from OpenAI's own request schemas, one optional field at a time.

For a request schema (``CreateChatCompletionRequest``, ...) :func:`field_variants` yields, for
every optional top-level field, each valid form the spec gives it: every value of an enum,
both booleans, the smallest valid instance of every branch of an ``anyOf``/``oneOf``. Values
are deterministic (no random search), so a failure names the same request every run.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterator
from typing import Any

import yaml

from tests.openai_spec import _path

#: At most this many forms per field (enums of model names are long).
MAX_VARIANTS = 40


@functools.cache
def schemas() -> dict[str, Any]:
    """The spec's raw ``components.schemas`` (OpenAPI, not converted), cached as JSON."""
    path = _path()
    assert path is not None, "OpenAI's OpenAPI document is not available"
    stat = path.stat()
    cached = tempfile.gettempdir() + f"/openai-spec-raw-{stat.st_size}-{stat.st_mtime_ns}.json"
    try:
        with open(cached) as handle:
            loaded: dict[str, Any] = json.load(handle)
            return loaded
    except (OSError, ValueError):
        pass
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw: dict[str, Any] = yaml.load(path.read_text(), Loader=loader)["components"]["schemas"]
    with open(cached, "w") as handle:
        json.dump(raw, handle, default=str)
    return raw


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schemas()[node["$ref"].rsplit("/", 1)[-1]]
    return node


def flatten(node: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """An object schema's properties and required names, ``allOf`` parts merged."""
    node = resolve(node)
    properties: dict[str, Any] = dict(node.get("properties") or {})
    required: list[str] = list(node.get("required") or [])
    for part in node.get("allOf") or []:
        more, needed = flatten(part)
        properties.update(more)
        required += needed
    return properties, required


def _branches(node: dict[str, Any]) -> list[dict[str, Any]]:
    branches = node.get("anyOf") or node.get("oneOf") or []
    return [b for b in branches if resolve(b).get("type") != "null"]


def _type(node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and ("properties" in node or "allOf" in node):
        kind = "object"
    return kind


def minimal(node: dict[str, Any], depth: int = 0) -> Any:
    """The smallest valid instance (one item in arrays, required properties only)."""
    node = resolve(node)
    if depth > 12:
        return None
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return next(v for v in node["enum"] if v is not None)
    branches = _branches(node)
    if branches:
        return minimal(branches[0], depth + 1)
    kind = _type(node)
    if kind == "object":
        properties, required = flatten(node)
        return {name: minimal(properties.get(name, {}), depth + 1) for name in required}
    if kind == "array":
        count = max(node.get("minItems", 1), 1)
        return [minimal(node.get("items") or {}, depth + 1) for _ in range(count)]
    if kind == "string":
        return "x" * max(node.get("minLength", 1), 1)
    if kind in ("integer", "number"):
        low, high = node.get("minimum"), node.get("maximum")
        if kind == "integer":  # the least meaningful count: 1, within the bounds
            value = max(low, 1) if low is not None else 1
            return min(value, high) if high is not None else value
        if low is not None and high is not None:
            return float((low + high) / 2)
        return float(low if low is not None else min(1, high) if high is not None else 1)
    if kind == "boolean":
        return True
    return {}


def variants(node: dict[str, Any], depth: int = 0) -> list[Any]:
    """Each valid form of ``node``, as listed in the module's docstring."""
    node = resolve(node)
    if node.get("enum"):
        return [v for v in node["enum"] if v is not None]
    branches = _branches(node)
    if branches and depth < 5:
        found: list[Any] = []
        for branch in branches:
            for value in variants(branch, depth + 1):
                if value not in found:
                    found.append(value)
        return found
    if _type(node) == "boolean":
        return [True, False]
    if _type(node) == "array" and depth < 5:
        return [[value] for value in variants(node.get("items") or {}, depth + 1)]
    return [minimal(node)]


def field_variants(name: str, skip: frozenset[str] = frozenset()) -> Iterator[tuple[str, Any]]:
    """(field, value) for every optional field of schema ``name`` and each of its forms."""
    properties, required = flatten(schemas()[name])
    for field, node in properties.items():
        if field in required or field in skip or resolve(node).get("deprecated"):
            continue
        for value in variants(node)[:MAX_VARIANTS]:
            yield field, value
