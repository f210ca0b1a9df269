"""Request bodies: media type, size, JSON syntax, nesting depth and types, each a clear 4xx.

Only strict JSON gets through: UTF-8 text (a BOM is tolerated), no ``NaN``/``Infinity`` and
no number too large for a float, no lone surrogate in a string (``"\\ud800"`` parses but
cannot be encoded again, so it would break a log line, the ledger or the upstream request
later), no nesting deeper than the limit, and field types as declared without coercion
(``"stream": "yes"`` is refused rather than read as true).
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from starlette.requests import ClientDisconnect, Request

from gateway.errors import (
    BadRequest,
    ClientDisconnected,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from gateway.http.middleware import headers_of
from gateway.http.sse import dumps

#: Set in the request's ASGI state by the connection guard when it cut a body that came too
#: slowly (``gateway.http.connections``), so the access line says 408 rather than 499.
BODY_TIMED_OUT = "gateway.body_timed_out"

M = TypeVar("M", bound=BaseModel)


def check_content_type(value: str | None) -> None:
    """JSON or nothing: a missing Content-Type is tolerated (curl users forget it)."""
    if value is None or not value.strip():
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise UnsupportedMediaType(
        f"Unsupported Content-Type '{media[:80]}': send the body as application/json."
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    headers = headers_of(request)
    check_content_type(headers.get("content-type"))
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"The request body is larger than the limit of {max_bytes} bytes."
                )
            chunks.append(chunk)
    except ClientDisconnect:
        # An ordinary event (a client gave up, a proxy cut it): logged, not a traceback.
        if request.scope.get("state", {}).get(BODY_TIMED_OUT):
            raise RequestTimeout("The request body did not arrive in time.") from None
        raise ClientDisconnected("The client disconnected while sending the body.") from None
    return b"".join(chunks)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                "The JSON body holds a lone surrogate escape (such as \\ud800): "
                "strings must be valid Unicode."
            ) from None


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and string checks over a parsed value, without recursion (deep input is the
    attack). The top-level object is at depth 1, its values at depth 2, and so on."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"The JSON body is nested deeper than {max_depth} levels.")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise ValueError(f"the number {literal[:40]} is too large")
    return number


def parse_json(raw: bytes, max_depth: int) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object was expected.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8.") from None
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadRequest(f"The JSON body is nested deeper than {max_depth} levels.") from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    _check_tree(data, max_depth)
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
    """``data`` (from :func:`parse_json`) as ``model``, strictly: JSON types are not coerced.

    Validated as JSON rather than as Python objects, so strict mode still takes arrays for
    tuples and strings for enums, as a JSON body can only send them.
    """
    try:
        return model.model_validate_json(dumps(data), strict=True)
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


class LenientModel(BaseModel):
    """The base of every door's wire models: unknown fields are kept (clients send many, and
    the access line lists those ignored), and an explicit ``null`` reads like a missing field,
    as OpenAI and Anthropic both treat it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data
