"""CPU per update of a stream, in one process: what a job's news costs from poll to chunk.

The gateway's app runs in this process behind its own HTTP protocol (gateway/http/connections.py),
each connection's writes counted instead of sent; the emulator runs in its own process. The
same requests run twice: words at ``--wps`` (a stream gets news every tick) and all at once (one
update). The difference in this process's CPU time, divided by the difference in updates, is
what one update costs: the poll's share, the wake-up, the choice's update, the chunk and the
trip down the ASGI stack; not the system call of a real write (``bench/hotpath.py`` times that).
With ``--no-stream`` the same for answers collected whole (the difference is then per tick).

    .venv/bin/python bench/updates.py                        # 1,000 streams of 80 words
    .venv/bin/python bench/updates.py --streams 2000 --no-stream
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from bench import servers
from gateway.config import ServerSettings, parse_settings
from gateway.http.connections import GuardedHttpToolsProtocol
from gateway.ops.collector import tune_collector
from tests.inprocess import started

#: All at once: every word is in the log at the first poll.
INSTANT_WPS = 100_000


class CountingTransport:
    """What uvicorn's protocol needs of a transport; writes counted, the end remembered."""

    def __init__(self) -> None:
        self.writes = 0
        self.tail = b""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.tail = (self.tail + bytes(data))[-8:]

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def run(app: Any, key: str, args: argparse.Namespace, wps: int) -> tuple[float, int]:
    """CPU seconds and writes for ``args.streams`` requests whose jobs write ``wps`` words/s."""
    config = Config(app=app, lifespan="off", log_config=None, access_log=False)
    config.load()
    loop = asyncio.get_running_loop()
    end = b"0\r\n\r\n" if args.stream else b"}"
    transports: list[CountingTransport] = []
    protocols: list[GuardedHttpToolsProtocol] = []
    started_cpu = time.process_time()
    for n in range(args.streams):
        prompt = f"Updates {wps} {n}. [[emulate:words {args.words}]] [[emulate:wps {wps}]]"
        message = {"role": "user", "content": prompt}
        body = {"model": servers.MODEL, "stream": args.stream, "messages": [message]}
        data = json.dumps(body).encode()
        protocol = GuardedHttpToolsProtocol(
            config, ServerState(), {}, loop, limits=ServerSettings()
        )
        transport = CountingTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\n"
            + f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n".encode()
            + f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        transports.append(transport)
        protocols.append(protocol)
        if n % 50 == 49:
            await asyncio.sleep(0.02)  # ~2,500 new requests a second at most
    while not all(t.tail.endswith(end) for t in transports):  # noqa: ASYNC110 (polled: no hook)
        await asyncio.sleep(0.05)
    cpu = time.process_time() - started_cpu
    for protocol in protocols:
        protocol.connection_lost(None)
    return cpu, sum(t.writes for t in transports)


async def main(args: argparse.Namespace) -> None:
    logs = Path(tempfile.mkdtemp(prefix="updates-"))
    with servers.start_emulator(logs, "updates", 0.5) as emulator:
        key = "sk-bench-updates"
        config = servers.gateway_settings(emulator.url, key, args.tick, 1, logs / "usage.db")
        config["logging"]["level"] = "warning"
        settings = parse_settings(config)
        async with started(settings) as app:
            tune_collector(settings.server)  # as `gateway serve` does
            fast_cpu, fast_writes = await run(app, key, args, INSTANT_WPS)
            slow_cpu, slow_writes = await run(app, key, args, args.wps)
    what = "streamed" if args.stream else "collected whole"
    print(f"{args.streams} requests of {args.words} words, {what}, tick {args.tick:g} s")
    for label, cpu, writes in (
        ("all at once", fast_cpu, fast_writes),
        (f"{args.wps:g} words/s", slow_cpu, slow_writes),
    ):
        print(f"  {label + ':':<16} {cpu:6.2f} s CPU, {writes:>7,} writes")
    extra = slow_cpu - fast_cpu
    if args.stream:
        updates = slow_writes - fast_writes
        print(f"  per update: {extra / max(updates, 1) * 1e6:.1f} us ({updates:,} updates more)")
    else:
        ticks = args.streams * max(args.words / args.wps / args.tick - 1, 1)
        print(f"  per job and tick: {extra / ticks * 1e6:.1f} us (~{ticks:,.0f} ticks more)")


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000, help="requests (1000)")
    parser.add_argument("--words", type=int, default=80, help="words per answer (80)")
    parser.add_argument("--wps", type=float, default=10.0, help="words per second (10)")
    parser.add_argument("--tick", type=float, default=0.25, help="poll interval (0.25)")
    parser.add_argument(
        "--no-stream", dest="stream", action="store_false", help="answers collected whole"
    )
    uvloop.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
