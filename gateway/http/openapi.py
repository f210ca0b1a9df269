"""Builders shared by every door's OpenAPI fragment: a schema reference, a JSON body, the
error answers a route documents (each door in its own error shape)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def ref(name: str) -> dict[str, str]:
    """A reference to ``#/components/schemas/{name}``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``content`` map with one ``application/json`` entry."""
    return {"application/json": {"schema": schema}}


def error_answers(statuses: Mapping[str, str], schema: str, *codes: str) -> dict[str, Any]:
    """The ``responses`` entries of ``codes``: each status described by ``statuses``, its body
    the door's error schema ``schema``."""
    return {
        code: {"description": statuses[code], "content": json_body(ref(schema))} for code in codes
    }
