"""Request bodies: size, JSON syntax, nesting depth and types, each refused with a clear 4xx."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"The request body is larger than the limit of {max_bytes} bytes."
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, without recursion (deep input is the attack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(raw: bytes, max_depth: int) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object was expected.")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8.") from None
    except RecursionError:
        raise BadRequest(f"The JSON body is nested deeper than {max_depth} levels.") from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    if _depth(data, max_depth) > max_depth:
        raise BadRequest(f"The JSON body is nested deeper than {max_depth} levels.")
    return data


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Drop union-branch names pydantic adds to the location ("str", "list[...]", ...).
        loc = tuple(p for p in first["loc"] if isinstance(p, int) or not _is_type_name(p))
        where = _loc(loc) or None
        message = first["msg"]
        if where:
            message = f"Invalid value for '{where}': {message}"
        raise BadRequest(message, param=where) from None


def _is_type_name(part: str) -> bool:
    return (
        part in {"str", "int", "float", "bool", "none", "list", "dict"}
        or "[" in part
        or part[:1].isupper()
        or part.startswith(("function-", "literal["))
    )
