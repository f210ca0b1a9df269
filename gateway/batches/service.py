"""What the file and batch routes share: the stores and the runner, opened at start-up."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.batches.files import FileStore
from gateway.batches.lines import LineDoor
from gateway.batches.runner import Runner
from gateway.batches.store import BatchStore, StoredBatch
from gateway.config import Settings
from gateway.db import Databases
from gateway.errors import ServiceUnavailable

if TYPE_CHECKING:
    from gateway.runtime import Runtime

logger = logging.getLogger("gateway.batches")

#: Batch statuses a cancel moves to ``cancelling``.
CANCELLABLE = ("validating", "in_progress")


class BatchService:
    """Owned by the app (``app.state.batches``): opened at start-up, closed at shutdown.
    ``doors`` are the wire formats whose batches it runs (``openai``, ``anthropic``)."""

    def __init__(
        self, settings: Settings, databases: Databases, doors: Mapping[str, LineDoor]
    ) -> None:
        self.settings = settings
        url = settings.files.store_url or settings.ledger.url
        # Handles on the runtime's pools (gateway/db.py): one engine per URL for every store.
        self.files = FileStore(url, settings.files, databases)
        self.batches = BatchStore(url, settings.batches.table, databases)
        self.runner = Runner(self.batches, self.files, settings.batches, doors)
        self._open = False

    async def start(self, runtime: Runtime) -> None:
        with contextlib.suppress(ServiceUnavailable):  # tried again on first use
            await self.ready()
        self.runner.start(runtime)

    async def ready(self) -> BatchService:
        """The open stores, or a 503 saying the database is unreachable."""
        if not self._open:
            try:
                await self.files.open()
                await self.batches.open()
            except Exception:
                logger.exception("the file and batch stores could not be opened")
                raise ServiceUnavailable(
                    "Files and batches are unavailable: the gateway cannot reach its database.",
                    code="store_unavailable",
                ) from None
            self._open = True
        return self

    async def cancel(self, batch: StoredBatch) -> StoredBatch:
        """Ask a batch to stop, for every door's cancel and the admin's: a running one becomes
        ``cancelling`` (its runner cancels the lines not yet submitted, lets those in flight
        end, and ends it ``cancelled``); any other is left as it is. The batch as it is now
        (the runner may have ended it meanwhile)."""
        if batch.status not in CANCELLABLE:
            return batch
        batch.status = "cancelling"
        batch.body["cancelling_at"] = int(time.time())
        if await self.batches.save(batch, was=CANCELLABLE):
            self.runner.wake()
        return await self.batches.get(batch.id, None, None) or batch

    async def aclose(self) -> None:
        await self.runner.aclose()
        await self.batches.close()
        await self.files.close()
