"""Operator endpoints (admin key) and a key's view of its own usage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.admin.keys import authorize
from gateway.config import ConfigError, KeySettings
from gateway.errors import BadRequest, GatewayError
from gateway.http.common import error_response
from gateway.ledger import parse_time_range, rows_to_json
from gateway.ledger.record import UsageRow
from gateway.runtime import Runtime
from gateway.state import runtime

GROUPINGS = ("key", "team", "model")
admin_log = logging.getLogger("gateway.admin")


def _require_admin(rt: Runtime, request: Request, *, write: bool = False) -> None:
    authorize(rt, request, write=write)


def team_of(rt: Runtime, key_name: str) -> str | None:
    """The team a key belongs to now (usage is grouped by today's membership)."""
    key = rt.key_service.registry.settings(key_name)
    if key is None:
        record = rt.key_service.registry.record(key_name)
        if record is not None:
            return record.team
        key = rt.keys.by_name(key_name)
    return key.team if key is not None else None


def regroup(rows: list[UsageRow], group: Callable[[UsageRow], tuple[str, str]]) -> list[UsageRow]:
    """Add rows up under new (key_name, model) labels."""
    sums: dict[tuple[str, str], list[UsageRow]] = {}
    for row in rows:
        sums.setdefault(group(row), []).append(row)
    out = []
    for (label, model), part in sorted(sums.items()):
        requests = sum(r.requests for r in part)
        out.append(
            UsageRow(
                key_name=label,
                model=model,
                requests=requests,
                errors=sum(r.errors for r in part),
                prompt_tokens=sum(r.prompt_tokens for r in part),
                completion_tokens=sum(r.completion_tokens for r in part),
                total_tokens=sum(r.total_tokens for r in part),
                avg_duration_ms=(
                    sum(r.avg_duration_ms * r.requests for r in part) / requests if requests else 0
                ),
            )
        )
    return out


def key_limits(key: KeySettings) -> dict[str, Any]:
    """What a key may use: its own limits, shown to the key itself (never its secrets)."""
    return {
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_concurrent": key.max_concurrent,
        "daily_tokens": key.daily_tokens,
        "monthly_tokens": key.monthly_tokens,
        "expires_at": None if key.expires_at is None else key.expires_at.isoformat(),
        "models": None if key.models is None else list(key.models),
    }


def require_admin_reader(rt: Runtime, request: Request) -> None:
    """Any admin key: for routes that only read (the live view)."""
    _require_admin(rt, request)


async def _usage_answer(
    rt: Runtime, request: Request, key_name: str | None, extra: dict[str, Any] | None = None
) -> Response:
    query = request.query_params
    try:
        since, until = parse_time_range(query.get("since"), query.get("until"))
    except ValueError as exc:
        raise BadRequest(str(exc), param="since") from None
    group_by = query.get("group_by") or "key"
    if group_by not in GROUPINGS:
        raise BadRequest(f"'group_by' must be one of {', '.join(GROUPINGS)}.", param="group_by")
    rows = await rt.ledger.report(since, until, key_name)
    team = query.get("team")
    if team is not None:
        rows = [r for r in rows if team_of(rt, r.key_name) == team]
    data = rows_to_json(rows)
    if group_by == "team":
        data = rows_to_json(regroup(rows, lambda r: (team_of(rt, r.key_name) or "", r.model)))
        for item in data:
            item["team"] = item.pop("key_name") or None
    elif group_by == "model":
        data = rows_to_json(regroup(rows, lambda r: ("", r.model)))
        for item in data:
            del item["key_name"]
    return JSONResponse(
        {
            "object": "usage_report",
            "since": since.isoformat(),
            "until": until.isoformat(),
            "group_by": group_by,
            "data": data,
            **(extra or {}),
        }
    )


async def admin_usage(request: Request) -> Response:
    rt = runtime(request)
    try:
        _require_admin(rt, request)
        return await _usage_answer(rt, request, request.query_params.get("key"))
    except GatewayError as error:
        return error_response(error)


async def own_usage(request: Request) -> Response:
    """``GET /v1/usage``: the calling key's usage by model, and its limits (for the console)."""
    rt = runtime(request)
    try:
        key = rt.keys.authenticate(request.headers)
        return await _usage_answer(rt, request, key.name, {"limits": key_limits(key)})
    except GatewayError as error:
        return error_response(error)


async def admin_reload(request: Request) -> Response:
    rt = runtime(request)
    try:
        _require_admin(rt, request, write=True)
        try:
            changes = rt.reload()
        except ConfigError as exc:
            admin_log.error(
                "config reload (POST /admin/reload) failed; keeping the current config: %s", exc
            )
            raise BadRequest(f"The config was not reloaded: {exc}", code="invalid_config") from None
    except GatewayError as error:
        return error_response(error)
    return JSONResponse({"reloaded": True, **changes})
