"""Cutting a JSONL upload into lines while it streams in, within the configured caps.

Pure: bytes in, whole lines out, so an upload is never held whole and a cap is enforced the
moment it is crossed (the rest of the upload is not read).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.errors import BadRequest, PayloadTooLarge


@dataclass(slots=True)
class LineCutter:
    """Feed it the upload's pieces; it hands back chunks of whole lines (UTF-8 text)."""

    max_bytes: int
    max_lines: int
    max_line_bytes: int
    chunk_bytes: int
    read: int = 0  # bytes read
    stored: int = 0  # kept: the lines, each ending in a newline
    lines: int = 0
    _partial: bytearray = field(default_factory=bytearray)
    _chunk: list[str] = field(default_factory=list)
    _chunk_size: int = 0

    def feed(self, data: bytes) -> list[str]:
        """Take a piece of the upload; the chunks now full (each ends at a line's end)."""
        self.read += len(data)
        if self.read > self.max_bytes:
            raise _too_large(f"The file is larger than {self.max_bytes} bytes (files.max_bytes).")
        out: list[str] = []
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            self._partial += data[start : end + 1]
            self._line(out)
            start = end + 1
        self._partial += data[start:]
        if len(self._partial) > self.max_line_bytes:
            raise _too_large(
                f"Line {self.lines + 1} is longer than {self.max_line_bytes} bytes "
                "(files.max_line_bytes)."
            )
        return out

    def close(self) -> list[str]:
        """The upload ended: the last line (with no newline) and the last chunk."""
        out: list[str] = []
        if self._partial.strip():
            self._partial += b"\n"
            self._line(out)
        if self._chunk:
            out.append("".join(self._chunk))
            self._chunk, self._chunk_size = [], 0
        return out

    def _line(self, out: list[str]) -> None:
        raw, self._partial = bytes(self._partial), bytearray()
        if not raw.strip():
            return  # blank lines are not requests
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(
                f"Line {self.lines + 1} of the file is not UTF-8 text.", param="file"
            ) from None
        self.lines += 1
        if self.lines > self.max_lines:
            raise _too_large(f"The file has more than {self.max_lines} lines (files.max_lines).")
        self.stored += len(raw)
        self._chunk.append(text)
        self._chunk_size += len(raw)
        if self._chunk_size >= self.chunk_bytes:
            out.append("".join(self._chunk))
            self._chunk, self._chunk_size = [], 0


def _too_large(message: str) -> PayloadTooLarge:
    return PayloadTooLarge(message, param="file", code="file_too_large")


def split_lines(chunks: list[str]) -> list[str]:
    """The lines of stored chunks (each chunk holds whole lines, each ending in a newline)."""
    return [line for chunk in chunks for line in chunk.splitlines() if line.strip()]
