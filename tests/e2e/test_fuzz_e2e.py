"""Fuzzing a real gateway: generated requests (schemathesis) and mutated ones, never a 5xx.

The long runs are ``bench/fuzz.py``; both drive a gateway with a real admin key, the response
cache on and the Responses store (see ``fuzzing.py`` and ``mutation.py``). Jobs are instant here
so valid requests stay cheap. With ``DATABASE_URL`` the ledger, keys and stored responses are in
PostgreSQL (tables of this run's own, dropped after), else in one SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

pytest.importorskip("schemathesis", reason="schemathesis is a [test] dependency")

from tests.e2e.fuzzing import run_fuzz
from tests.e2e.mutation import ADMIN_KEY, fuzz_config, run_mutations
from tests.e2e.observe import settle
from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    running,
    start_emulator,
    start_gateway,
)

EXAMPLES = 150  # bench/fuzz.py runs tens of thousands; the suite keeps a sample
MUTATIONS = 2000
MODELS = ("gemma-2b", "gpt-3.5-turbo", "llama2-uncensored")
DATABASE_URL = os.environ.get("DATABASE_URL")


async def drop_tables(run: str) -> None:
    assert DATABASE_URL
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", f"fuzz_%{run}%"
        )
        for row in names:
            await conn.execute(f'DROP TABLE IF EXISTS "{row[0]}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    run = uuid.uuid4().hex[:10]
    emulator = start_emulator(tmp, "--queue-seconds", "0", "--words-per-second", "2000")
    try:
        with (
            running(emulator),
            running(
                start_gateway(tmp, fuzz_config(emulator.url, tmp, run, DATABASE_URL))
            ) as server,
        ):
            yield server
    finally:
        if DATABASE_URL:
            asyncio.run(drop_tables(run))


@pytest.mark.timeout(240)
def test_generated_requests_never_get_a_5xx(gateway: Server) -> None:
    report = run_fuzz(gateway.url, ALICE_KEY, MODELS, EXAMPLES)
    assert report.requests >= EXAMPLES * 0.8, report.summary()
    assert report.server_errors == 0, report.summary()
    assert report.failures == [], "\n\n".join(report.failures)
    # Valid requests got through to the upstream, and invalid ones were refused.
    assert report.statuses[200] > 0 and report.statuses[400] > 0, report.summary()
    assert settle(gateway).idle
    assert "Traceback" not in gateway.output()


@pytest.mark.timeout(240)
async def test_mutated_requests_at_every_route_never_get_a_5xx(gateway: Server) -> None:
    report = await run_mutations(gateway.url, ALICE_KEY, ADMIN_KEY, MODELS, MUTATIONS)
    assert report.requests + report.transport_errors == MUTATIONS, report.summary()
    assert report.server_errors == [], "\n".join(report.server_errors[:20])
    assert report.transport_errors == 0, report.summary()
    # Every route was reached, valid requests went through and bad ones were refused.
    assert len(report.by_route) == 46, sorted(report.by_route)
    assert report.statuses[200] > MUTATIONS / 5 and report.statuses[400] > MUTATIONS / 5
    assert settle(gateway).idle
    assert gateway.output().count("Traceback") == 0
