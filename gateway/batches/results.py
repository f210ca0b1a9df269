"""A finished batch's output and error files, written from its lines a page at a time."""

from __future__ import annotations

import json
import time

from gateway.batches.files import FileStore, StoredFile, new_file_id
from gateway.batches.lines import LineDoor
from gateway.batches.store import BatchStore, StoredBatch

#: The states of a line still to answer.
PENDING = ("queued", "submitting", "submitted")
#: Lines read from the database at a time.
PAGE = 500


async def write_results(
    store: BatchStore, files: FileStore, batch: StoredBatch, door: LineDoor
) -> tuple[str | None, str | None]:
    """The ids of the output and error files (None: no such lines); a line that never ran
    (cancelled, expired) goes to the error file in the door's shape."""
    made = {kind: ResultFile(files, batch, kind) for kind in ("output", "error")}
    after = -1
    while page := await store.results(batch.id, after, PAGE):
        for n, kind, text in page:
            after = n
            if kind in ("cancelled", "expired", *PENDING):
                state = "cancelled" if kind == "cancelled" else "expired"
                text, kind = json.dumps(door.not_run(text, state)), "error"
            await made[kind].add(text)
    return await made["output"].close(), await made["error"].close()


class ResultFile:
    """A batch's output or error file, written as its lines come (none if it has none)."""

    def __init__(self, files: FileStore, batch: StoredBatch, kind: str) -> None:
        now = time.time()
        self.files = files
        self.record = StoredFile(
            new_file_id(), batch.key_name, f"{batch.id}_{kind}.jsonl", "batch_output", 0, 0,
            now, now + files.settings.retention_hours * 3600, "uploading", key_id=batch.key_id,
        )  # fmt: skip
        self._parts: list[str] = []
        self._size = 0
        self._seq = 0

    async def add(self, line: str) -> None:
        if self._seq == 0 and not self._parts:
            await self.files.begin(self.record)
        text = line + "\n"
        self._parts.append(text)
        self._size += len(text.encode())
        self.record.lines += 1
        if self._size >= self.files.settings.chunk_bytes:
            await self._flush()

    async def _flush(self) -> None:
        if self._parts:
            await self.files.append(self.record.id, self._seq, "".join(self._parts))
            self.record.bytes += self._size
            self._seq += 1
            self._parts, self._size = [], 0

    async def close(self) -> str | None:
        if self.record.lines == 0:
            return None
        await self._flush()
        self.record.status = "processed"
        await self.files.commit(self.record)
        return self.record.id
