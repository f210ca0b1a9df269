"""Service-level faults: what the next submit or status requests should suffer.

A fault is a JSON object; each request of its kind consumes the oldest one (FIFO), except
a fault with ``"repeat": true``, which stays at the head until the queues are cleared.

    {"http": 503, "body": "..."}           that status code, the raw body (default: an HTML page)
    {"http": 429, "retry_after": 1}        ... with a Retry-After header
    {"not_json": true}                     200 with a body that is not JSON
    {"success_false": "message"}           200 {"success": false, "error": "message"}
    {"reset": true}                        the connection drops in the middle of the response
    {"missing": true}                      (status only) success with an empty ``jobs`` map
    {"ids": ["../x"]}                      (submit only) success with these job ids, no jobs made
    {"delay": 2.5}                         wait, then answer normally; combines with the above

This module only parses and queues; ``app.py`` turns a fault into a response.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

FaultKind = Literal["submit", "status"]
KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
_EFFECTS = ("http", "not_json", "success_false", "reset", "missing", "ids")
_KEYS = {*_EFFECTS, "body", "retry_after", "delay", "repeat"}


class FaultError(ValueError):
    """A fault description that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Fault:
    http: int | None = None
    body: str | None = None
    retry_after: float | None = None
    not_json: bool = False
    success_false: str | None = None
    reset: bool = False
    missing: bool = False
    ids: tuple[str, ...] | None = None
    delay: float = 0.0
    repeat: bool = False

    @classmethod
    def parse(cls, data: object, kind: FaultKind) -> Fault:
        """Validate one fault object for requests of ``kind``; raises :class:`FaultError`."""
        if not isinstance(data, dict):
            raise FaultError("a fault must be a JSON object")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise FaultError(f"unknown fault field(s): {', '.join(unknown)}")
        effects = [key for key in _EFFECTS if key in data and data[key] not in (False, None)]
        if len(effects) > 1:
            raise FaultError(f"one effect per fault, got {', '.join(effects)}")
        if not effects and "delay" not in data:
            raise FaultError(f"a fault needs one of {', '.join(_EFFECTS)} or delay")
        if "missing" in effects and kind != "status":
            raise FaultError("'missing' applies to status requests only")
        if "ids" in effects and kind != "submit":
            raise FaultError("'ids' applies to submit requests only")
        fault = cls(
            http=_status_code(data.get("http")),
            body=_optional_str(data, "body"),
            retry_after=_optional_number(data, "retry_after"),
            not_json=_flag(data, "not_json"),
            success_false=_optional_str(data, "success_false"),
            reset=_flag(data, "reset"),
            missing=_flag(data, "missing"),
            ids=_optional_ids(data),
            delay=_optional_number(data, "delay") or 0.0,
            repeat=_flag(data, "repeat"),
        )
        if fault.http is None and (fault.body is not None or fault.retry_after is not None):
            raise FaultError("'body' and 'retry_after' go with 'http'")
        return fault

    def to_dict(self) -> dict[str, Any]:
        """The fault as given, without its defaults."""
        defaults = Fault()
        return {k: v for k, v in asdict(self).items() if v != getattr(defaults, k)}


class FaultQueues:
    """One FIFO of faults per request kind."""

    def __init__(self) -> None:
        self._queues: dict[FaultKind, deque[Fault]] = {kind: deque() for kind in KINDS}

    def add(self, kind: FaultKind, faults: list[Fault]) -> None:
        self._queues[kind].extend(faults)

    def take(self, kind: FaultKind) -> Fault | None:
        """The fault the next request of ``kind`` suffers, if any."""
        queue = self._queues[kind]
        if not queue:
            return None
        return queue[0] if queue[0].repeat else queue.popleft()

    def clear(self) -> None:
        for queue in self._queues.values():
            queue.clear()

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {kind: [fault.to_dict() for fault in queue] for kind, queue in self._queues.items()}


def parse_faults(data: object) -> dict[FaultKind, list[Fault]]:
    """``{"submit": [FAULT, ...], "status": [FAULT, ...]}`` (a single FAULT object is fine too)."""
    if not isinstance(data, dict):
        raise FaultError('expected {"submit": [...], "status": [...]}')
    unknown = sorted(set(data) - set(KINDS))
    if unknown:
        raise FaultError(f"unknown request kind(s): {', '.join(unknown)}")
    parsed: dict[FaultKind, list[Fault]] = {}
    for kind in KINDS:
        items = data.get(kind, [])
        items = items if isinstance(items, list) else [items]
        parsed[kind] = [Fault.parse(item, kind) for item in items]
    return parsed


def _status_code(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise FaultError("'http' must be a status code between 200 and 599")
    return value


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise FaultError(f"'{key}' must be a string")
    return value


def _optional_ids(data: dict[str, Any]) -> tuple[str, ...] | None:
    value = data.get("ids")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FaultError("'ids' must be a list of strings")
    return tuple(value)


def _optional_number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise FaultError(f"'{key}' must be a number >= 0")
    return float(value)


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise FaultError(f"'{key}' must be true or false")
    return value
