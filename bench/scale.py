"""Past one process: the gateway with 1, 2 and 4 workers, with and without Redis, side by side.

With Redis the workers elect one poller per upstream account (``upstream.shared_polling``,
gateway/upstream/relay.py); without it each worker polls its own jobs. For each set-up the same
streams scenario as ``bench/run.py`` runs (a fresh emulator, the load generator in its own
process), and one table prints:

* status requests per tick for the account (the coalescing floor is the id chunks of all jobs);
* submissions per completion (group commit, gateway/upstream/batcher.py);
* delay added per word over the limit (the same jobs polled by a poller inside the load
  generator, no gateway): p50 and p99;
* gateway CPU per completion and resident memory per 1,000 streams.

    .venv/bin/python bench/scale.py                          # 2,000 streams, 1/2/4 workers
    .venv/bin/python bench/scale.py --streams 5000 --workers 4
    .venv/bin/python bench/scale.py --quick                  # 300 streams, short windows
    REDIS_URL=redis://127.0.0.1:6379/0 is used when set (else the Redis rows are skipped)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import scenarios, servers
from bench.scenarios import Context

RESULTS = servers.ROOT / "bench" / "results"


def _factory(workers: int, tick: float, redis_url: str | None) -> scenarios.SystemFactory:
    overrides: dict[str, Any] = {"server.max_connections": 20_000}
    if redis_url:
        overrides |= {"redis.url": redis_url, "redis.prefix": f"bench-{uuid.uuid4().hex[:8]}:"}

    def start(logs: Path, name: str, upstream: str) -> servers.System:
        return servers.start_gateway(logs, name, upstream, tick, workers, overrides)

    return start


def _row(label: str, result: dict[str, Any], floor: dict[str, Any]) -> str:
    completions = max(1, result["streams_in_window"])
    delay = result["delay_ms"]
    base = floor["delay_ms"]
    over_p50 = (delay.get("p50") or 0) - (base.get("p50") or 0)
    over_p99 = (delay.get("p99") or 0) - (base.get("p99") or 0)
    cpu_ms = result["server_cpu_seconds"] * 1000 / completions
    rss_per_k = result["rss_max_mb"] * 1000 / max(1, result["concurrency"])
    return (
        f"{label:<22} {result['status_requests_per_tick']:>9.2f} "
        f"{result['submits_in_window'] / completions:>10.3f} "
        f"{over_p50:>+9.1f} {over_p99:>+9.1f} {cpu_ms:>9.2f} {rss_per_k:>9.0f} "
        f"{result['errors_total']:>6}"
    )


async def run(args: argparse.Namespace) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    logs = RESULTS / f"scale-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(logs=logs, tick=args.tick, load_procs=args.load_procs, profile=False)
    window = args.window or (6.0 if args.quick else 15.0)
    streams = args.streams or (300 if args.quick else 2000)
    ramp = max(3.0, streams / 400)
    common = {"words": args.words, "wps": args.wps, "ramp": ramp}
    redis_url = os.environ.get("REDIS_URL")
    results: dict[str, Any] = {"streams": streams, "tick": args.tick, "runs": {}}
    print(f"limit: {streams} streams polled inside the load generator", flush=True)
    floor = await scenarios.limit(ctx, streams, window, **common)
    results["limit"] = floor
    setups = [(w, r) for w in args.workers for r in ((None, redis_url) if redis_url else (None,))]
    for workers, url in setups:
        label = f"{workers} worker(s), {'Redis' if url else 'no Redis'}"
        print(f"{label}: {streams} streams", flush=True)
        name = f"w{workers}-{'redis' if url else 'alone'}"
        result = await scenarios.streams(
            ctx, name, _factory(workers, args.tick, url), streams, window, **common
        )
        results["runs"][label] = result
    print()
    print(
        f"{streams} concurrent streams, tick {args.tick:g} s, load average at start "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'set-up':<22} {'status/tick':>9} {'subm/compl':>10} {'+p50 ms':>9} {'+p99 ms':>9} "
        f"{'CPU ms/c':>9} {'MB/1k':>9} {'errors':>6}"
    )
    print(
        f"{'limit (no gateway)':<22} {floor['status_requests_per_tick']:>9.2f} "
        f"{'':>10} {floor['delay_ms'].get('p50', 0):>9.1f} {floor['delay_ms'].get('p99', 0):>9.1f}"
    )
    for label, result in results["runs"].items():
        print(_row(label, result, floor))
    out = logs.with_suffix(".json")
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="300 streams, 6 s windows")
    parser.add_argument("--streams", type=int, help="concurrent streams (2000)")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(w) for w in text.split(",")],
        default=[1, 2, 4],
        help="worker counts, comma-separated (1,2,4)",
    )
    parser.add_argument("--window", type=float, help="seconds measured per run (15)")
    parser.add_argument("--words", type=int, default=30, help="words per stream (30)")
    parser.add_argument("--wps", type=float, default=10.0, help="words per second of a job")
    parser.add_argument("--tick", type=float, default=0.25, help="poll interval")
    parser.add_argument("--load-procs", type=int, default=1, help="load-generator processes")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
