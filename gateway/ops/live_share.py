"""The live view of every worker of one server, not only the one that answers.

With ``gateway serve --workers N`` each worker is its own process with its own
:class:`~gateway.ops.recent.LiveView`; a ``GET /admin/live`` lands on one of them. So every
worker writes what it sees (:meth:`LiveView.share`) to a file of its own in a directory the
workers share, once a second, and reads the others' files; ``/admin/live`` merges them
(:func:`merge`). The files live next to the merged metrics, in ``PROMETHEUS_MULTIPROC_DIR``
(several workers need it already), under ``live/``.

Files rather than Redis: the workers of one server always share a disk, and the view must
work without Redis; replicas on other machines each answer for their own workers (a shared
view of replicas would need each to publish through Redis: not done). A request never touches
the disk: the loop reads and writes in a thread, and ``/admin/live`` merges what the loop last
read, at most a second old. A worker that died stops refreshing its file, and a file not
refreshed for three intervals is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger("gateway.live")

#: Seconds between two writes of a worker's file (and reads of the others').
INTERVAL = 1.0
#: A file not refreshed for this many intervals belongs to a worker that is gone.
STALE_INTERVALS = 3.0
#: Circuit states, best to worst: a merged account shows its worst worker's.
_CIRCUITS = ("closed", "half_open", "open")


def share_directory() -> Path | None:
    """Where the workers of this server share their views: None for a single process."""
    base = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(base) / "live" if base else None


class LiveShare:
    """Writes this worker's view to ``directory`` every ``interval`` and keeps the others'."""

    def __init__(
        self,
        directory: Path,
        snapshot: Callable[[], dict[str, Any]],
        interval: float = INTERVAL,
        worker: int | None = None,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self.worker = os.getpid() if worker is None else worker
        self._snapshot = snapshot
        self._path = directory / f"worker-{self.worker}.json"
        #: The other workers' last views, as read by the loop.
        self.others: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveShare:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="live-share")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            self._path.unlink()

    async def _run(self) -> None:
        while True:
            try:
                data = orjson.dumps({**self._snapshot(), "worker": self.worker})
                self.others = await asyncio.to_thread(self._exchange, data)
            except Exception:  # a full disk must not stop the worker; say so and go on
                logger.exception("could not share this worker's live view")
            await asyncio.sleep(self.interval)

    def _exchange(self, data: bytes) -> list[dict[str, Any]]:
        """Write this worker's file (atomically) and read the fresh files of the others."""
        partial = self._path.with_suffix(".tmp")
        partial.write_bytes(data)
        partial.replace(self._path)
        horizon = time.time() - STALE_INTERVALS * self.interval
        others = []
        for path in self.directory.glob("worker-*.json"):
            if path == self._path:
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                if path.stat().st_mtime >= horizon:
                    others.append(orjson.loads(path.read_bytes()))
        return others


def merge(own: dict[str, Any], others: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """This worker's shared view first, then the others', each once (by worker id)."""
    seen = {own.get("worker")}
    views = [own]
    for view in others:
        if view.get("worker") not in seen:
            seen.add(view.get("worker"))
            views.append(view)
    return views


def merge_accounts(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per account over all workers: counts summed, the cap and the worst circuit."""
    rows: dict[str, dict[str, Any]] = {}
    for view in views:
        for row in view.get("accounts", ()):
            merged = rows.get(row["account"])
            if merged is None:
                rows[row["account"]] = dict(row)
                continue
            for count in ("jobs_in_flight", "queued", "status_requests_per_tick"):
                merged[count] += row[count]
            caps = [c for c in (merged["max_jobs"], row["max_jobs"]) if c is not None]
            merged["max_jobs"] = max(caps) if caps else None
            merged["circuit"] = max(merged["circuit"], row["circuit"], key=_CIRCUITS.index)
    return [rows[name] for name in sorted(rows)]
