"""Ollama's ``format`` (a JSON schema for the answer) counts in the per-request schema budget
that the front desk checks before planning, like the other doors' tools and formats."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import LimitSettings
from gateway.errors import BadRequest
from gateway.serving.web import bounded


def _format(properties: int) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(properties)},
    }


def test_a_format_over_the_budget_is_refused_before_planning() -> None:
    body = {"model": "gemma-2b", "messages": [], "format": _format(200)}
    with pytest.raises(BadRequest) as refused:
        asyncio.run(bounded(body, LimitSettings(max_schema_nodes=100)))
    assert refused.value.code == "schemas_too_large"


def test_a_format_within_the_budget_and_json_mode_pass() -> None:
    limits = LimitSettings(max_schema_nodes=100)
    asyncio.run(bounded({"model": "m", "format": _format(10)}, limits))
    asyncio.run(bounded({"model": "m", "format": "json"}, limits))
