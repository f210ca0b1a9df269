"""Garbage-collector settings for a long-running server process.

The gateway allocates many short-lived objects per poll (parsed status answers, SSE chunks) while
holding a large set of long-lived ones (streams, jobs, modules). With CPython's defaults a young
collection runs every 700 allocations and full collections walk the whole heap: in the
benchmarks (BENCHMARKS.md) that was ~13% of the gateway's CPU with pauses up to ~60 ms.
Freezing what start-up allocated (``gc.freeze``) takes it out of every later collection, and a
larger first threshold makes young collections rarer; reference counting still frees almost
everything at once, the collector only finds cycles.
"""

from __future__ import annotations

import gc

from gateway.config import ServerSettings


def tune_collector(server: ServerSettings) -> None:
    """Apply ``server.gc_freeze`` and ``server.gc_threshold``; call once start-up is done."""
    if server.gc_threshold is not None:
        gc.set_threshold(*server.gc_threshold)
    if server.gc_freeze:
        gc.freeze()
