"""Requests real clients sent, kept in ``tests/clients/recorded/`` to be replayed byte for byte.

``<name>.json`` is the request body exactly as the client sent it; ``<name>.meta.json`` says
which client and version sent it, to which method and path, with which headers (credentials
left out: the replay sends the test's own key). The live tests rewrite both when
``GATEWAY_RECORD_CLIENTS=1`` is set, so the recording follows the newest release.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.clients.proxy import Seen

RECORDED = Path(__file__).parent / "recorded"

#: Headers not kept: credentials, and what the proxy or HTTP itself recomputes.
_DROPPED = frozenset(
    {"authorization", "x-api-key", "host", "content-length", "connection", "accept-encoding"}
)


def wanted() -> bool:
    """Whether this run refreshes the recordings (``GATEWAY_RECORD_CLIENTS=1``)."""
    return os.environ.get("GATEWAY_RECORD_CLIENTS") == "1"


def save(name: str, seen: Seen, client: str, version: str) -> None:
    RECORDED.mkdir(exist_ok=True)
    (RECORDED / f"{name}.json").write_bytes(seen.body)
    meta = {
        "client": client,
        "version": version,
        "method": seen.method,
        "path": seen.path,
        "headers": {k: v for k, v in seen.headers.items() if k.lower() not in _DROPPED},
    }
    (RECORDED / f"{name}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load(name: str) -> tuple[dict[str, Any], bytes]:
    """(what the metadata says, the body's bytes) of a recording."""
    meta: dict[str, Any] = json.loads((RECORDED / f"{name}.meta.json").read_text())
    return meta, (RECORDED / f"{name}.json").read_bytes()
