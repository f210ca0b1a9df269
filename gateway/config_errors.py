"""Config validation errors in the file's own words: ``keys[bob].upstream_token``, not ``keys.1``.

pydantic locates an error by indexes and speaks of the types it validates (tuples); an operator
reads names and YAML lists. Each error becomes one line naming the field by the entry's ``name``
where it has one, suggesting the closest valid name for an unknown field.
"""

from __future__ import annotations

import collections
import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError


def format_validation_error(error: ValidationError, data: Any, root: type[BaseModel]) -> str:
    """One line per problem, each naming the field as the config file spells it."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = field_path(loc, data) or "(top level)"
        if item["type"] == "extra_forbidden":
            message = "unknown field" + _suggestion(loc, root)
        else:
            message = _plain(item["msg"])
        lines.append(f"  {where}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def field_path(loc: Sequence[int | str], data: Any) -> str:
    """``("keys", 1, "upstream_token")`` -> ``keys[bob].upstream_token`` (the entry's name)."""
    text = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            text += f"[{name}]" if isinstance(name, str) and name else f"[{part}]"
            node = item
        else:
            text += f".{part}" if text else part
            node = node.get(part) if isinstance(node, dict) else None
    return text


def _plain(message: str) -> str:
    """YAML has lists, not tuples; pydantic's "Value error, " prefix says nothing."""
    message = message.removeprefix("Value error, ")
    return message.replace("a valid tuple", "a list").replace("tuple", "list")


def _suggestion(loc: Sequence[int | str], root: type[BaseModel]) -> str:
    fields = _fields_at(loc[:-1], root)
    if not fields or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], fields, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return " (known fields: " + ", ".join(sorted(fields)) + ")"


def _fields_at(loc: Sequence[int | str], root: type[BaseModel]) -> list[str]:
    """The field names of the settings model found at ``loc`` (list indexes skipped)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside ``X``, ``X | None`` or ``tuple[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _model_in(arg)) is not None:
                return found
    return None


def repeated(names: list[str]) -> str:
    """The names given more than once, quoted, for an error message ("'a', 'b'")."""
    counts = collections.Counter(names)
    return ", ".join(repr(name) for name, count in counts.items() if count > 1)


#: What tracing imports, and how to get it: from the checkout, or the exact packages (the
#: project is not on PyPI, where another project's "llm-gateway" is).
OTEL_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
OTEL_INSTALL = (
    "pip install -e '.[otel]' in the gateway's checkout, or pip install "
    "opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
)


def missing_modules(names: Sequence[str]) -> list[str]:
    """The dotted module names that cannot be imported, looked up without importing them.

    ``find_spec("a.b")`` imports ``a`` and raises when ``a`` itself is absent, so each parent
    is looked up first."""
    import importlib.util

    missing = []
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            try:
                found = importlib.util.find_spec(".".join(parts[:depth])) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(name)
                break
    return missing
