"""Reading a ``multipart/form-data`` upload as it streams in (``POST /v1/files``).

The ``file`` part goes through a :class:`~gateway.batches.jsonl.LineCutter` piece by piece,
so the caps are checked while the upload arrives and only a chunk of lines is ever held;
the small fields (``purpose``, ``expires_after``...) are kept, each within a few KiB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.batches.jsonl import LineCutter
from gateway.errors import BadRequest, GatewayError, UnsupportedMediaType

#: The most a form field other than the file may hold.
MAX_FIELD_BYTES = 4096


@dataclass(slots=True)
class Upload:
    """What a form held: its small fields, the file's name, and what was cut from the file."""

    cutter: LineCutter
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    _name: str = ""
    _header: bytes = b""
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _value: bytearray = field(default_factory=bytearray)
    _ready: list[str] = field(default_factory=list)
    _error: GatewayError | None = None

    # The parser's callbacks (they may not raise: a problem is kept and raised after).
    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._headers[self._header.lower()] = (
            self._headers.get(self._header.lower(), b"") + (data[start:end])
        )

    def on_header_end(self) -> None:
        self._header = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            self.filename = options.get(b"filename", b"upload.jsonl").decode("utf-8", "replace")
        self._headers = {}
        self._value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._error is not None:
            return
        try:
            if self._name == "file":
                self._ready += self.cutter.feed(data[start:end])
                return
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise BadRequest(f"The form field '{self._name}' is too long.", param=self._name)
        except GatewayError as error:
            self._error = error

    def on_part_end(self) -> None:
        if self._error is not None:
            return
        if self._name == "file":
            try:
                self._ready += self.cutter.close()
            except GatewayError as error:
                self._error = error
        elif self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace")
        self._name = ""

    def take(self) -> list[str]:
        """The chunks cut since the last call; a problem of the upload is raised."""
        if self._error is not None:
            raise self._error
        ready, self._ready = self._ready, []
        return ready


def boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UnsupportedMediaType("Upload the file as multipart/form-data.")
    return options[b"boundary"]


async def receive(
    content_type: str,
    stream: AsyncIterator[bytes],
    upload: Upload,
    store: Callable[[str], Awaitable[None]],
) -> None:
    """Parse the form as it streams in; each chunk of lines is stored once cut."""
    callbacks = {
        name: getattr(upload, name)
        for name in (
            "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end",
        )
    }  # fmt: skip
    parser = MultipartParser(boundary(content_type), callbacks)  # type: ignore[arg-type]
    async for piece in stream:
        try:
            parser.write(piece)
        except GatewayError:
            raise
        except Exception:
            raise BadRequest("The multipart form is malformed.") from None
        for chunk in upload.take():
            await store(chunk)
    parser.finalize()
    for chunk in upload.take():
        await store(chunk)
