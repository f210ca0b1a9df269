"""100,000 database keys: start-up load time and the per-request cost of finding a key.

Fills a key database (SQLite in a temporary directory, or the PostgreSQL of ``--database-url``)
with N keys, then measures what a starting gateway does: open the store and load every key into
the in-memory registry. Then times ``KeyRing.authenticate`` (what every request runs) for a
database key, a config key and an unknown key, next to today's config-only key ring.

    .venv/bin/python bench/keys_scale.py                     # 100,000 keys in SQLite
    .venv/bin/python bench/keys_scale.py --keys 20000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.auth import KeyRing
from gateway.config import KeySettings
from gateway.db import database_for
from gateway.errors import AuthenticationFailed
from gateway.keys.digests import digest_for, new_secret
from gateway.keys.model import KeyRecord
from gateway.keys.registry import KeyRegistry
from gateway.keys.store import KeyStore
from gateway.keys.watcher import KeyWatcher

CONFIG_KEYS = [
    KeySettings(name=f"config-{i}", key=f"sk-config-key-{i:04d}", upstream_token="tok")
    for i in range(10)
]


def per_call(ring: KeyRing, secret: str, number: int = 20_000) -> float:
    """Microseconds per authenticate() call, best of 5 rounds."""
    headers = {"authorization": f"Bearer {secret}"}

    def call() -> None:
        with contextlib.suppress(AuthenticationFailed):
            ring.authenticate(headers)

    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


async def run(count: int, url: str | None, prefix: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="keys-scale-"))
    url = url or f"sqlite:///{tmp}/keys.db"
    store = KeyStore(database_for(url), prefix)
    await store.open()
    now = time.time()
    secrets = [new_secret() for _ in range(3)]
    records = []
    for i in range(count):
        secret = secrets[i] if i < len(secrets) else new_secret()
        digest, scheme = digest_for(secret, None)
        records.append(
            KeyRecord(
                name=f"user-{i:06d}",
                digest=digest,
                scheme=scheme,
                account="team-a",
                team=f"team-{i % 100}",
                rpm=60,
                metadata={"owner": f"user{i}@example.com"},
                created_at=now,
                updated_at=now,
            )
        )
    started = time.perf_counter()
    await store.insert_many(records)
    filled = time.perf_counter() - started
    await store.close()

    # What a starting replica does: open the store, read every row, build the registry.
    started = time.perf_counter()
    fresh = KeyStore(database_for(url), prefix)
    registry = KeyRegistry({"team-a": "tok-a"}, config_names=(k.name for k in CONFIG_KEYS))
    watcher = KeyWatcher(fresh, registry)
    await watcher.refresh()
    load = time.perf_counter() - started
    assert len(registry) == count, len(registry)

    started = time.perf_counter()
    await watcher.refresh()  # nothing changed: the one-row version read
    idle_refresh = time.perf_counter() - started
    started = time.perf_counter()
    first_page = list(zip(range(50), registry.names_after(None), strict=False))
    page = time.perf_counter() - started
    assert len(first_page) == 50
    await watcher.aclose()

    today = KeyRing(CONFIG_KEYS)
    with_db = KeyRing(CONFIG_KEYS, registry)
    print(f"keys in the database:            {count:,} ({url.split(':', 1)[0]})")
    print(f"filling the table (one batch):   {filled:.2f} s")
    print(f"start-up load into memory:       {load:.2f} s   (goal: under 5 s)")
    print(f"refresh with nothing changed:    {idle_refresh * 1000:.2f} ms")
    print(f"first page of 50 (sorts names):  {page * 1000:.1f} ms")
    print("per-request key lookup (KeyRing.authenticate, 10 config keys):")
    for label, ring, secret in [
        ("config key, today (no database keys)", today, "sk-config-key-0003"),
        (f"config key, with {count:,} db keys", with_db, "sk-config-key-0003"),
        (f"database key among {count:,}", with_db, secrets[1]),
        ("unknown key, today", today, "sk-unknown-000"),
        (f"unknown key, with {count:,} db keys", with_db, "sk-unknown-000"),
    ]:
        print(f"  {label + ':':<40} {per_call(ring, secret):.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--database-url", help="postgresql://... (default: a temporary SQLite)")
    args = parser.parse_args()
    prefix = f"bench_{uuid.uuid4().hex[:8]}_"
    asyncio.run(run(args.keys, args.database_url, prefix))


if __name__ == "__main__":
    main()
