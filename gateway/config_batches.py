"""The Files and Batches APIs' settings (``files:`` and ``batches:``), kept beside config.py.

Read and validated with the rest of the config by :mod:`gateway.config`, which re-exports
them; this module imports nothing of the gateway's, so no layer is crossed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_TABLE = r"^[A-Za-z_][A-Za-z0-9_]{0,50}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileSettings(_Frozen):
    """Uploaded files (``/v1/files``): where their contents live, how big, how long."""

    store_url: str | None = None  # None: the ledger's database
    #: Keep contents as files in this directory instead of chunks in the database.
    directory: str | None = None
    table: str = Field("gateway_files", pattern=_TABLE)
    max_bytes: int = Field(200 * 1024 * 1024, ge=1)
    max_lines: int = Field(50_000, ge=1)
    #: The longest line of a JSONL upload (one batch request).
    max_line_bytes: int = Field(4 * 1024 * 1024, ge=1)
    chunk_bytes: int = Field(256 * 1024, ge=1024)
    retention_hours: float = Field(720.0, gt=0)


class BatchSettings(_Frozen):
    """Batches (``/v1/batches``, ``/v1/messages/batches``): how they share the grid."""

    table: str = Field("gateway_batches", pattern=_TABLE)
    #: The most of an account's job cap (``upstream.max_jobs_per_token``) batch lines may hold.
    share: float = Field(0.5, gt=0, le=1)
    #: Lines of one gateway's batches followed at once (also bounded by ``share``).
    lines_in_flight: int = Field(256, ge=1)
    #: Tries per line (a failed job is asked again) before it lands in the error file.
    max_attempts: int = Field(3, ge=1)
    #: A batch whose runner did not renew its lease for this long is taken over.
    lease_seconds: float = Field(15.0, ge=1)
    #: How often idle runners look for batches to run (new, or left by a stopped gateway).
    scan_interval: float = Field(1.0, gt=0)
