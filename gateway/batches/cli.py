"""``gateway batches list`` and ``gateway batches inspect ID``: batches, read from the database.

For operators: every key's batches (OpenAI's and Anthropic's), their progress, and which
gateway runs each (its lease), whether or not a gateway is up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from gateway.batches.store import BatchStore, StoredBatch
from gateway.config import CONFIG_ENV, ConfigError, load_settings


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row(batch: StoredBatch, counts: Any) -> dict[str, Any]:
    return {
        "id": batch.id,
        "door": batch.door,
        "key": batch.key_name,
        "status": batch.status,
        "created": _when(batch.created_at),
        "total": counts.total,
        "done": counts.done,
        "failed": counts.failed,
        "pending": counts.pending,
        "cancelled": counts.cancelled,
        "expired": counts.expired,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no batches"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


async def _list(store: BatchStore, args: argparse.Namespace) -> str:
    found = await store.page(None, args.door, after=None, limit=args.limit, key_name=args.key)
    rows = [_row(b, await store.counts(b.id)) for b in found]
    return json.dumps(rows, indent=2) if args.json else _table(rows)


async def _inspect(store: BatchStore, args: argparse.Namespace) -> str:
    batch = await store.get(args.batch_id, None, None)
    if batch is None:
        raise LookupError(f"no batch {args.batch_id}")
    owner, until = await store.lease(batch.id)
    shown = {
        **_row(batch, await store.counts(batch.id)),
        "expires": _when(batch.expires_at),
        "runner": owner if owner and until > time.time() else None,
        "lease_seconds_left": max(0.0, round(until - time.time(), 1)) if owner else None,
        "object": batch.body,
    }
    if args.json:
        return json.dumps(shown, indent=2)
    return "\n".join(
        f"{k}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in shown.items()
    )


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    url = settings.files.store_url or settings.ledger.url
    store = BatchStore(url, settings.batches.table)

    async def work() -> str:
        await store.open()
        try:
            text: str = await args.operation(store, args)
            return text
        finally:
            await store.close()

    try:
        print(asyncio.run(work()))
    except LookupError as exc:
        print(f"gateway: {exc.args[0]}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database is down, or refuses us: say so, no traceback
        print(
            f"gateway: cannot read the batches: {str(exc) or type(exc).__name__}", file=sys.stderr
        )
        return 1
    return 0


def add_batch_commands(sub: Any) -> None:
    batches = sub.add_parser("batches", help="list and inspect batches")
    batches_sub = batches.add_subparsers(dest="batches_command", required=True)
    listing = batches_sub.add_parser("list", help="batches, newest first, with their progress")
    listing.add_argument("--key", help="only this key's batches")
    listing.add_argument("--door", choices=["openai", "anthropic"], help="only these batches")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    inspect = batches_sub.add_parser("inspect", help="one batch: progress, runner, object")
    inspect.add_argument("batch_id")
    for parser, operation in ((listing, _list), (inspect, _inspect)):
        parser.add_argument("--config", help=f"YAML config file (default: ${CONFIG_ENV})")
        parser.add_argument("--json", action="store_true", help="JSON instead of text")
        parser.set_defaults(func=_run, operation=operation)
