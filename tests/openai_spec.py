"""OpenAI's own OpenAPI document as JSON Schema validators, loaded once per test session.

The document (``../shared/openai-openapi/openapi.yaml``) mixes OpenAPI 3.0 and 3.1: schemas
marked ``nullable: true`` become "that or null", and a ``oneOf`` with a ``discriminator``
becomes "the branch the discriminating property names" (a plain ``oneOf`` would fail whenever
two branches happen to accept the same object). Everything else (required fields, enums,
types) is checked as written.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

SPEC = Path(__file__).resolve().parents[1] / "../shared/openai-openapi/openapi.yaml"
_CANDIDATES = (SPEC, Path("/work/shared/openai-openapi/openapi.yaml"))


def _path() -> Path | None:
    return next((p for p in _CANDIDATES if p.exists()), None)


def _discriminated(node: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any] | None:
    """``oneOf`` + ``discriminator`` as if/then on the discriminating property."""
    prop = node["discriminator"]["propertyName"]
    branches = node.get("oneOf") or node.get("anyOf") or []
    by_value: dict[Any, list[str]] = {}
    for branch in branches:
        ref = branch.get("$ref")
        if not isinstance(ref, str):
            return None
        values = _values(schemas.get(ref.rsplit("/", 1)[-1], {}), prop, schemas)
        if not values:
            return None
        for value in values:
            by_value.setdefault(value, []).append(ref)
    # Several branches may share a value (input and output messages): any of them will do.
    rules = [
        {
            "if": {"properties": {prop: {"const": value}}, "required": [prop]},
            "then": {"anyOf": [{"$ref": ref} for ref in refs]},
        }
        for value, refs in by_value.items()
    ]
    known = sorted(by_value, key=str)
    return {
        "type": "object",
        "required": [prop],
        "properties": {prop: {"enum": known}},
        "allOf": rules,
    }


def _values(schema: dict[str, Any], prop: str, schemas: dict[str, Any]) -> list[Any]:
    if "$ref" in schema:
        return _values(schemas.get(schema["$ref"].rsplit("/", 1)[-1], {}), prop, schemas)
    field = (schema.get("properties") or {}).get(prop) or {}
    if "enum" in field:
        return list(field["enum"])
    if "const" in field:
        return [field["const"]]
    for part in schema.get("allOf") or []:
        found = _values(part, prop, schemas)
        if found:
            return found
    return []


def _convert(node: Any, schemas: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(v, schemas) for v in node]
    if not isinstance(node, dict):
        return node
    if "discriminator" in node and ("oneOf" in node or "anyOf" in node):
        replaced = _discriminated(node, schemas)
        if replaced is not None:
            return replaced
    out = {k: _convert(v, schemas) for k, v in node.items() if k != "discriminator"}
    if out.pop("nullable", False):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _components() -> dict[str, Any]:
    path = _path()
    if path is None:
        pytest.skip("OpenAI's OpenAPI document is not available")
    # Parsing 3 MB of YAML takes seconds; its converted schemas are kept as JSON beside it.
    stat = path.stat()
    cached = Path(tempfile.gettempdir()) / f"openai-spec-{stat.st_size}-{stat.st_mtime_ns}.json"
    if cached.exists():
        loaded: dict[str, Any] = json.loads(cached.read_text())
        return loaded
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = yaml.load(path.read_text(), Loader=loader)
    schemas = document["components"]["schemas"]
    converted = {"schemas": _convert(schemas, schemas)}
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(converted, default=str))  # dates in examples
    partial.replace(cached)  # atomic: parallel sessions never read half a file
    return converted


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``components.schemas[name]``."""
    schema = {"components": _components(), "$ref": f"#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema)


def check(name: str, instance: Any) -> None:
    """Raise AssertionError listing every way ``instance`` breaks the schema ``name``."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise AssertionError(f"not a valid {name}:\n" + "\n".join(lines[:20]))


def check_event(event: dict[str, Any]) -> None:
    """A Responses stream event against the schema its ``type`` names."""
    check("ResponseStreamEvent", event)
