"""A local file for ledger rows the database cannot take now and memory cannot hold.

Optional (``ledger.spill_path``). Rows are JSON lines appended to the file; it is bounded by
``max_bytes``, past which rows are dropped (and counted) as they would have been without it.
To replay, the file is renamed to ``<path>.replay`` first, so rows spilled meanwhile go to a
fresh file; the replay file is removed once its rows are written. A replay file found at
start-up (the process died while replaying) is replayed again: a few rows may then be written
twice, rather than lost. Blocking file calls: run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from gateway.ledger.record import UsageRecord, from_json, to_json

logger = logging.getLogger("gateway.ledger")


class SpillFile:
    """Rows kept on the local disk while the database is unavailable and memory is full."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = Path(path)
        self.replay_path = self.path.with_name(self.path.name + ".replay")
        self.max_bytes = max_bytes

    def append(self, rows: Sequence[tuple[UsageRecord, bool]]) -> int:
        """Append ``(record, replaces_in_flight)`` rows; how many fit under ``max_bytes``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        kept = 0
        with self.path.open("a", encoding="utf-8") as out:
            for record, replaces in rows:
                line = json.dumps({"row": to_json(record), "replaces": replaces}) + "\n"
                if size + len(line) > self.max_bytes:
                    break
                out.write(line)
                size += len(line)
                kept += 1
            out.flush()
            os.fsync(out.fileno())
        return kept

    def has_rows(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def take(self) -> list[tuple[UsageRecord, bool]]:
        """The rows to replay (the file becomes the replay file; a left-over one comes too)."""
        rows = self._read(self.replay_path) if self.replay_path.exists() else []
        if self.path.exists():
            rows += self._read(self.path)
            self.path.replace(self.replay_path)  # now one file holds every row to replay
            if rows:
                self._rewrite(rows)
        return rows

    def replayed(self) -> None:
        """Every row taken has been written (or dropped): the replay file goes."""
        self.replay_path.unlink(missing_ok=True)

    def _rewrite(self, rows: Sequence[tuple[UsageRecord, bool]]) -> None:
        with self.replay_path.open("w", encoding="utf-8") as out:
            for record, replaces in rows:
                out.write(json.dumps({"row": to_json(record), "replaces": replaces}) + "\n")

    @staticmethod
    def _read(path: Path) -> list[tuple[UsageRecord, bool]]:
        rows: list[tuple[UsageRecord, bool]] = []
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    rows.append((from_json(data["row"]), bool(data.get("replaces"))))
                except (ValueError, KeyError, TypeError) as exc:  # a torn last line
                    logger.warning("ledger spill file %s line %d unreadable: %s", path, number, exc)
        return rows
