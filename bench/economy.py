"""What batching and the cache save the grid, and what they cost, side by side in one run.

Starts the emulator and gateways on loopback (one gateway per batch window measured) and prints:

* batching: upstream submissions per completion and the latency of a request at low load (one
  request at a time) and at high load (an open-loop burst of requests per second), for each
  ``upstream.submit_batch_window``; "added" is the mean latency above the window-0 run;
* cache: gateway CPU per request answered by the upstream (a miss) and per cache hit, and the
  upstream jobs a burst of identical requests made.

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
        start = time.perf_counter()

        async def at(i: int) -> float | None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            return await timed(http, f"high {tag} {i} [[emulate:words 1]]")

        results = await asyncio.gather(*(at(i) for i in range(total)))
    submissions, jobs = await counts(admin)
    ok = [r for r in results if r is not None]
    return LoadResult(ok, submissions, jobs, len(results) - len(ok))


async def batching(
    tmp: Path, emulator: Server, windows: Sequence[float], low: int, rate: float, seconds: float
) -> list[tuple[float, LoadResult, LoadResult]]:
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
            rows.append((window, quiet, busy))
    return rows


def print_batching(rows: list[tuple[float, LoadResult, LoadResult]], rate: float) -> None:
    base_low = rows[0][1].mean_ms if rows and rows[0][0] == 0 else float("nan")
    base_high = rows[0][2].mean_ms if rows and rows[0][0] == 0 else float("nan")
    print("Batched submissions (latency: request sent -> whole answer read)")
    print(
        f"{'window':>8} | {'low load: mean':>14} {'added':>7} {'subm/compl':>10} | "
        f"{f'high load ({rate:g}/s): mean':>24} {'p95':>7} {'added':>7} {'subm/compl':>10} "
        f"{'failed':>6}"
    )
    for window, quiet, busy in rows:
        print(
            f"{window:>6g}ms | {quiet.mean_ms:>12.1f}ms {quiet.mean_ms - base_low:>+6.1f} "
            f"{quiet.per_completion:>10.2f} | {busy.mean_ms:>22.1f}ms {busy.p95_ms:>5.0f}ms "
            f"{busy.mean_ms - base_high:>+6.1f} {busy.per_completion:>10.3f} {busy.failures:>6}"
        )


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="economy-"))
    windows = [float(w) for w in args.windows.split(",")]
    extra = ("--queue-seconds", "0", "--words-per-second", "1000")
    with running(start_emulator(tmp, *extra)) as emulator:
        rows = await batching(tmp, emulator, windows, args.low, args.rate, args.seconds)
    print_batching(rows, args.rate)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--windows", default="0,2,5,10,25", help="batch windows in ms, 0 first")
    parser.add_argument("--low", type=int, default=40, help="sequential requests at low load")
    parser.add_argument("--rate", type=float, default=150, help="requests per second at high load")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the high-load burst")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
