"""Models in Anthropic's list shape, for clients that send ``anthropic-version``.

``{"data": [{"type": "model", id, display_name, created_at, lifecycle}], has_more, first_id,
last_id}``,
paged with ``limit``, ``after_id`` and ``before_id`` as Anthropic's API pages them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.config import ModelSettings
from gateway.errors import BadRequest

#: A fixed date: the config has no creation times, so answers stay stable.
CREATED_AT = "2024-05-06T00:00:00Z"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def wants_anthropic(headers: Mapping[str, str]) -> bool:
    """The anthropic SDKs and Claude Code send ``anthropic-version`` on every request."""
    return "anthropic-version" in headers


def model_object(name: str, model: ModelSettings) -> dict[str, Any]:
    display = model.description or (name if name == model.name else f"{name} ({model.name})")
    out: dict[str, Any] = {
        "type": "model",
        "id": name,
        "display_name": display,
        "created_at": CREATED_AT,
        "lifecycle": "active",
    }
    if model.context_window is not None:
        out["max_input_tokens"] = model.context_window
    if model.max_tokens is not None:
        out["max_tokens"] = model.max_tokens
    return out


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return limit


def model_page(
    entries: Sequence[tuple[str, ModelSettings]], query: Mapping[str, str]
) -> dict[str, Any]:
    """One page of ``entries`` (name, model), in order."""
    limit = _limit(query)
    names = [name for name, _ in entries]
    start, stop = 0, len(entries)
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None:
        start = names.index(after) + 1 if after in names else len(names)
        stop = min(len(entries), start + limit)
    elif before is not None:
        stop = names.index(before) if before in names else 0
        start = max(0, stop - limit)
    else:
        stop = min(len(entries), limit)
    data = [model_object(name, model) for name, model in entries[start:stop]]
    more = stop < len(entries) if before is None else start > 0
    return {
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
