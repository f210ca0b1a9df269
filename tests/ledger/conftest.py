"""Ledger stores to test against: SQLite always, PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from ledger_support import DATABASE_URL, needs_postgres

from gateway.ledger import LedgerStore
from gateway.ledger.postgres import PostgresStore
from gateway.ledger.sqlite import SqliteStore


@pytest.fixture
def table() -> str:
    return f"usage_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def drop_table(table: str) -> AsyncIterator[None]:
    """Drop this test's PostgreSQL table afterwards."""
    yield
    if DATABASE_URL:
        conn = await asyncpg.connect(DATABASE_URL)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, drop_table: None) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.db"
    assert DATABASE_URL is not None
    return DATABASE_URL


@pytest.fixture
async def store(store_url: str, table: str) -> AsyncIterator[LedgerStore]:
    opened: LedgerStore
    if store_url.startswith("sqlite"):
        opened = SqliteStore.from_url(store_url, table=table)
    else:
        opened = PostgresStore(store_url, table=table)
    await opened.open()
    yield opened
    await opened.close()
