"""Which door's error shape answers a request, chosen by its path.

The error tree (:mod:`gateway.errors`) says what went wrong; each door says how its clients
read it: OpenAI's ``{"error": {...}}``, Anthropic's ``{"type": "error", ...}`` with its own
status table, Ollama's ``{"error": "..."}``. Answers written before any route runs (the
connection guard's 408/431/503, the header guard's 400) and the app's last-resort handlers
pick the shape here, by path prefix. The app fills the registry (:func:`gateway.app.error_shapes`);
``gateway.http`` knows no door. An :class:`ErrorShapes` is immutable and holds only
module-level functions, so it pickles into uvicorn's workers with the connection guard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from gateway.errors import GatewayError

#: A door's error shape: the error -> (HTTP status, JSON body).
ErrorShape = Callable[[GatewayError], tuple[int, Any]]


def openai_body(error: GatewayError) -> dict[str, Any]:
    """OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``: the OpenAI door's
    shape, and the gateway's own for every path no door claims (health, admin, metrics)."""
    return {
        "error": {
            "message": error.message,
            "type": error.kind,
            "param": error.param,
            "code": error.code,
        }
    }


def openai_shape(error: GatewayError) -> tuple[int, Any]:
    """OpenAI's shape, the answer of every path no door claims."""
    return error.status_code, openai_body(error)


@dataclass(frozen=True, slots=True)
class ErrorShapes:
    """Path prefix -> the door's shape; the longest matching prefix wins."""

    default: ErrorShape = openai_shape
    doors: tuple[tuple[str, ErrorShape], ...] = ()

    def with_door(self, prefix: str, shape: ErrorShape) -> ErrorShapes:
        """A registry where paths starting with ``prefix`` answer in ``shape``."""
        doors = sorted((*self.doors, (prefix, shape)), key=lambda door: len(door[0]), reverse=True)
        return ErrorShapes(self.default, tuple(doors))

    def shape(self, path: str) -> ErrorShape:
        for prefix, shape in self.doors:
            if path.startswith(prefix):
                return shape
        return self.default

    def render(self, error: GatewayError, path: str) -> tuple[int, bytes]:
        """The status and JSON body that answer ``error`` on ``path``."""
        status, body = self.shape(path)(error)
        return status, json.dumps(body).encode()

    def response(
        self, error: GatewayError, path: str, headers: dict[str, str] | None = None
    ) -> Response:
        status, body = self.render(error, path)
        return Response(
            body,
            status_code=status,
            media_type="application/json",
            headers={**(headers or {}), **error.headers},
        )
