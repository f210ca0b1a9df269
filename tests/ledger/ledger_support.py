"""Helpers shared by the ledger tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.ledger import UsageRecord, UsageRow

DATABASE_URL = os.environ.get("DATABASE_URL")
needs_postgres = pytest.mark.skipif(
    not DATABASE_URL,
    reason="set DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to test PostgreSQL",
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_record(n: int = 0, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{n}",
        "time": T0 + timedelta(seconds=n),
        "key_name": "alice",
        "model": "llama",
        "endpoint": "/v1/chat/completions",
        "stream": False,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "job_ids": (f"job-{n}",),
        "outcome": "ok",
        "status_code": 200,
        "duration_ms": 100.0,
    }
    values.update(fields)
    return UsageRecord(**values)


class FakeStore:
    """A LedgerStore in a list that can be told to fail."""

    def __init__(self) -> None:
        self.rows: list[UsageRecord] = []
        self.fail_open = False
        self.fail_write = False
        self.opened = 0
        self.open_attempted = asyncio.Event()
        self.batches: list[int] = []
        self.firsts: list[bool] = []  # each write's ``first``
        self.hang: asyncio.Event | None = None  # when set, writes wait for it
        self.closed = False
        self.poison: set[str] = set()  # request ids whose rows the "database" refuses

    async def open(self) -> None:
        self.opened += 1
        self.open_attempted.set()
        if self.fail_open:
            raise ConnectionRefusedError("database is down")

    async def write_many(
        self, records: Sequence[UsageRecord], replacing: Sequence[str] = (), *, first: bool = False
    ) -> None:
        self.batches.append(len(records))
        self.firsts.append(first)
        if self.hang is not None:
            await self.hang.wait()
        if self.fail_write:
            raise OSError("disk on fire")
        if any(r.request_id in self.poison for r in records):
            raise ValueError("invalid byte sequence")
        gone = set(replacing)
        self.rows = [
            r for r in self.rows if not (r.request_id in gone and r.outcome == "in_flight")
        ]
        self.rows.extend(records)

    async def mark_interrupted(self, before: datetime) -> int:
        return 0

    async def budget_usage(self, since: datetime, cached: bool) -> dict[str, int]:
        return {}

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        return []

    async def close(self) -> None:
        self.closed = True
