"""What the batch routes share: the stores, opened at start-up (or on first use)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from gateway.batches.files import FileStore
from gateway.config import Settings
from gateway.errors import ServiceUnavailable

if TYPE_CHECKING:
    from gateway.runtime import Runtime

logger = logging.getLogger("gateway.batches")


class BatchService:
    """Owned by the runtime: opened at start-up, closed at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.files.store_url or settings.ledger.url
        self.files = FileStore(url, settings.files)
        self._open = False

    async def start(self, runtime: Runtime) -> None:
        with contextlib.suppress(ServiceUnavailable):  # tried again on first use
            await self.ready()

    async def ready(self) -> BatchService:
        """The open stores, or a 503 saying the database is unreachable."""
        if not self._open:
            try:
                await self.files.open()
            except Exception:
                logger.exception("the file store could not be opened")
                raise ServiceUnavailable(
                    "Files and batches are unavailable: the gateway cannot reach its database.",
                    code="store_unavailable",
                ) from None
            self._open = True
        return self

    async def aclose(self) -> None:
        await self.files.close()
