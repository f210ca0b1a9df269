"""CPU the ledger's writes cost per request, with request ids in time order and at random.

A request that lasts longer than the ledger's ``batch_wait_seconds`` is written twice: its
in-flight row, then its final row in place of it (inserted, the in-flight one deleted). This
writes that pair for each of ``--batches`` x ``--size`` requests through the real SQLite store
(a ledger of ``--rows`` rows first), once with ids as the gateway makes them
(:func:`gateway.http.middleware.new_request_id`, time first) and once with random ids (as
before 2026-12-08), alternating, and prints the process's CPU time per request (SQLite's
thread included, and the copying of the pages it logged into the database file) and the
pages logged per batch (of in-flight or final rows).

    .venv/bin/python bench/ledger_ids.py
    .venv/bin/python bench/ledger_ids.py --rows 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.http.middleware import new_request_id
from gateway.ledger.record import UsageRecord
from gateway.ledger.sqlite import SqliteStore


def random_id() -> str:
    return "req_" + secrets.token_hex(12)


def _record(request_id: str) -> UsageRecord:
    return UsageRecord(
        request_id, datetime.now(UTC), "bench", "gemma-2b", "/v1/chat/completions", False,
        12, 30, ("job-" + secrets.token_hex(8),), "ok", 200, 50.0, 1.0, 2.0,
    )  # fmt: skip


async def measure(make: Callable[[], str], args: argparse.Namespace) -> tuple[float, float]:
    """CPU microseconds per request (in-flight row, then final row), pages logged per batch."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-ids-"))
    store = SqliteStore(str(folder / "usage.db"))
    await store.open()
    try:
        for _ in range(args.rows // 500):
            await store.write_many([_record(make()) for _ in range(500)], first=True)
        cpu, frames = 0.0, 0
        with sqlite3.connect(folder / "usage.db") as checkpoints:
            checkpoints.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for _ in range(args.batches):
                finals = [_record(make()) for _ in range(args.size)]
                begun = [replace(r, outcome="in_flight") for r in finals]
                started = time.process_time()
                await store.write_many(begun, first=True)
                await store.write_many(finals, [r.request_id for r in finals], first=True)
                # The pages logged go to the database file some time: here, at once (SQLite
                # would at 1,000 pages); the answer counts them.
                _, logged, _ = checkpoints.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                checkpoints.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cpu += time.process_time() - started
                frames += logged
        return cpu / (args.batches * args.size) * 1e6, frames / args.batches / 2
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=30_000, help="rows in the ledger first")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=70, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"time order": [], "random": []}
    for _ in range(args.rounds):
        results["time order"].append(await measure(new_request_id, args))
        results["random"].append(await measure(random_id, args))
    print(
        f"ledger of {args.rows:,} rows, {args.batches} batches of {args.size} requests, "
        f"median of {args.rounds} rounds"
    )
    for name, figures in results.items():
        cpu = statistics.median(f[0] for f in figures)
        pages = statistics.median(f[1] for f in figures)
        print(f"  ids {name:>10}: {cpu:6.1f} us CPU per request, {pages:5.1f} pages per batch")


if __name__ == "__main__":
    asyncio.run(main())
