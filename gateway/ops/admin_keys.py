"""``/admin`` keys, teams, audit and whoami (the admin API contract of issue 16).

Reads are answered from the in-memory registry (a listing never queries the database, however
many keys there are); writes go through :class:`~gateway.keys.admin.KeyAdmin`. Only the
creation and rotation answers carry a secret.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import KeySettings
from gateway.errors import BadRequest, GatewayError, NotFound, ServiceUnavailable
from gateway.http.bodies import parse_json, read_body, validate
from gateway.http.common import error_response
from gateway.keys.access import AdminIdentity
from gateway.keys.model import (
    LIMIT_FIELDS,
    KeyChange,
    KeyCreate,
    Rotation,
    TeamChange,
    TeamCreate,
    iso,
    key_view,
    team_view,
)
from gateway.runtime import Runtime, runtime

logger = logging.getLogger("gateway.keys")

Handler = Callable[[Runtime, AdminIdentity, Request], Awaitable[Response]]

MAX_PAGE = 1000


def authorize(rt: Runtime, request: Request, *, write: bool) -> AdminIdentity:
    """The admin calling, or the refusal (see :class:`~gateway.keys.access.AdminKeys`)."""

    def is_gateway_key(headers: Any) -> bool:
        try:
            rt.keys.authenticate(headers)
        except GatewayError:
            return False
        return True

    return rt.key_service.admin_keys.authorize(
        request.headers, write=write, is_gateway_key=is_gateway_key
    )


def admin(*, write: bool) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            rt = runtime(request)
            try:
                identity = authorize(rt, request, write=write)
                if write and not rt.key_service.enabled:
                    raise NotFound("Database keys are off (key_store.enabled is false).")
                if write:
                    await rt.key_service.ensure_open()
                return await handler(rt, identity, request)
            except GatewayError as error:
                return error_response(error)
            except Exception as exc:  # the database refused or went away mid-change
                logger.warning("admin %s failed: %s: %s", request.url.path, type(exc).__name__, exc)
                return error_response(_database_down(exc))

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


def _database_down(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The key database cannot be reached ({type(exc).__name__}); nothing was changed.",
        code="keys_database_unavailable",
        headers={"retry-after": "1"},
    )


async def _body(rt: Runtime, request: Request) -> dict[str, Any]:
    raw = await read_body(request, rt.settings.limits.max_body_bytes)
    if not raw.strip():
        return {}
    return parse_json(raw, rt.settings.limits.max_json_depth)


def config_key_view(rt: Runtime, key: KeySettings) -> dict[str, Any]:
    """A config key as the admin API shows it: read-only, no secret or token."""
    return {
        "object": "gateway.key",
        "name": key.name,
        "source": "config",
        "account": key.account or rt.account(key),
        "team": key.team,
        "models": list(key.models) if key.models is not None else None,
        **{name: getattr(key, name) for name in LIMIT_FIELDS},
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "metadata": {},
        "weight": key.weight,
        "priority": key.priority,
        "created_at": None,
        "updated_at": None,
        "revoked_at": None,
        "disabled": key.disabled,
        "previous_secret_valid_until": None,
    }


def _views(rt: Runtime, after: str | None) -> Iterator[dict[str, Any]]:
    """Every key, config's and database's, in name order after ``after``."""
    registry = rt.key_service.registry
    config = sorted((k.name, k) for k in rt.settings.keys if after is None or k.name > after)
    names = heapq.merge(
        ((name, None) for name in registry.names_after(after)),
        ((name, key) for name, key in config),
        key=lambda item: item[0],
    )
    for name, key in names:
        if key is not None:
            yield config_key_view(rt, key)
        else:
            record = registry.record(name)
            if record is not None:
                yield key_view(record)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer.", param=name) from None
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}.", param=name)
    return value


@admin(write=False)
async def whoami(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    """``GET /admin/whoami``: the admin key's name and role."""
    return JSONResponse({"name": who.name, "role": who.role})


@admin(write=False)
async def list_keys(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    """``GET /admin/keys``: a page of keys, filtered, in name order."""
    query = request.query_params
    limit = _int(request, "limit", 50, 1, MAX_PAGE)
    team, account, q = query.get("team"), query.get("account"), query.get("q")
    revoked = query.get("include_revoked", "false").lower() in ("1", "true", "yes")
    page: list[dict[str, Any]] = []
    has_more = False
    for view in _views(rt, query.get("after") or None):
        if (
            (team is not None and view["team"] != team)
            or (account is not None and view["account"] != account)
            or (q and q.lower() not in view["name"].lower())
            or (not revoked and view["revoked_at"] is not None)
        ):
            continue
        if len(page) == limit:
            has_more = True
            break
        page.append(view)
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "has_more": has_more,
            "next_after": page[-1]["name"] if has_more else None,
        }
    )


def _find_view(rt: Runtime, name: str) -> dict[str, Any]:
    record = rt.key_service.registry.record(name)
    if record is not None:
        return key_view(record)
    for key in rt.settings.keys:
        if key.name == name:
            return config_key_view(rt, key)
    raise NotFound(f"No key named {name!r}.", code="key_not_found")


@admin(write=False)
async def get_key(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    return JSONResponse(_find_view(rt, request.path_params["name"]))


@admin(write=True)
async def create_key(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    body = validate(KeyCreate, await _body(rt, request))
    record, secret = await rt.key_service.admin.create_key(body, who.actor)
    return JSONResponse({"key": key_view(record), "secret": secret}, status_code=201)


@admin(write=True)
async def update_key(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    body = validate(KeyChange, await _body(rt, request))
    record = await rt.key_service.admin.update_key(request.path_params["name"], body, who.actor)
    return JSONResponse(key_view(record))


@admin(write=True)
async def rotate_key(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    body = validate(Rotation, await _body(rt, request))
    name = request.path_params["name"]
    record, secret = await rt.key_service.admin.rotate_key(name, body, who.actor)
    return JSONResponse({"key": key_view(record), "secret": secret})


@admin(write=True)
async def revoke_key(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    record = await rt.key_service.admin.revoke_key(request.path_params["name"], who.actor)
    return JSONResponse(key_view(record))


@admin(write=False)
async def list_teams(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    teams = rt.key_service.registry.teams()
    return JSONResponse({"object": "list", "data": [team_view(t) for t in teams]})


@admin(write=False)
async def get_team(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    name = request.path_params["name"]
    team = rt.key_service.registry.team(name)
    if team is None:
        raise NotFound(f"No team named {name!r}.", code="team_not_found")
    return JSONResponse(team_view(team))


@admin(write=True)
async def create_team(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    body = validate(TeamCreate, await _body(rt, request))
    team = await rt.key_service.admin.create_team(body, who.actor)
    return JSONResponse(team_view(team), status_code=201)


@admin(write=True)
async def update_team(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    body = validate(TeamChange, await _body(rt, request))
    team = await rt.key_service.admin.update_team(request.path_params["name"], body, who.actor)
    return JSONResponse(team_view(team))


@admin(write=True)
async def delete_team(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    team = await rt.key_service.admin.delete_team(request.path_params["name"], who.actor)
    return JSONResponse({**team_view(team), "deleted": True})


@admin(write=False)
async def audit(rt: Runtime, who: AdminIdentity, request: Request) -> Response:
    """``GET /admin/audit``: the newest changes first; ``before`` is an entry's id."""
    limit = _int(request, "limit", 50, 1, MAX_PAGE)
    before = request.query_params.get("before")
    cursor = _int(request, "before", 0, 1, 2**62) if before else None
    await rt.key_service.ensure_open()
    entries = await rt.key_service.admin.store.audit(limit, cursor)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": e.id,
                    "at": iso(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "before": e.before,
                    "after": e.after,
                }
                for e in entries
            ],
        }
    )


ROUTES = [
    Route("/admin/whoami", whoami, methods=["GET"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys/{name}", get_key, methods=["GET"]),
    Route("/admin/keys/{name}", update_key, methods=["PATCH"]),
    Route("/admin/keys/{name}", revoke_key, methods=["DELETE"]),
    Route("/admin/keys/{name}/rotate", rotate_key, methods=["POST"]),
    Route("/admin/teams", list_teams, methods=["GET"]),
    Route("/admin/teams", create_team, methods=["POST"]),
    Route("/admin/teams/{name}", get_team, methods=["GET"]),
    Route("/admin/teams/{name}", update_team, methods=["PATCH"]),
    Route("/admin/teams/{name}", delete_team, methods=["DELETE"]),
    Route("/admin/audit", audit, methods=["GET"]),
]
