"""Soak: 1,000 concurrent streams, then a steady load for N minutes; errors, memory, lag, leaks.

    .venv/bin/python bench/soak.py                     # 1,000 streams, then 10 minutes steady
    .venv/bin/python bench/soak.py --minutes 1         # a quicker run
    .venv/bin/python bench/soak.py --streams 2000 --concurrency 200 --minutes 30

Starts an emulator and a gateway (one worker) on loopback as subprocesses. Every request is a
chat completion whose prompt asks the emulator for a known reply (``[[emulate:reply ...]]``),
so each streamed text is checked word for word. Measured:

- errors: any status other than 200, a stream without ``[DONE]``, or a text that differs;
- the gateway's resident memory (psutil) at rest before, at its peak during, and at rest after
  each phase;
- event-loop lag, seen from outside: a separate process asks ``GET /healthz`` every 100 ms
  and records how long the answer took (a busy or blocked loop answers late);
- what is left in flight after each phase, from ``/metrics``: jobs in the poller, open
  streams, requests, asyncio tasks (against the idle baseline) and the process's open files.

Prints one table at the end (and progress lines meanwhile); exits 1 on any error or leak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
import psutil

if __package__ in (None, ""):  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.observe import in_flight, metric_samples
from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

_VOCABULARY = (
    "river light signal garden quiet bright window letter story bridge simple careful steady "
    "useful gentle clear early open final rapid honest modern ancient hidden shared"
)
WORDS = tuple(_VOCABULARY.split())
PROBE_INTERVAL = 0.1


# ---------------------------------------------------------------- the lag probe (own process)


def _probe(url: str, stop: EventType, out: Any) -> None:
    """``GET /healthz`` every 100 ms until ``stop``; sends [(unix time, seconds)] to ``out``."""
    samples: list[tuple[float, float]] = []
    with httpx.Client(timeout=30) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get(url + "/healthz")
                samples.append((time.time(), time.perf_counter() - started))
            except httpx.HTTPError:
                samples.append((time.time(), float("inf")))
            next_at += PROBE_INTERVAL
            time.sleep(max(0.0, next_at - time.monotonic()))
    out.put(samples)


@contextlib.contextmanager
def lag_probe(url: str) -> Iterator[list[tuple[float, float]]]:
    """Runs the probe in its own process for the block; the list fills in when it ends."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    queue = context.Queue()
    process = context.Process(target=_probe, args=(url, stop, queue), daemon=True)
    process.start()
    samples: list[tuple[float, float]] = []
    try:
        yield samples
    finally:
        stop.set()
        samples.extend(queue.get(timeout=60))
        process.join(10)


# ---------------------------------------------------------------- one request


@dataclass
class Tally:
    requests: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    first_text: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.ok += other.ok
        self.errors.update(other.errors)
        self.durations += other.durations
        self.first_text += other.first_text


def _reply(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def one_stream(
    client: httpx.AsyncClient, url: str, label: str, words: int, tally: Tally
) -> None:
    reply = f"{label}: " + _reply(random.Random(label), words)
    body = {
        "model": "gemma-2b",
        "stream": True,
        "messages": [{"role": "user", "content": f"{label} [[emulate:reply {reply}]]"}],
    }
    tally.requests += 1
    started = time.perf_counter()
    parts: list[str] = []
    done = False
    try:
        async with client.stream("POST", url, json=body) as answer:
            if answer.status_code != 200:
                await answer.aread()
                tally.errors[f"http {answer.status_code}"] += 1
                return
            async for line in answer.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    tally.errors[f"stream error {event['error'].get('code')}"] += 1
                    return
                content = event["choices"][0]["delta"].get("content") if event["choices"] else None
                if content:
                    if not parts:
                        tally.first_text.append(time.perf_counter() - started)
                    parts.append(content)
    except httpx.HTTPError as exc:
        tally.errors[type(exc).__name__] += 1
        return
    tally.durations.append(time.perf_counter() - started)
    if not done:
        tally.errors["no [DONE]"] += 1
    elif "".join(parts) != reply:
        tally.errors["wrong text"] += 1
    else:
        tally.ok += 1


# ---------------------------------------------------------------- measuring the gateway


@dataclass
class Snapshot:
    rss_mb: float
    tasks: float
    fds: int
    client_connections: int  # open connections from clients (the probe's keep-alive is one)
    upstream_connections: int  # the upstream pool's (kept alive, up to max_connections)
    jobs: float
    streams: float
    requests: float

    @property
    def other_fds(self) -> int:
        """Open files that are neither kind of connection: these must not grow."""
        return self.fds - self.client_connections - self.upstream_connections


def snapshot(gateway: Server, emulator: Server) -> Snapshot:
    process = psutil.Process(gateway.process.pid)
    state = in_flight(gateway)
    # Any state: the pool's idle connections the emulator closed wait in CLOSE_WAIT until
    # the pool is used again, and they are still open files.
    connections = [c for c in process.net_connections("tcp") if c.status != "LISTEN"]
    return Snapshot(
        rss_mb=process.memory_info().rss / 2**20,
        tasks=state.tasks,
        fds=process.num_fds(),
        client_connections=sum(1 for c in connections if c.laddr.port == gateway.port),
        upstream_connections=sum(
            1 for c in connections if c.raddr and c.raddr.port == emulator.port
        ),
        jobs=state.jobs,
        streams=state.streams,
        requests=state.requests,
    )


async def settle(gateway: Server, emulator: Server, limit: float = 60.0) -> Snapshot:
    """Wait until nothing is in flight, then a little more for the loop to go quiet."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = await asyncio.to_thread(in_flight, gateway)
        if state.idle:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(2.0)
    return await asyncio.to_thread(snapshot, gateway, emulator)


class RssSampler:
    """The gateway's RSS every half second while running."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(self.process.memory_info().rss / 2**20)
            await asyncio.sleep(0.5)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass
class Phase:
    name: str
    seconds: float
    tally: Tally
    before: Snapshot
    after: Snapshot
    peak_rss_mb: float
    started: float = 0.0  # unix time, to pick the probe's samples of this phase
    ended: float = 0.0
    lag: list[float] = field(default_factory=list)  # probe latencies (s) during the phase


def _lag_between(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [latency for at, latency in samples if start <= at <= end]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- the two phases


async def burst(client: httpx.AsyncClient, url: str, streams: int, words: int) -> Tally:
    tallies = [Tally() for _ in range(streams)]
    await asyncio.gather(
        *(one_stream(client, url, f"burst-{i}", words, tallies[i]) for i in range(streams))
    )
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total


async def steady(
    client: httpx.AsyncClient,
    url: str,
    concurrency: int,
    minutes: float,
    words: int,
    gateway: Server,
) -> Tally:
    end = time.monotonic() + minutes * 60
    tallies = [Tally() for _ in range(concurrency)]

    async def worker(index: int) -> None:
        n = 0
        while time.monotonic() < end:
            await one_stream(client, url, f"steady-{index}-{n}", words, tallies[index])
            n += 1

    async def progress() -> None:
        started = time.monotonic()
        while time.monotonic() < end:
            await asyncio.sleep(min(60.0, max(1.0, end - time.monotonic())))
            done = sum(t.requests for t in tallies)
            errors = sum(sum(t.errors.values()) for t in tallies)
            rss = psutil.Process(gateway.process.pid).memory_info().rss / 2**20
            print(
                f"  steady {time.monotonic() - started:5.0f} s: {done} requests, "
                f"{errors} errors, gateway RSS {rss:.0f} MB",
                flush=True,
            )

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    reporter.cancel()
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total


def _config(emulator: Server, poll_interval: float, folder: Path) -> dict[str, Any]:
    config = gateway_config(emulator.url)
    # A file ledger, as deployed: an in-memory one would grow with every request and hide leaks.
    config["ledger"] = {"url": f"sqlite:///{folder / 'usage.db'}"}
    config["upstream"].update({"poll_interval": poll_interval})
    config["limits"].update({"default_deadline": 300, "keepalive_interval": 15})
    config["logging"] = {"format": "json", "level": "info"}
    return config


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))


def _client(args: argparse.Namespace, connections: int) -> httpx.AsyncClient:
    """A client per phase, closed before the phase's "after" reading: its kept-alive
    connections would otherwise count as the gateway's open files."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(300),
        headers={"authorization": f"Bearer {ALICE_KEY}"},
    )


async def run(args: argparse.Namespace, emulator: Server, gateway: Server) -> list[Phase]:
    url = gateway.url + "/v1/chat/completions"

    async def warm_up() -> Tally:
        tally = Tally()
        async with _client(args, 1) as client:
            for i in range(20):
                await one_stream(client, url, f"warm-{i}", args.words, tally)
        return tally

    async def burst_phase() -> Tally:
        async with _client(args, args.streams) as client:
            return await burst(client, url, args.streams, args.words)

    async def steady_phase() -> Tally:
        async with _client(args, args.concurrency) as client:
            return await steady(client, url, args.concurrency, args.minutes, args.words, gateway)

    phases: list[Phase] = []
    with lag_probe(gateway.url) as lag:
        warm = await warm_up()
        if warm.errors:
            raise SystemExit(f"warm-up failed: {dict(warm.errors)}")
        baseline = await settle(gateway, emulator)
        print(
            f"baseline: RSS {baseline.rss_mb:.0f} MB, {baseline.tasks:.0f} tasks, "
            f"{baseline.fds} open files",
            flush=True,
        )
        work: list[tuple[str, Callable[[], Awaitable[Tally]]]] = [
            (f"{args.streams} concurrent streams", burst_phase),
            (f"steady {args.minutes:g} min x {args.concurrency}", steady_phase),
        ]
        for name, phase_work in work:
            before = await asyncio.to_thread(snapshot, gateway, emulator)
            print(f"{name} ...", flush=True)
            started_wall, started = time.time(), time.perf_counter()
            with RssSampler(gateway.process.pid) as rss:
                tally = await phase_work()
            seconds = time.perf_counter() - started
            ended_wall = time.time()
            after = await settle(gateway, emulator)
            peak = max(rss.samples, default=0.0)
            phases.append(
                Phase(name, seconds, tally, before, after, peak, started_wall, ended_wall)
            )
            print(
                f"  done in {seconds:.1f} s: {tally.ok}/{tally.requests} right, "
                f"errors {dict(tally.errors)}",
                flush=True,
            )
    for phase in phases:
        phase.lag = _lag_between(lag, phase.started, phase.ended)
    phases.insert(0, Phase("baseline (idle)", 0, Tally(), baseline, baseline, baseline.rss_mb))
    return phases


def table(phases: list[Phase]) -> str:
    rows = [
        (
            "phase",
            "requests",
            "right",
            "errors",
            "p50/p99 s",
            "RSS before/peak/after MB",
            "lag p50/p99/max ms",
            "tasks before/after",
            "files before/after",
            "conns client/upstream after",
            "left in flight",
        )
    ]
    for p in phases:
        t = p.tally
        lag = p.lag
        rows.append(
            (
                p.name,
                str(t.requests),
                str(t.ok),
                str(sum(t.errors.values())),
                f"{_pct(t.durations, 0.5):.2f}/{_pct(t.durations, 0.99):.2f}"
                if t.durations
                else "-",
                f"{p.before.rss_mb:.0f}/{p.peak_rss_mb:.0f}/{p.after.rss_mb:.0f}",
                "/".join(f"{v * 1000:.1f}" for v in (_pct(lag, 0.5), _pct(lag, 0.99), max(lag)))
                if lag
                else "-",
                f"{p.before.tasks:.0f}/{p.after.tasks:.0f}",
                f"{p.before.fds}/{p.after.fds}",
                f"{p.after.client_connections}/{p.after.upstream_connections}",
                f"jobs {p.after.jobs:.0f}, streams {p.after.streams:.0f}, "
                f"requests {p.after.requests:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams at once")
    parser.add_argument("--minutes", type=float, default=10.0, help="steady load duration")
    parser.add_argument("--concurrency", type=int, default=100, help="steady concurrent streams")
    parser.add_argument("--words", type=int, default=24, help="words per answer")
    parser.add_argument("--wps", type=float, default=20.0, help="emulator words per second")
    parser.add_argument("--queue", type=float, default=0.5, help="emulator queue seconds")
    parser.add_argument("--poll-interval", type=float, default=0.25, help="gateway poll interval")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs")
    args = parser.parse_args(argv)
    _raise_file_limit()
    folder = tempfile.mkdtemp(prefix="gateway-soak-")
    tmp = Path(folder)
    emulator_args = ["--queue-seconds", str(args.queue), "--words-per-second", str(args.wps)]
    with running(start_emulator(tmp, *emulator_args)) as emulator:
        with running(start_gateway(tmp, _config(emulator, args.poll_interval, tmp))) as gateway:
            phases = asyncio.run(run(args, emulator, gateway))
            samples = metric_samples(gateway)
        tracebacks = gateway.output().count("Traceback")
    print()
    print(table(phases))
    base, last = phases[0].after, phases[-1].after
    leaks = []
    if last.jobs or last.streams or last.requests:
        leaks.append("work left in flight")
    if last.tasks > base.tasks:
        leaks.append(f"{last.tasks - base.tasks:.0f} more asyncio tasks than at rest")
    if last.client_connections > base.client_connections:
        leaks.append("client connections left open")
    if last.other_fds > base.other_fds + 2:
        leaks.append(f"{last.other_fds - base.other_fds} more open files than at rest")
    errors = sum(sum(p.tally.errors.values()) for p in phases)
    statuses = {
        dict(labels).get("status"): value
        for (name, labels), value in samples.items()
        if name == "gateway_requests_total"
    }
    print(
        f"\nerrors: {errors}; tracebacks in the gateway log: {tracebacks}; "
        f"leaks: {', '.join(leaks) or 'none'}; gateway statuses: {statuses}"
    )
    if args.keep:
        print(f"logs: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if errors or leaks or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
