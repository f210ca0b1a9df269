"""Fuzz the gateway at every route: generated requests and mutated ones, no 5xx, no traceback.

    .venv/bin/python bench/fuzz.py                        # 20,000 mutated + 2,000 generated
    .venv/bin/python bench/fuzz.py --count 5000 --examples 0
    .venv/bin/python bench/fuzz.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/fuzz.py --url http://127.0.0.1:8080 --key sk-... --admin-key sk-...

Without ``--url`` it starts an emulator (instant jobs) and a gateway on loopback, as
subprocesses, with a real admin key, database keys, the response cache on and the Responses
store (in SQLite files, or PostgreSQL tables of its own with ``--database-url``, dropped after).

Two phases: ``--count`` valid-then-mutated requests at every route (``tests/e2e/mutation.py``:
Responses input items, admin PATCH bodies, usage ranges, schemas with integers beyond 64 bits,
NUL and lone surrogates), then ``--examples`` schemathesis requests from the gateway's own
OpenAPI document (``tests/e2e/fuzzing.py``). Prints the counts, every 5xx, and the tracebacks
in the gateway's log; exits 1 if there was any 5xx, check failure or traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.db import database_for
from tests.e2e.fuzzing import FuzzReport, run_fuzz
from tests.e2e.mutation import ADMIN_KEY, MutationReport, fuzz_config, run_mutations
from tests.e2e.servers import ALICE_KEY, running, start_emulator, start_gateway

MODELS = ("gemma-2b", "gpt-3.5-turbo", "llama2-uncensored")


def _run(
    url: str, key: str, admin: str, models: list[str], args: argparse.Namespace
) -> tuple[MutationReport, FuzzReport | None]:
    mutations = asyncio.run(
        run_mutations(
            url, key, admin, models, args.count, concurrency=args.concurrency, seed=args.seed
        )
    )
    generated = run_fuzz(url, key, models, args.examples) if args.examples else None
    return mutations, generated


def _drop_tables(database_url: str, run: str) -> None:
    async def drop() -> None:
        db = database_for(database_url)
        await db.open()
        try:
            rows = await db.fetch(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE ?", [f"fuzz_%{run}%"]
            )
            for row in rows:
                await db.execute(f'DROP TABLE IF EXISTS "{row[0]}" CASCADE')
        finally:
            await db.close()

    asyncio.run(drop())


def _traceback_ends(log: str) -> Counter[str]:
    """The message and last line of each logged traceback, counted."""
    ends: Counter[str] = Counter()
    for line in log.splitlines():
        if "Traceback" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            ends[line[:200]] += 1
            continue
        tail = str(entry.get("exception", "")).strip().splitlines()[-1:]
        ends[f"{entry.get('message', '')[:100]}: {tail[0][:200] if tail else ''}"] += 1
    return ends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="mutated requests")
    parser.add_argument("--examples", type=int, default=2000, help="schemathesis requests")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, help="the mutations' random seed (repeat a run)")
    parser.add_argument("--database-url", help="PostgreSQL for ledger, keys and responses")
    parser.add_argument("--url", help="an already running gateway (default: start one)")
    parser.add_argument("--key", default=ALICE_KEY, help="gateway key for --url")
    parser.add_argument("--admin-key", default=ADMIN_KEY, help="admin key for --url")
    parser.add_argument("--models", default=",".join(MODELS), help="model names for --url")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    log = None
    if args.url:
        mutations, generated = _run(args.url.rstrip("/"), args.key, args.admin_key, models, args)
    else:
        run = uuid.uuid4().hex[:10]
        try:
            with tempfile.TemporaryDirectory(prefix="gateway-fuzz-") as folder:
                tmp = Path(folder)
                emulator = start_emulator(tmp, "--queue-seconds", "0", "--words-per-second", "2000")
                with running(emulator):
                    config = fuzz_config(emulator.url, tmp, run, args.database_url)
                    with running(start_gateway(tmp, config)) as gateway:
                        mutations, generated = _run(gateway.url, ALICE_KEY, ADMIN_KEY, models, args)
                    log = gateway.output()
        finally:
            if args.database_url:
                _drop_tables(args.database_url, run)
    print(f"mutated: {mutations.summary()}")
    for line in mutations.server_errors[:50]:
        print("  5xx:", line)
    for route, count in sorted(mutations.by_route.items()):
        print(f"  {route}: {count}")
    failures = len(mutations.server_errors)
    if generated is not None:
        print(f"generated: {generated.summary()}")
        for failure in generated.failures:
            print("----\n" + failure)
        failures += generated.server_errors + len(generated.failures)
    if log is not None:
        tracebacks = log.count("Traceback")
        print(f"tracebacks in the gateway log: {tracebacks}")
        for line, count in _traceback_ends(log).most_common():
            print(f"  {count} x {line}")
        failures += tracebacks
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
