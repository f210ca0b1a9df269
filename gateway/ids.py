"""Ids that sort by the time they were made: the ones stored as keys of a database index.

A random id lands on a random page of every index that holds it, so each insert dirties a page
of its own (written whole to the write-ahead log at commit) and, once the index outgrows the
cache, reads one from disk first. An id that starts with the time it was made lands next to
the one before it: the new entries of a batch share a page or two of each index. The rest of
the id is random, so an id is no easier to guess than before (and every stored id is read
only by its owner); what it tells is when it was made, to the millisecond.
"""

from __future__ import annotations

import secrets
import time

#: Hex digits of the time in milliseconds: fixed width, so text order is time order (until
#: the year 2527).
TIME_DIGITS = 11


def sortable_hex(digits: int) -> str:
    """``digits`` lower-case hex digits: the time in milliseconds, then random ones."""
    if digits <= TIME_DIGITS:
        raise ValueError(f"an id needs more than {TIME_DIGITS} digits")
    random = digits - TIME_DIGITS
    return (
        f"{time.time_ns() // 1_000_000:0{TIME_DIGITS}x}"
        + secrets.token_hex((random + 1) // 2)[:random]
    )
