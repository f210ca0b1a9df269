"""The ledger in PostgreSQL, through the shared asyncpg pool of :mod:`gateway.db`."""

from __future__ import annotations

from gateway.db import DEFAULT_TIMEOUT, Databases, is_postgres_url
from gateway.ledger.store import DEFAULT_TABLE, SqlLedgerStore

__all__ = ["PostgresStore", "is_postgres_url"]


class PostgresStore(SqlLedgerStore):
    """The ledger in PostgreSQL."""

    def __init__(
        self,
        url: str,
        *,
        table: str = DEFAULT_TABLE,
        max_size: int = 4,
        command_timeout: float = DEFAULT_TIMEOUT,
        databases: Databases | None = None,
    ) -> None:
        if not is_postgres_url(url):
            raise ValueError("not a PostgreSQL URL (use postgresql://user@host:port/database)")
        databases = databases or Databases(timeout=command_timeout, pool_size=max_size)
        super().__init__(databases.get(url), table=table)
