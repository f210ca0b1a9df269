"""What each key keeps stored, remembered between quota checks (pure: no I/O).

The quota check (``responses.max_key_bytes``) asked the database for a key's total on every
stored request, a sum whose cost grows with the key's responses. A figure read less than
``fresh`` seconds ago, plus what this process stored since, answers instead while it leaves
room: it never undercounts this process's own writes, and deletes and expiry only lower the
truth. Anything that would refuse is read again, so a refusal is always the database's.
"""

from __future__ import annotations


class KeyUsage:
    """Stored bytes per key id, as last read plus what was stored since."""

    def __init__(self, fresh: float = 1.0, most: int = 10_000) -> None:
        self.fresh = fresh
        self.most = most  # keys remembered at most (the stalest forgotten first)
        self._known: dict[str, tuple[float, int]] = {}  # key id -> (read at, bytes)

    def answer(self, key_id: str, now: float, adding: int, cap: int) -> int | None:
        """The remembered figure if it is fresh and leaves room for ``adding``; else None
        (ask the database, then :meth:`read`)."""
        known = self._known.get(key_id)
        if known is not None and now - known[0] < self.fresh and known[1] + adding <= cap:
            return known[1]
        return None

    def read(self, key_id: str, now: float, used: int) -> None:
        self._known.pop(key_id, None)
        self._known[key_id] = (now, used)  # newest last
        while len(self._known) > self.most:
            self._known.pop(next(iter(self._known)))

    def stored(self, key_id: str, size: int) -> None:
        """This process committed ``size`` more bytes for the key."""
        if (known := self._known.get(key_id)) is not None:
            self._known[key_id] = (known[0], known[1] + size)

    def changed(self, key_id: str) -> None:
        """The key's bytes changed by an unknown amount: read them at the next check."""
        self._known.pop(key_id, None)
