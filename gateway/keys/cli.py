"""``gateway keys ...`` and ``gateway teams ...``: the admin operations on the database directly.

For scripts and for a gateway that is down. Changes are audited as ``cli:<user>`` and announced
on Redis (when configured) so running replicas apply them at once; they also poll. A secret is
printed once, by ``create`` and ``rotate``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.config import CONFIG_ENV, ConfigError, Settings, load_settings
from gateway.errors import GatewayError
from gateway.keys.admin import KeyAdmin, parse_body
from gateway.keys.model import (
    LIMIT_FIELDS,
    KeyChange,
    KeyCreate,
    Rotation,
    TeamChange,
    TeamCreate,
    key_view,
    team_view,
)
from gateway.keys.service import open_store
from gateway.keys.watcher import redis_channel

Operation = Callable[[KeyAdmin, argparse.Namespace], Awaitable[Any]]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _fields(args: argparse.Namespace, *, key: bool) -> dict[str, Any]:
    """The options given on the command line, as an admin request body."""
    body: dict[str, Any] = {}
    for name in (*LIMIT_FIELDS, "weight", "priority"):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = None if value == "none" else value
    if args.models is not None:
        body["models"] = None if args.models == "all" else args.models.split(",")
    if args.metadata is not None:
        body["metadata"] = json.loads(args.metadata)
    if key:
        for name in ("account", "team", "expires_at"):
            value = getattr(args, name, None)
            if value is not None:
                body[name] = None if value == "none" else value
        if args.disabled is not None:
            body["disabled"] = args.disabled
    return body


def _limit(text: str) -> int | str:
    return "none" if text == "none" else int(text)


def _add_fields(parser: argparse.ArgumentParser, *, key: bool) -> None:
    for name in LIMIT_FIELDS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=_limit,
            help="a number, or 'none' to clear",
        )
    parser.add_argument("--models", help="comma-separated model names, or 'all'")
    parser.add_argument("--weight", type=float, help="fair-share weight (default 1)")
    parser.add_argument("--priority", type=int, help="fair-share priority class (default 0)")
    parser.add_argument("--metadata", help="a JSON object")
    if key:
        parser.add_argument("--account", help="upstream account name (default: the first)")
        parser.add_argument("--team", help="team name, or 'none'")
        parser.add_argument("--expires-at", dest="expires_at", help="ISO 8601 time, or 'none'")
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--disable", dest="disabled", action="store_true", default=None)
        state.add_argument("--enable", dest="disabled", action="store_false")


async def _announce(settings: Settings) -> None:
    if not settings.redis.url:
        return
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis.url, socket_timeout=2.0)
    try:
        await client.publish(redis_channel(settings.redis.prefix), "cli")
    except Exception as exc:  # replicas still poll
        print(f"gateway: could not announce the change on Redis: {exc}", file=sys.stderr)
    finally:
        await client.aclose()


def require_config(path: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The config file a database command works on; none given is refused, not the demo.

    Without a file the settings are the demo's, and the keys would go to a fresh
    ``gateway-usage.db`` in the current directory that no gateway reads.
    """
    env = os.environ if environ is None else environ
    chosen = path or env.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(
            f"which gateway? give --config FILE (or set ${CONFIG_ENV}): the keys, teams and "
            "usage live in the database of its ledger.url. The demo's (python3 dev.py serve) "
            "are managed in its console or /admin with the demo admin key it prints"
        )
    return chosen


def _run(args: argparse.Namespace, operation: Operation, *, writes: bool) -> int:
    try:
        settings = load_settings(require_config(args.config))
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    store = open_store(settings)
    names = [m.name for m in settings.models] + [a for m in settings.models for a in m.aliases]
    admin = KeyAdmin(settings, store, model_names=names)

    async def run() -> Any:
        await store.open()
        try:
            result = await operation(admin, args)
        finally:
            await store.close()
        if writes:
            await _announce(settings)
        return result

    try:
        result = asyncio.run(run())
    except GatewayError as error:
        print(f"gateway: {error.message}", file=sys.stderr)
        return 1
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the database is down or refuses us: say so, no traceback
        print(f"gateway: cannot use the key database: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


async def _create(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    body = parse_body(KeyCreate, {"name": args.name, **_fields(args, key=True)})
    record, secret = await admin.create_key(body, _actor())
    return {"key": key_view(record), "secret": secret}


async def _list(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    records = sorted(await admin.store.all_keys(), key=lambda r: r.name)
    out = []
    for record in records:
        if record.revoked_at is not None and not args.include_revoked:
            continue
        if args.team is not None and record.team != args.team:
            continue
        if args.account is not None and record.account != args.account:
            continue
        if args.q and args.q.lower() not in record.name.lower():
            continue
        out.append(key_view(record))
    return out


async def _show(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    record = await admin.store.get_key(args.name)
    if record is None:
        raise ValueError(f"no database key named {args.name!r}")
    return key_view(record)


async def _update(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    body = parse_body(KeyChange, _fields(args, key=True))
    return key_view(await admin.update_key(args.name, body, _actor()))


async def _rotate(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    body = parse_body(Rotation, {"grace_seconds": args.grace_seconds})
    record, secret = await admin.rotate_key(args.name, body, _actor())
    return {"key": key_view(record), "secret": secret}


async def _revoke(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    return key_view(await admin.revoke_key(args.name, _actor()))


async def _team_create(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    body = parse_body(TeamCreate, {"name": args.name, **_fields(args, key=False)})
    return team_view(await admin.create_team(body, _actor()))


async def _team_list(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    teams = (await admin.store.changes(0)).teams
    return [team_view(t) for t in sorted(teams, key=lambda t: t.name) if t.deleted_at is None]


async def _team_show(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    team = await admin.store.get_team(args.name)
    if team is None or team.deleted_at is not None:
        raise ValueError(f"no team named {args.name!r}")
    return team_view(team)


async def _team_update(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    body = parse_body(TeamChange, _fields(args, key=False))
    return team_view(await admin.update_team(args.name, body, _actor()))


async def _team_delete(admin: KeyAdmin, args: argparse.Namespace) -> Any:
    return team_view(await admin.delete_team(args.name, _actor()))


def _command(
    sub: Any, name: str, help_text: str, operation: Operation, *, writes: bool
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    parser.add_argument("--config", help=f"YAML config file (default: ${CONFIG_ENV})")
    parser.set_defaults(func=lambda args: _run(args, operation, writes=writes))
    return parser


def add_key_commands(keys_sub: Any) -> None:
    """``create | list | show | update | rotate | revoke`` beside ``keys generate``."""
    create = _command(
        keys_sub, "create", "create a database key (prints its secret once)", _create, writes=True
    )
    create.add_argument("name")
    _add_fields(create, key=True)
    listing = _command(keys_sub, "list", "list database keys", _list, writes=False)
    listing.add_argument("--team")
    listing.add_argument("--account")
    listing.add_argument("--q", help="only names containing this")
    listing.add_argument("--include-revoked", action="store_true")
    show = _command(keys_sub, "show", "show one database key", _show, writes=False)
    show.add_argument("name")
    update = _command(keys_sub, "update", "change a database key", _update, writes=True)
    update.add_argument("name")
    _add_fields(update, key=True)
    rotate = _command(
        keys_sub, "rotate", "give a key a new secret (printed once)", _rotate, writes=True
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace-seconds",
        type=int,
        default=0,
        help="the old secret stays valid this long (default 0)",
    )
    revoke = _command(
        keys_sub, "revoke", "revoke a key (kept for the ledger)", _revoke, writes=True
    )
    revoke.add_argument("name")


def add_team_commands(sub: Any) -> None:
    teams = sub.add_parser("teams", help="manage teams (limits shared by their keys)")
    teams_sub = teams.add_subparsers(dest="teams_command", required=True)
    create = _command(teams_sub, "create", "create a team", _team_create, writes=True)
    create.add_argument("name")
    _add_fields(create, key=False)
    _command(teams_sub, "list", "list teams", _team_list, writes=False)
    show = _command(teams_sub, "show", "show one team", _team_show, writes=False)
    show.add_argument("name")
    update = _command(teams_sub, "update", "change a team", _team_update, writes=True)
    update.add_argument("name")
    _add_fields(update, key=False)
    delete = _command(teams_sub, "delete", "delete a team without keys", _team_delete, writes=True)
    delete.add_argument("name")
