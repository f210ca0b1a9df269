"""The ledger in SQLite (the default): one file, no server (see :class:`SqlLedgerStore`).

The file is opened in WAL mode with a busy timeout, so several gateway workers can share it;
within one process, writers are serialised by :mod:`gateway.db`.
"""

from __future__ import annotations

from gateway.db import Databases, sqlite_path
from gateway.ledger.store import DEFAULT_TABLE, SqlLedgerStore, format_time

__all__ = ["SqliteStore", "format_time", "sqlite_path"]


class SqliteStore(SqlLedgerStore):
    """The ledger in one SQLite file (or ``:memory:``)."""

    def __init__(
        self, path: str, *, table: str = DEFAULT_TABLE, databases: Databases | None = None
    ) -> None:
        self.path = path
        super().__init__((databases or Databases()).get(f"sqlite:///{path}"), table=table)

    @classmethod
    def from_url(
        cls, url: str, *, table: str = DEFAULT_TABLE, databases: Databases | None = None
    ) -> SqliteStore:
        return cls(sqlite_path(url), table=table, databases=databases)
