"""Operator endpoints (admin key) and a key's view of its own usage."""

from __future__ import annotations

import hashlib
import hmac
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import bearer_token
from gateway.config import ConfigError
from gateway.errors import AuthenticationFailed, BadRequest, GatewayError, NotFound
from gateway.http.common import error_response, runtime
from gateway.ledger import parse_time_range, rows_to_json
from gateway.runtime import Runtime

admin_log = logging.getLogger("gateway.admin")


def _require_admin(rt: Runtime, request: Request) -> None:
    admin = rt.settings.admin
    expected = admin.key_sha256 or (
        hashlib.sha256(admin.key.encode()).hexdigest() if admin.key else None
    )
    if expected is None:
        raise NotFound("The admin endpoints are off: no admin key is configured.")
    presented = bearer_token(request.headers) or ""
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()
    if not hmac.compare_digest(digest, expected):
        raise AuthenticationFailed("This endpoint needs the admin key.")


async def _usage_answer(rt: Runtime, request: Request, key_name: str | None) -> Response:
    query = request.query_params
    try:
        since, until = parse_time_range(query.get("since"), query.get("until"))
    except ValueError as exc:
        raise BadRequest(str(exc), param="since") from None
    rows = await rt.ledger.report(since, until, key_name)
    return JSONResponse(
        {
            "object": "usage_report",
            "since": since.isoformat(),
            "until": until.isoformat(),
            "data": rows_to_json(rows),
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
    """``GET /v1/usage``: the calling key's usage by model."""
    rt = runtime(request)
    try:
        key = rt.keys.authenticate(request.headers)
        return await _usage_answer(rt, request, key.name)
    except GatewayError as error:
        return error_response(error)


async def admin_reload(request: Request) -> Response:
    rt = runtime(request)
    try:
        _require_admin(rt, request)
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
