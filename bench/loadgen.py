"""The load generator: many OpenAI-style clients on raw asyncio streams, in its own process.

A general-purpose HTTP client costs more CPU per event than the server under test spends on
it, and on a 2-core machine that would measure the client. This one speaks just enough
HTTP/1.1 (keep-alive, chunked or sized bodies) and parses SSE frames with ``bytes.find``;
it only stamps arrival times, and leaves the analysis to the parent.

Run as ``python -m bench.loadgen`` with a JSON spec on stdin (see :class:`Spec`); the result
(one record per request, see :class:`Record`) is JSON on stdout. Workloads:

- ``streams``: each of ``concurrency`` clients sends ``stream: true`` requests back to back
  until ``stop_at``, recording when each word of the answer arrived.
- ``completions``: the same with non-streamed requests, recording start and end.
- ``hold``: each client opens one stream, reads until the first text, and keeps it open until
  ``hold_until``.
- ``direct``: the floor for the added delay. No gateway: the clients submit jobs straight to the
  jobs API and one coalesced poller here asks for all of them every ``tick`` (``chunk_ids`` ids
  per request, as the gateway does), stamping each word when the status answer arrived.

Arrival times are those of the bytes reaching the process (see :class:`StampingReader`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import random
import re
import resource
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

_WORD_START = re.compile(r"(?<!\S)\S")
_HEAD_END = b"\r\n\r\n"
APP = "gridrepublic:text-inference"


class HTTPError(Exception):
    """The connection broke, or the answer was not HTTP/1.1 as expected."""


@dataclass(slots=True)
class Head:
    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        return self.headers.get("transfer-encoding", "").lower() == "chunked"

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


def parse_head(raw: bytes) -> Head:
    """Status line and headers (names lower-cased) of a response head, CRLFCRLF included."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError(f"not an HTTP/1.x status line: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Head(int(parts[1]), headers)


class StampingReader(asyncio.StreamReader):
    """A stream reader that notes when its bytes arrived.

    The moment ``data_received`` hands bytes over is when the client received them. A task
    that parses them runs later, after the event loop has delivered the other sockets' data
    of the same moment: with 500 streams answering together, stamping there would time the
    load generator's own queue, not the server.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(limit=limit)
        self._fed = 0
        self._marks: list[tuple[int, float]] = []  # (bytes fed so far, when)

    def feed_data(self, data: bytes) -> None:
        self._fed += len(data)
        self._marks.append((self._fed, time.time()))
        super().feed_data(data)

    def arrived(self, offset: int) -> float:
        """When the byte before ``offset`` (counted from the connection's start) arrived."""
        index = bisect.bisect_left(self._marks, (offset, 0.0))
        return self._marks[index][1] if index < len(self._marks) else time.time()

    def forget_before(self, offset: int) -> None:
        """Drop the marks of bytes before ``offset``, already read (keeps the list short)."""
        index = bisect.bisect_left(self._marks, (offset, 0.0))
        if index:
            del self._marks[:index]


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened transparently after a close."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: StampingReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.consumed = 0  # bytes of the connection read so far
        self.arrival = 0.0  # when the last byte of the piece ``body`` just yielded arrived

    async def _open(self) -> tuple[StampingReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            # asyncio.open_connection, with a reader that stamps what arrives.
            loop = asyncio.get_running_loop()
            reader = StampingReader(limit=1 << 20)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.create_connection(lambda: protocol, self.host, self.port)
            self._reader = reader
            self._writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            self.consumed = 0
        return self._reader, self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, method: str, path: str, headers: bytes, body: bytes) -> Head:
        """Send a request and read the response head; then read the body with :meth:`body`."""
        reader, writer = await self._open()
        reader.forget_before(self.consumed)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n".encode()
            + headers
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        try:
            raw = await reader.readuntil(_HEAD_END)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            self.close()
            raise HTTPError(f"no response head ({type(exc).__name__})") from None
        self.consumed += len(raw)
        return parse_head(raw)

    async def body(self, head: Head) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; the connection is reusable once exhausted."""
        assert self._reader is not None
        reader = self._reader
        try:
            if head.chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0], 16)
                    if size == 0:
                        self.consumed += len(size_line) + len(await reader.readuntil(b"\r\n"))
                        break
                    data = await reader.readexactly(size + 2)
                    self.consumed += len(size_line) + len(data)
                    self.arrival = reader.arrived(self.consumed)
                    yield data[:-2]
            elif "content-length" in head.headers:
                data = await reader.readexactly(int(head.headers["content-length"]))
                self.consumed += len(data)
                self.arrival = reader.arrived(self.consumed)
                yield data
            else:
                data = await reader.read()
                self.arrival = time.time()
                yield data
                self.close()
                return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as e:
            self.close()
            raise HTTPError(f"body cut short ({type(e).__name__})") from None
        if not head.keep_alive:
            self.close()


def count_words(previous_in_word: bool, delta: str) -> tuple[int, bool]:
    """Words that start in ``delta`` (a word continuing across deltas counts once), and
    whether ``delta`` ends inside a word."""
    if not delta:
        return 0, previous_in_word
    starts = len(_WORD_START.findall(delta))
    if previous_in_word and not delta[0].isspace():
        starts -= 1
    return starts, not delta[-1].isspace()


@dataclass(slots=True)
class Record:
    """One request as the client saw it (wall-clock seconds, as the emulator's timelines)."""

    t0: float
    t_head: float = 0.0
    t_end: float = 0.0
    status: int = 0
    job_id: str | None = None
    words: list[float] = field(default_factory=list)  # arrival time of each word, in order
    chars: int = 0
    error: str | None = None


class SSEReader:
    """Splits SSE frames, pulls the content of each chunk, and stamps each word's arrival."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self._buffer = b""
        self._in_word = False
        self.done = False

    def feed(self, data: bytes, now: float) -> None:
        buffer = self._buffer + data
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            self._frame(buffer[start:end], now)
            start = end + 2
        self._buffer = buffer[start:]

    def _frame(self, frame: bytes, now: float) -> None:
        for line in frame.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments (": ping") and other fields
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                self.record.error = f"not JSON: {payload[:80]!r}"
                continue
            self._chunk(chunk, now)

    def _chunk(self, chunk: dict[str, Any], now: float) -> None:
        record = self.record
        if "error" in chunk:
            record.error = str(chunk["error"].get("message") or chunk["error"])[:200]
            return
        choices = chunk.get("choices") or ()
        if not choices:
            return
        delta = choices[0].get("delta") or choices[0]
        if record.job_id is None:
            fields = delta.get("provider_specific_fields") or chunk
            if isinstance(fields, dict) and isinstance(fields.get("job_id"), str):
                record.job_id = fields["job_id"]
        text = delta.get("content") or delta.get("text") or ""
        if text:
            record.chars += len(text)
            new, self._in_word = count_words(self._in_word, text)
            record.words.extend([now] * new)


@dataclass(slots=True)
class Spec:
    kind: str  # "streams" | "completions" | "hold"
    host: str
    port: int
    api_key: str
    model: str
    concurrency: int
    prompt: str  # str.format'ed with n= a unique request number
    start_at: float  # wall clock: first request (clients spread over ``ramp``)
    stop_at: float  # wall clock: no new request after this
    ramp: float = 0.0
    hold_until: float = 0.0
    path: str = "/v1/chat/completions"
    seed: int = 0  # distinguishes the prompts of several load processes
    think: float = 0.0  # a random pause of up to this long before each request
    tick: float = 0.25  # ``direct`` only: poll interval
    chunk_ids: int = 241  # ``direct`` only: ids per status request
    #: several replicas of the server: client i talks to ``ports[i % len(ports)]`` (else ``port``)
    ports: list[int] = field(default_factory=list)

    def port_of(self, index: int) -> int:
        return self.ports[index % len(self.ports)] if self.ports else self.port


@dataclass(slots=True)
class Client:
    spec: Spec
    index: int
    records: list[Record]
    counter: list[int]
    raw: list[tuple[Record, list[tuple[float, bytes]]]]

    def _body(self, stream: bool) -> bytes:
        self.counter[0] += 1
        n = self.spec.seed * 10_000_000 + self.counter[0]
        message = {"role": "user", "content": self.spec.prompt.format(n=n)}
        return json.dumps(
            {"model": self.spec.model, "messages": [message], "stream": stream}
        ).encode()

    def _headers(self) -> bytes:
        return (
            f"authorization: Bearer {self.spec.api_key}\r\n"
            "content-type: application/json\r\naccept: */*\r\n"
        ).encode()

    async def run(self) -> None:
        spec = self.spec
        offset = spec.ramp * self.index / max(1, spec.concurrency)
        await asyncio.sleep(max(0.0, spec.start_at + offset - time.time()))
        conn = Connection(spec.host, spec.port_of(self.index))
        try:
            if spec.kind == "hold":
                await self._one(conn, stream=True, hold=True)
                return
            while time.time() < spec.stop_at:
                await _think(spec)
                await self._one(conn, stream=spec.kind == "streams", hold=False)
        finally:
            conn.close()

    async def _one(self, conn: Connection, stream: bool, hold: bool) -> None:
        record = Record(t0=time.time())
        self.records.append(record)
        try:
            head = await conn.request("POST", self.spec.path, self._headers(), self._body(stream))
            record.t_head = time.time()
            record.status = head.status
            record.job_id = head.headers.get("x-job-id")
            if stream and head.status == 200:
                await self._read_stream(conn, head, record, hold)
            else:
                body = b"".join([piece async for piece in conn.body(head)])
                if head.status != 200:
                    record.error = body[:200].decode("utf-8", "replace")
                else:
                    record.chars = len(body)
        except HTTPError as exc:
            record.error = str(exc)
            conn.close()
            await asyncio.sleep(0.05)
        record.t_end = time.time()

    async def _read_stream(self, conn: Connection, head: Head, record: Record, hold: bool) -> None:
        if hold:
            reader = SSEReader(record)
            async for piece in conn.body(head):
                reader.feed(piece, conn.arrival)
                if record.words:
                    record.t_end = time.time()
                    await asyncio.sleep(max(0.0, self.spec.hold_until - time.time()))
                    conn.close()  # the client leaves; the server should notice and let go
                    return
            return
        # Keep the bytes with their arrival times now; parsing waits until the run is over.
        pieces: list[tuple[float, bytes]] = []
        self.raw.append((record, pieces))
        async for piece in conn.body(head):
            pieces.append((conn.arrival, piece))


def parse_streams(raw: list[tuple[Record, list[tuple[float, bytes]]]]) -> None:
    """Turn the stamped bytes of each stream into its words' arrival times."""
    for record, pieces in raw:
        reader = SSEReader(record)
        for now, piece in pieces:
            reader.feed(piece, now)
        if not reader.done and record.error is None:
            record.error = "stream ended without [DONE]"


async def _think(spec: Spec) -> None:
    """Clients that send their next request the instant a poll tick ended their last one
    would start every job in step with the ticks, and words would enter the log at a fixed
    phase of the tick instead of a uniformly random one: a pause breaks that lock-step."""
    if spec.think > 0:
        await asyncio.sleep(random.uniform(0.0, spec.think))


class DirectPoller:
    """A coalescing poller without the gateway around it: the physical limit of polling."""

    def __init__(self, spec: Spec, records: list[Record]) -> None:
        self.spec = spec
        self.records = records
        self.jobs: dict[str, tuple[Record, asyncio.Event, list[int]]] = {}
        self.auth = f"authorization: Bearer {spec.api_key}\r\n".encode()
        self.counter = 0

    async def client(self, index: int) -> None:
        spec = self.spec
        offset = spec.ramp * index / max(1, spec.concurrency)
        await asyncio.sleep(max(0.0, spec.start_at + offset - time.time()))
        conn = Connection(spec.host, spec.port)
        try:
            while time.time() < spec.stop_at:
                await _think(spec)
                self.counter += 1
                prompt = spec.prompt.format(n=spec.seed * 10_000_000 + self.counter)
                command = json.dumps({"inputs": [prompt]})
                body = json.dumps(
                    {
                        "app": "gridrepublic:text-inference",
                        "tag": spec.model,
                        "commandLine": command,
                    }
                ).encode()
                record = Record(t0=time.time())
                self.records.append(record)
                try:
                    head = await conn.request(
                        "POST", "/jobs", self.auth + b"content-type: application/json\r\n", body
                    )
                    answer = json.loads(b"".join([p async for p in conn.body(head)]))
                except HTTPError as exc:
                    record.error = str(exc)
                    await asyncio.sleep(0.05)
                    continue
                record.t_head = time.time()
                record.job_id = answer["ids"][0]
                done = asyncio.Event()
                self.jobs[answer["ids"][0]] = (record, done, [0])
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(1.0, spec.stop_at + 60 - time.time())):
                        await done.wait()
        finally:
            conn.close()

    async def poll(self) -> None:
        spec = self.spec
        conns: list[Connection] = []
        moment = spec.start_at
        while time.time() < spec.stop_at + 60 and (self.jobs or time.time() < spec.stop_at):
            moment += spec.tick
            await asyncio.sleep(max(0.0, moment - time.time()))
            ids = list(self.jobs)
            chunks = [ids[i : i + spec.chunk_ids] for i in range(0, len(ids), spec.chunk_ids)]
            while len(conns) < len(chunks):
                conns.append(Connection(spec.host, spec.port))
            await asyncio.gather(
                *(self._status(c, ids) for c, ids in zip(conns, chunks, strict=False))
            )
        for conn in conns:
            conn.close()

    async def _status(self, conn: Connection, ids: list[str]) -> None:
        try:
            head = await conn.request("GET", "/jobs/" + ",".join(ids), self.auth, b"")
            body = b"".join([p async for p in conn.body(head)])
        except HTTPError:
            return
        now = conn.arrival  # the words reached this client when the answer did
        answer = json.loads(body).get("jobs") or {}
        for job_id in ids:
            job = answer.get(job_id)
            if job is None or job_id not in self.jobs:
                continue
            record, done, seen = self.jobs[job_id]
            state = job["states"]["default"]
            log: str = state["log"]
            if len(log) > seen[0]:
                new, _ = count_words(
                    bool(seen[0]) and not log[seen[0] - 1].isspace(), log[seen[0] :]
                )
                record.words.extend([now] * new)
                record.chars = len(log)
                seen[0] = len(log)
            if state["status"] in ("completed", "failed"):
                record.status = 200 if state["status"] == "completed" else 502
                record.t_end = now
                del self.jobs[job_id]
                done.set()


async def run(spec: Spec) -> list[Record]:
    records: list[Record] = []
    if spec.kind == "direct":
        direct = DirectPoller(spec, records)
        clients = [direct.client(i) for i in range(spec.concurrency)]
        await asyncio.gather(direct.poll(), *clients)
        return records
    counter = [0]
    raw: list[tuple[Record, list[tuple[float, bytes]]]] = []
    clients = [Client(spec, i, records, counter, raw) for i in range(spec.concurrency)]
    await asyncio.gather(*(c.run() for c in clients))
    parse_streams(raw)
    return records


def main() -> None:
    spec = Spec(**json.loads(sys.stdin.read()))
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    started = resource.getrusage(resource.RUSAGE_SELF)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        records = runner.run(run(spec))
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (used.ru_utime - started.ru_utime) + (used.ru_stime - started.ru_stime)
    result = {"pid": os.getpid(), "cpu": cpu, "records": [asdict(r) for r in records]}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
