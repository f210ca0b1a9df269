"""What batching and the cache save the grid, and what they cost, side by side in one run.

Starts the emulator and gateways on loopback (one gateway per batch window measured) and prints:

* batching (group commit): upstream submissions per completion and the latency of a request at
  low load (one request at a time) and at high load (an open-loop burst of requests per second,
  with the gateway's CPU per completion at that paced rate), for each
  ``upstream.submit_batch_window``; "added" is the mean latency above the window-0 run;
  and the submissions that 100 concurrent different requests make when each submission takes
  50 ms to be answered, as across a network (``--burst-delay``);
* cache: gateway CPU per request answered by the upstream (a miss) and per cache hit (the
  gateway's process CPU time over the run, divided by its requests), and the upstream jobs and
  submissions a burst of identical concurrent requests made (shared jobs).

The emulator answers at once (no queue, 1000 words/s) and the gateway polls every 20 ms, so the
latency measured is the gateway's own plus the window, not the grid's.

    .venv/bin/python bench/economy.py
    .venv/bin/python bench/economy.py --windows 0,5,20 --rate 200 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import percentile
from bench.servers import tree_usage
from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

HEADERS = {"authorization": f"Bearer {ALICE_KEY}"}
CHAT = "/v1/chat/completions"


def body(prompt: str) -> dict[str, Any]:
    return {"model": "gemma-2b", "messages": [{"role": "user", "content": prompt}]}


@dataclass
class LoadResult:
    latencies: list[float]
    submissions: int
    jobs: int
    failures: int
    cpu_ms: float = float("nan")  # gateway CPU per completion over the run

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p95_ms(self) -> float:
        return percentile(self.latencies, 95) * 1000 if self.latencies else float("nan")

    @property
    def per_completion(self) -> float:
        return self.submissions / max(len(self.latencies), 1)


async def timed(
    http: httpx.AsyncClient, prompt: str, headers: dict[str, str] | None = None
) -> float | None:
    started = time.perf_counter()
    try:
        answer = await http.post(CHAT, json=body(prompt), headers={**HEADERS, **(headers or {})})
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    return time.perf_counter() - started


async def counts(admin: httpx.AsyncClient) -> tuple[int, int]:
    stats = (await admin.get("/emulator/stats")).json()
    return int(stats["submit_requests"]), int(stats["jobs_created"])


async def low_load(
    gateway: Server, admin: httpx.AsyncClient, requests: int, tag: str
) -> LoadResult:
    """One request at a time: what batching costs a lone request."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        await timed(http, f"warm {tag} [[emulate:words 1]]")
        await admin.post("/emulator/stats/reset")
        results = [await timed(http, f"low {tag} {i} [[emulate:words 1]]") for i in range(requests)]
    submissions, jobs = await counts(admin)
    ok = [r for r in results if r is not None]
    return LoadResult(ok, submissions, jobs, len(results) - len(ok))


async def high_load(
    gateway: Server, admin: httpx.AsyncClient, rate: float, seconds: float, tag: str
) -> LoadResult:
    """An open-loop burst: ``rate`` requests per second for ``seconds``, all different."""
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as http:
        await timed(http, f"warm {tag} [[emulate:words 1]]")
        await admin.post("/emulator/stats/reset")
        before = tree_usage(gateway.process.pid).cpu
        start = time.perf_counter()

        async def at(i: int) -> float | None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            return await timed(http, f"high {tag} {i} [[emulate:words 1]]")

        results = await asyncio.gather(*(at(i) for i in range(total)))
        cpu = tree_usage(gateway.process.pid).cpu - before
    submissions, jobs = await counts(admin)
    ok = [r for r in results if r is not None]
    cpu_ms = cpu * 1000 / len(ok) if ok else float("nan")
    return LoadResult(ok, submissions, jobs, len(results) - len(ok), cpu_ms)


async def slow_burst(
    gateway: Server, admin: httpx.AsyncClient, count: int, delay: float, tag: str
) -> LoadResult:
    """``count`` different requests at once while every submission takes ``delay`` seconds."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as http:
        await timed(http, f"warm {tag} [[emulate:words 1]]")
        await admin.post("/emulator/faults", json={"submit": {"delay": delay, "repeat": True}})
        await admin.post("/emulator/stats/reset")
        results = await asyncio.gather(
            *(timed(http, f"burst {tag} {i} [[emulate:words 1]]") for i in range(count))
        )
        await admin.delete("/emulator/faults")
    submissions, jobs = await counts(admin)
    ok = [r for r in results if r is not None]
    return LoadResult(ok, submissions, jobs, len(results) - len(ok))


Row = tuple[float, LoadResult, LoadResult, LoadResult]


async def batching(
    tmp: Path,
    emulator: Server,
    windows: Sequence[float],
    low: int,
    rate: float,
    seconds: float,
    burst_delay: float,
) -> list[Row]:
    rows = []
    async with httpx.AsyncClient(base_url=emulator.url) as admin:
        for window in windows:
            config = gateway_config(
                emulator.url,
                upstream={
                    "base_url": emulator.url,
                    "poll_interval": 0.02,
                    "submit_batch_window": window,
                },
                limits={"keepalive_interval": 5.0, "default_deadline": 60},
                logging={"format": "json", "level": "warning"},
            )
            with running(start_gateway(tmp, config)) as gateway:
                tag = f"w{window:g}"
                quiet = await low_load(gateway, admin, low, tag)
                busy = await high_load(gateway, admin, rate, seconds, tag)
                burst = await slow_burst(gateway, admin, 100, burst_delay, tag)
            rows.append((window, quiet, busy, burst))
    return rows


def print_batching(rows: list[Row], rate: float, burst_delay: float) -> None:
    base_low = rows[0][1].mean_ms if rows and rows[0][0] == 0 else float("nan")
    base_high = rows[0][2].mean_ms if rows and rows[0][0] == 0 else float("nan")
    print("Batched submissions (latency: request sent -> whole answer read)")
    print(
        f"{'window':>8} | {'low load: mean':>14} {'added':>7} {'subm/compl':>10} | "
        f"{f'high load ({rate:g}/s): mean':>24} {'p95':>7} {'added':>7} {'subm/compl':>10} "
        f"{'failed':>6} {'CPU/compl':>9} | {f'100 at once, {burst_delay * 1000:g} ms submit':>26}"
    )
    for window, quiet, busy, burst in rows:
        print(
            f"{window:>6g}ms | {quiet.mean_ms:>12.1f}ms {quiet.mean_ms - base_low:>+6.1f} "
            f"{quiet.per_completion:>10.2f} | {busy.mean_ms:>22.1f}ms {busy.p95_ms:>5.0f}ms "
            f"{busy.mean_ms - base_high:>+6.1f} {busy.per_completion:>10.3f} {busy.failures:>6} "
            f"{busy.cpu_ms:>7.2f}ms | "
            f"{burst.submissions:>14} submissions"
        )


@dataclass
class CacheResult:
    miss_cpu_ms: float
    hit_cpu_ms: float
    miss_ms: float
    hit_ms: float
    burst: int
    burst_jobs: int
    burst_submissions: int


async def cpu_per_request(
    gateway: Server, http: httpx.AsyncClient, prompts: Sequence[str], concurrency: int
) -> tuple[float, float]:
    """(gateway CPU ms, mean latency ms) per request over ``prompts``, ``concurrency`` at once."""
    queue = list(prompts)
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            took = await timed(http, queue.pop())
            if took is not None:
                latencies.append(took)

    before = tree_usage(gateway.process.pid).cpu
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = tree_usage(gateway.process.pid).cpu - before
    return cpu * 1000 / len(prompts), statistics.fmean(latencies) * 1000


async def caching(tmp: Path, emulator: Server, requests: int, burst: int) -> CacheResult:
    config = gateway_config(
        emulator.url,
        upstream={"base_url": emulator.url, "poll_interval": 0.25},  # the default
        cache={"models": ["gemma-2b"], "max_entries": 100_000},
        limits={"keepalive_interval": 5.0, "default_deadline": 60},
        logging={"format": "json", "level": "warning"},
    )
    limits = httpx.Limits(max_connections=burst, max_keepalive_connections=burst)
    with running(start_gateway(tmp, config)) as gateway:
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as http,
            httpx.AsyncClient(base_url=emulator.url) as admin,
        ):
            await timed(http, "warm up [[emulate:words 20]]")
            # A job as the grid runs one, in brief: a queue, then 40 words at 20 words/s.
            job = "[[emulate:words 40]] [[emulate:queue 1]] [[emulate:wps 20]]"
            prompts = [f"cache {i} {job}" for i in range(requests)]
            miss_cpu, miss_ms = await cpu_per_request(gateway, http, prompts, 50)
            hit_cpu, _ = await cpu_per_request(gateway, http, prompts, 50)
            _, hit_ms = await cpu_per_request(gateway, http, prompts[:20], 1)  # alone: latency
            await admin.post("/emulator/stats/reset")
            same = "the same for all [[emulate:words 20]]"
            await asyncio.gather(*(timed(http, same) for _ in range(burst)))
            submissions, jobs = await counts(admin)
    return CacheResult(miss_cpu, hit_cpu, miss_ms, hit_ms, burst, jobs, submissions)


def print_caching(result: CacheResult) -> None:
    print("Response cache (jobs: 1 s queue, 40 words at 20 words/s; 50 requests at a time)")
    print(f"{'':>22} {'gateway CPU/request':>20} {'mean latency':>13}  (hits: one at a time)")
    print(f"{'miss (upstream job)':>22} {result.miss_cpu_ms:>18.2f}ms {result.miss_ms:>11.1f}ms")
    print(f"{'hit (no upstream call)':>22} {result.hit_cpu_ms:>18.2f}ms {result.hit_ms:>11.1f}ms")
    ratio = result.miss_cpu_ms / result.hit_cpu_ms if result.hit_cpu_ms > 0 else float("inf")
    print(f"{'':>22} a hit costs 1/{ratio:.1f} of a miss")
    print(
        f"{result.burst} identical concurrent requests: {result.burst_jobs} upstream job(s), "
        f"{result.burst_submissions} submission(s)"
    )


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="economy-"))
    windows = [float(w) for w in args.windows.split(",")]
    extra = ("--queue-seconds", "0", "--words-per-second", "1000")
    with running(start_emulator(tmp, *extra)) as emulator:
        rows = await batching(
            tmp, emulator, windows, args.low, args.rate, args.seconds, args.burst_delay / 1000
        )
        cached = await caching(tmp, emulator, args.cache_requests, args.burst)
    print_batching(rows, args.rate, args.burst_delay / 1000)
    print()
    print_caching(cached)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--windows", default="0,10,50", help="batch windows in ms, 0 first")
    parser.add_argument("--low", type=int, default=60, help="sequential requests at low load")
    parser.add_argument("--rate", type=float, default=100, help="requests per second at high load")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the high-load burst")
    parser.add_argument("--cache-requests", type=int, default=200, help="requests per cache run")
    parser.add_argument("--burst", type=int, default=50, help="identical concurrent requests")
    parser.add_argument(
        "--burst-delay", type=float, default=50, help="ms each submission takes in the burst"
    )
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
