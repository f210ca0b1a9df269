"""End to end: the ledger through a crash and a database outage (issue 23).

Real gateways and the emulator; the ledger in the machine's PostgreSQL (``DATABASE_URL``, a
table of this run's own), budgets in its Redis (``REDIS_URL``, a key prefix of this run's own).
The outage is a TCP proxy of the test's own in front of PostgreSQL, cut and restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from tests.e2e.servers import ALICE_TOKEN, Server, gateway_config, start_gateway

REDIS_URL = os.environ.get("REDIS_URL")
DATABASE_URL = os.environ.get("DATABASE_URL")
pytestmark = pytest.mark.skipif(
    not (REDIS_URL and DATABASE_URL),
    reason="set REDIS_URL and DATABASE_URL (the ledger in PostgreSQL, budgets in Redis)",
)

CRASH_KEY = "sk-test-crash-0123456789"
ADMIN_KEY = "sk-test-admin-ledger-0123456789"
CHAT = "/v1/chat/completions"


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gemma-2b", "messages": [{"role": "user", "content": content}], **extra}


async def table_rows(table: str) -> list[asyncpg.Record]:
    assert DATABASE_URL
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        return list(await conn.fetch(f"SELECT * FROM {table} ORDER BY request_id"))
    finally:
        await conn.close()


async def drop(table: str) -> None:
    """The run's ledger table and its key store's tables (named after it)."""
    assert DATABASE_URL
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", table + "%"
        )
        for row in rows:
            await conn.execute(f'DROP TABLE IF EXISTS "{row[0]}" CASCADE')
    finally:
        await conn.close()


def drop_prefix(prefix: str) -> None:
    assert REDIS_URL
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    run = uuid.uuid4().hex[:12]
    table, prefix = f"ledger_e2e_{run}", f"gateway-ledger-e2e:{run}:"
    yield table, prefix
    asyncio.run(drop(table))
    drop_prefix(prefix)


def config(upstream: str, table: str, prefix: str, ledger_url: str | None = None) -> dict[str, Any]:
    return gateway_config(
        upstream,
        keys=[
            {
                "name": "crash",
                "key": CRASH_KEY,
                "upstream_token": ALICE_TOKEN,
                "daily_tokens": 10_000_000,
                "team": "crashers",  # a database team, with a daily budget of its own
            }
        ],
        admin={"key": ADMIN_KEY},
        key_store={"table_prefix": f"ledger_e2e_{table[-12:]}_"},
        redis={"url": REDIS_URL, "prefix": prefix, "timeout": 2.0},
        ledger={"url": ledger_url or DATABASE_URL, "table": table},
        server={"graceful_shutdown_seconds": 3},
    )


async def test_a_crash_leaves_a_row_per_admitted_request_and_budgets_follow_the_ledger(
    emulator: Server, tmp_path: Path, names: tuple[str, str]
) -> None:
    table, prefix = names
    settings = config(emulator.url, table, prefix)
    gateway = start_gateway(tmp_path, settings)
    headers = {"authorization": f"Bearer {CRASH_KEY}"}
    held = 12
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            team = {"name": "crashers", "daily_tokens": 10_000_000}
            made = await http.post(
                "/admin/teams", json=team, headers={"authorization": f"Bearer {ADMIN_KEY}"}
            )
            assert made.status_code == 201, made.text
            await asyncio.sleep(1.0)  # every replica (this one) has seen the team
            done = [
                await http.post(CHAT, json=chat(f"quick {n} [[emulate:words 3]]"), headers=headers)
                for n in range(5)
            ]
            assert [a.status_code for a in done] == [200] * 5
            async with contextlib.AsyncExitStack() as streams:
                for n in range(held):  # admitted, their jobs running, when the process dies
                    body = chat(f"long {n} [[emulate:hang]]", stream=True, max_tokens=100)
                    answer = await streams.enter_async_context(
                        http.stream("POST", CHAT, json=body, headers=headers)
                    )
                    assert answer.status_code == 200
                await asyncio.sleep(1.0)
                gateway.stop(signal.SIGKILL)
    finally:
        gateway.stop()

    rows = await table_rows(table)
    outcomes = sorted(row["outcome"] for row in rows)
    assert outcomes == ["in_flight"] * held + ["ok"] * 5, outcomes
    charged = {row["prompt_tokens"] + row["completion_tokens"] for row in rows if row["stream"]}
    assert min(charged) > 100  # the in-flight rows hold what admission charged

    # Redis drifted from the ledger (it held charges the ledger does not know, or lost them):
    # a start-up sets the budget counters from the ledger.
    assert REDIS_URL
    client = redis.Redis.from_url(REDIS_URL)
    try:
        (counter,) = list(client.scan_iter(match=prefix + "{crash}:day:*"))
        (team_counter,) = list(client.scan_iter(match=prefix + "{team:crashers}:day:*"))
        client.set(counter, 123_456_789)
        client.delete(team_counter)  # as if Redis had restarted empty
        restarted = start_gateway(tmp_path, settings)
        try:
            total = sum(row["prompt_tokens"] + row["completion_tokens"] for row in rows)
            assert int(client.get(counter) or 0) == total
            assert int(client.get(team_counter) or 0) == total
        finally:
            restarted.stop()
    finally:
        client.close()


class CuttableProxy:
    """A TCP proxy on loopback that can cut every connection and refuse new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.up = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


async def test_a_database_outage_loses_no_rows(
    emulator: Server, tmp_path: Path, names: tuple[str, str]
) -> None:
    assert DATABASE_URL
    table, prefix = names
    target = httpx.URL(DATABASE_URL.replace("postgresql://", "http://", 1))
    proxy = CuttableProxy(target.port or 5432)
    proxied = DATABASE_URL.replace(f":{target.port or 5432}/", f":{proxy.port}/", 1)
    gateway = start_gateway(tmp_path, config(emulator.url, table, prefix, proxied))
    headers = {"authorization": f"Bearer {CRASH_KEY}"}
    sent = 0
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:

            async def some(count: int) -> None:
                nonlocal sent
                answers = await asyncio.gather(
                    *(
                        http.post(
                            CHAT, json=chat(f"n {sent + i} [[emulate:words 2]]"), headers=headers
                        )
                        for i in range(count)
                    )
                )
                assert [a.status_code for a in answers] == [200] * count
                sent += count

            await some(10)
            proxy.cut()
            await some(40)  # answered while the ledger cannot write: held, retried
            await asyncio.sleep(1.0)
            proxy.restore()
            await some(10)
            for _ in range(150):
                rows = await table_rows(table)
                if len(rows) >= sent and all(r["outcome"] == "ok" for r in rows):
                    break
                await asyncio.sleep(0.1)
    finally:
        gateway.stop()
        proxy.close()
    rows = await table_rows(table)
    assert sorted(r["outcome"] for r in rows) == ["ok"] * sent
    assert len({r["request_id"] for r in rows}) == sent
    assert "dropping" not in gateway.output()
