"""Uploaded files: their records in the database, their contents chunked beside them (or in a
directory, ``files.directory``).

Tables (``T`` is ``files.table``), created when missing::

    T          id, key_id (the owning key's identity), key_name, filename, purpose, bytes,
               lines, created_at, expires_at, status
    T_chunks   file_id, seq, data: the contents, cut at line ends (``files.chunk_bytes``)

A file belongs to the *identity* of the key that uploaded it (``gateway.keys.digests.owner``),
as a stored response does, never to its name (kept for display): every read names the
identity, so another key's id, or a new key that reuses a removed key's name, finds nothing.
Rows of an older gateway, which knew only names, have no ``key_id``: they belong to no key
(only the admin views, which read every key's, show them) and expire with their retention.
A file is visible only once its last chunk is stored (``status`` ``processed``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config_batches import FileSettings
from gateway.db import Database, Databases, add_columns, check_url


@dataclass(slots=True)
class StoredFile:
    id: str
    key_name: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    created_at: float
    expires_at: float
    status: str
    #: The owning key's identity (None: a row of an older gateway, which no key owns).
    key_id: str | None = field(kw_only=True)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``file`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "expires_at": int(self.expires_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


_COLUMNS = "id, key_name, filename, purpose, bytes, lines, created_at, expires_at, status, key_id"


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


class FileStore:
    """Files for one database URL; open it before use."""

    def __init__(
        self, url: str, settings: FileSettings, databases: Databases | None = None
    ) -> None:
        self.url = check_url(url)
        self.t = settings.table
        self.settings = settings
        self.directory = Path(settings.directory) if settings.directory else None
        #: A handle on the project's one database layer (gateway/db.py): same URL, same pool.
        self.db: Database = (databases or Databases()).get(url)

    async def open(self) -> None:
        """Open the database and create the tables when missing."""
        await self.db.open()
        t = self.t
        statements = [
            f"""CREATE TABLE IF NOT EXISTS {t} (
                id TEXT PRIMARY KEY, key_name TEXT NOT NULL, filename TEXT NOT NULL,
                purpose TEXT NOT NULL, bytes BIGINT NOT NULL, lines BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL, key_id TEXT)""",
            f"CREATE INDEX IF NOT EXISTS {t}_key ON {t} (key_name, created_at)",
            f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at)",
            f"""CREATE TABLE IF NOT EXISTS {t}_chunks (
                file_id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
                PRIMARY KEY (file_id, seq))""",
        ]
        try:
            async with self.db.transaction() as tx:
                if self.db.dialect == "postgresql":  # replicas starting together
                    await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(?))", [t])
                for sql in statements:
                    await tx.execute(sql)
                await add_columns(tx, self.db.dialect, t, [("key_id", "TEXT")])  # older tables
                await tx.execute(
                    f"CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (key_id, created_at)"
                )
            if self.directory is not None:
                await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        except BaseException:
            await self.db.close()
            raise

    async def close(self) -> None:
        await self.db.close()

    # ------------------------------------------------------------------ writing

    async def begin(self, record: StoredFile) -> None:
        """Insert a file being uploaded (``status`` ``uploading``: invisible until done)."""
        await self.db.execute(
            f"INSERT INTO {self.t} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _row(record),
        )

    async def append(self, file_id: str, seq: int, data: str) -> None:
        """Store one chunk of whole lines."""
        if self.directory is not None:
            await asyncio.to_thread(_append_text, self._path(file_id), data)
            return
        await self.db.execute(
            f"INSERT INTO {self.t}_chunks (file_id, seq, data) VALUES (?, ?, ?)",
            (file_id, seq, data),
        )

    async def commit(self, record: StoredFile) -> None:
        """The upload is whole: its size is known and the file becomes visible."""
        await self.db.execute(
            f"UPDATE {self.t} SET bytes = ?, lines = ?, status = ? WHERE id = ?",
            (record.bytes, record.lines, record.status, record.id),
        )

    async def put(self, record: StoredFile, chunks: Sequence[str]) -> None:
        """Store a whole file the gateway made (a batch's output or error file)."""
        await self.begin(record)
        for seq, data in enumerate(chunks):
            await self.append(record.id, seq, data)
        await self.commit(record)

    async def delete(self, file_id: str, key_id: str | None) -> bool:
        """Delete a file (of the identity ``key_id``; None: of any key) and its contents."""
        where, params = _owned(file_id, key_id)
        changed = await self.db.execute(f"DELETE FROM {self.t} WHERE {where}", params)
        if changed:
            await self._drop_contents(file_id)
        return changed > 0

    async def _drop_contents(self, file_id: str) -> None:
        if self.directory is not None:
            await asyncio.to_thread(self._path(file_id).unlink, missing_ok=True)
        else:
            await self.db.execute(f"DELETE FROM {self.t}_chunks WHERE file_id = ?", (file_id,))

    async def purge(self, now: float) -> int:
        """Delete the files past their retention (and uploads abandoned half-way)."""
        rows = await self.db.fetch(f"SELECT id FROM {self.t} WHERE expires_at <= ?", (now,))
        for (file_id,) in rows:
            await self.delete(file_id, None)
        return len(rows)

    # ------------------------------------------------------------------ reading

    async def get(self, file_id: str, key_id: str | None) -> StoredFile | None:
        """A whole file of the identity ``key_id`` (None: of any key, for the admin views)."""
        where, params = _owned(file_id, key_id)
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM {self.t} WHERE {where} AND status = 'processed' "
            "AND expires_at > ?",
            (*params, time.time()),
        )
        return _record(rows[0]) if rows else None

    async def page(
        self, key_id: str, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> list[StoredFile]:
        """A page of the identity's files, newest first (``order`` ``desc``) or oldest first."""
        sql = (
            f"SELECT {_COLUMNS} FROM {self.t} WHERE key_id = ? AND status = 'processed' "
            "AND expires_at > ?"
        )
        params: list[Any] = [key_id, time.time()]
        if purpose is not None:
            sql += " AND purpose = ?"
            params.append(purpose)
        direction = "DESC" if order == "desc" else "ASC"
        if after is not None:
            anchor = await self.get(after, key_id)
            if anchor is None:
                return []
            cmp = "<" if order == "desc" else ">"
            sql += f" AND (created_at {cmp} ? OR (created_at = ? AND id {cmp} ?))"
            params += [anchor.created_at, anchor.created_at, anchor.id]
        sql += f" ORDER BY created_at {direction}, id {direction} LIMIT ?"
        params.append(limit)
        return [_record(row) for row in await self.db.fetch(sql, params)]

    async def chunks(self, file_id: str) -> AsyncIterator[str]:
        """The contents, a chunk at a time (never the whole file at once)."""
        if self.directory is not None:
            path = self._path(file_id)
            with await asyncio.to_thread(path.open, encoding="utf-8") as handle:
                while data := await asyncio.to_thread(handle.read, self.settings.chunk_bytes):
                    yield data
            return
        seq = 0
        while True:
            rows = await self.db.fetch(
                f"SELECT data FROM {self.t}_chunks WHERE file_id = ? AND seq = ?", (file_id, seq)
            )
            if not rows:
                return
            yield str(rows[0][0])
            seq += 1

    def _path(self, file_id: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{file_id}.jsonl"


def _append_text(path: Path, data: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(data)


def _owned(file_id: str, key_id: str | None) -> tuple[str, tuple[Any, ...]]:
    """The row of ``file_id`` if the identity owns it (a NULL ``key_id`` matches no ``?``)."""
    if key_id is None:
        return "id = ?", (file_id,)
    return "id = ? AND key_id = ?", (file_id, key_id)


def _row(r: StoredFile) -> tuple[Any, ...]:
    return (
        r.id, r.key_name, r.filename, r.purpose, r.bytes, r.lines, r.created_at, r.expires_at,
        r.status, r.key_id,
    )  # fmt: skip


def _record(row: Sequence[Any]) -> StoredFile:
    return StoredFile(
        id=str(row[0]),
        key_name=str(row[1]),
        filename=str(row[2]),
        purpose=str(row[3]),
        bytes=int(row[4]),
        lines=int(row[5]),
        created_at=float(row[6]),
        expires_at=float(row[7]),
        status=str(row[8]),
        key_id=None if row[9] is None else str(row[9]),
    )
