"""Past one process (issue 28): 1, 2 and 4 workers and 3 replicas, with and without Redis, at
2,000 and 5,000 concurrent streams, side by side in one invocation.

With Redis the processes of every replica elect one poller per upstream account
(``upstream.shared_polling``, gateway/upstream/relay.py); without it each process polls its own
jobs. Replicas are one-worker gateways on their own ports sharing one config (one Redis
prefix, one ledger); the load generator spreads its clients over them, client i to replica
i mod 3, as a round-robin balancer would. For each set-up the streams scenario of
``bench/run.py`` runs (a fresh emulator, the load generator in its own process), and for each
stream count one table prints:

* status/tick: status requests per tick for the one account (the floor is the id chunks of
  all jobs in flight, ``upstream.status_max_ids`` per request);
* subm/compl: submissions per completion (group commit, gateway/upstream/batcher.py);
* +p50 / +p99: delay per word added over the limit row (the same jobs polled by a coalescing
  poller inside the load generator, no gateway), from the words of ``--sample`` streams;
* CPU ms/c: CPU seconds of every gateway process (supervisor, workers, replicas) over the
  window per stream completed in it; compl/s: those completions per second;
* procs: gateway processes measured (a supervisor and uvicorn's resource tracker besides
  the workers when there are several); MB total: the largest sum of their resident memory seen
  in the window; MB/1k: that per 1,000 streams; idle/wkr: the sum before any load per worker
  or replica (the fixed cost of one more process, supervisor included); +MB/1k: (total -
  idle) per 1,000 streams, the marginal cost of streams;
* load: the busiest load-generator process's share of a core in the window (near 1.00 it, not
  the gateway, would be the bottleneck: then raise ``--load-procs``); errors: failed requests;
* leases: times the account's poller lease passed to another process in the window (Redis
  rows; gateway/upstream/relay.py logs a process that starts polling after another did, so
  the first holder does not count): each move means a gap in polling and whole logs resent.

    .venv/bin/python bench/scale.py                   # 2,000 and 5,000 streams, all (~12 min)
    .venv/bin/python bench/scale.py --quick           # 300 streams, short windows (~4 min)
    .venv/bin/python bench/scale.py --streams 2000 --workers 1 --replicas 0 --no-alone
    REDIS_URL=redis://127.0.0.1:6379/0 is used when set (else the Redis rows are skipped)

The gateway keeps its default ``server.max_connections`` (8,192 per process); the open-file
limit of every process started is raised to at least the streams + 1,024 (``open_files_for``).
The estimated duration prints first; each run costs its start-up, ramp (streams / 400 s),
settle, window and drain. Progress goes to stderr, the tables to stdout, every figure to
``bench/results/scale-<time>.json`` and the servers' logs to ``bench/results/scale-<time>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import scenarios, servers
from bench.scenarios import Context

RESULTS = servers.ROOT / "bench" / "results"
SETTLE = 4.0
#: Seconds a run costs besides its ramp, settle, window and the last streams' words: start-up,
#: the load generator's results, the sampled timelines, stopping; measured on the 2-core
#: machine (load 2-5): ~11 s at 2,000 streams, ~16 s at 5,000.
OVERHEAD = 8.0
OVERHEAD_PER_STREAM = 1 / 600
PER_EXTRA_PROCESS = 1.5  # each further worker or replica starts its own interpreter


@dataclass(frozen=True, slots=True)
class Setup:
    """One row: ``processes`` workers of one gateway, or that many one-worker replicas."""

    processes: int
    replicas: bool
    redis: bool

    @property
    def label(self) -> str:
        what = "replica" if self.replicas else "worker"
        plural = "s" if self.processes > 1 else ""
        return f"{self.processes} {what}{plural}, {'Redis' if self.redis else 'no Redis'}"

    @property
    def name(self) -> str:
        kind = "r" if self.replicas else "w"
        return f"{kind}{self.processes}-{'redis' if self.redis else 'alone'}"


def setups(workers: list[int], replicas: int, redis: bool, alone: bool) -> list[Setup]:
    """Each worker count, then the replicas, each without and with Redis (as asked)."""
    modes = [m for m, wanted in ((False, alone), (True, redis)) if wanted]
    rows = [Setup(w, False, m) for w in workers for m in modes]
    if replicas:
        rows += [Setup(replicas, True, m) for m in modes]
    return rows


def ramp_for(streams: int) -> float:
    """Clients start spread over this long: ~400 new connections a second at most."""
    return max(3.0, streams / 400)


def estimate(stream_counts: list[int], rows: list[Setup], window: float, drain: float) -> float:
    """Seconds the whole invocation should take (one limit run plus a run per row, per count)."""
    total = 0.0
    for streams in stream_counts:
        run = OVERHEAD + streams * OVERHEAD_PER_STREAM + ramp_for(streams) + SETTLE + window
        run += drain
        total += run * (1 + len(rows))
        total += sum(PER_EXTRA_PROCESS * (s.processes - 1) for s in rows)
    return total


def _factory(setup: Setup, tick: float, redis_url: str | None) -> scenarios.SystemFactory:
    overrides: dict[str, Any] = {}
    if setup.redis and redis_url:
        overrides |= {"redis.url": redis_url, "redis.prefix": f"bench-{uuid.uuid4().hex[:8]}:"}

    def start(logs: Path, name: str, upstream: str) -> servers.System:
        if setup.replicas:
            return servers.start_replicas(logs, name, upstream, tick, setup.processes, overrides)
        return servers.start_gateway(logs, name, upstream, tick, setup.processes, overrides)

    return start


HEADER = (
    f"{'set-up':<22} {'status/tick':>11} {'subm/compl':>10} {'+p50 ms':>8} {'+p99 ms':>8} "
    f"{'CPU ms/c':>8} {'compl/s':>7} {'procs':>5} {'MB total':>8} {'MB/1k':>6} "
    f"{'idle/wkr':>8} {'+MB/1k':>6} {'load':>5} {'errors':>6} {'leases':>6}"
)


def row(label: str, result: dict[str, Any], floor: dict[str, Any], workers: int) -> str:
    """One set-up's line of the table (see the module docstring for the columns)."""
    completions = result["streams_in_window"]
    per = max(1, completions)
    delay, base = result["delay_ms"], floor["delay_ms"]
    over_p50 = (delay.get("p50") or 0) - (base.get("p50") or 0)
    over_p99 = (delay.get("p99") or 0) - (base.get("p99") or 0)
    thousands = max(1, result["concurrency"]) / 1000
    total, idle = result["rss_max_mb"], result["idle_rss_mb"]
    return (
        f"{label:<22} {result['status_requests_per_tick']:>11.2f} "
        f"{result['submits_in_window'] / per:>10.3f} {over_p50:>+8.1f} {over_p99:>+8.1f} "
        f"{result['server_cpu_seconds'] * 1000 / per:>8.2f} "
        f"{completions / result['window_seconds']:>7.0f} {result['server_processes']:>5} "
        f"{total:>8.0f} {total / thousands:>6.0f} {idle / workers:>8.0f} "
        f"{(total - idle) / thousands:>6.0f} {result['loadgen_busiest_share']:>5.2f} "
        f"{result['errors_total']:>6} {result.get('lease_takeovers', ''):>6}"
    )


def table(streams: int, section: dict[str, Any], tick: float) -> str:
    floor = section["limit"]
    lines = [
        f"{streams} concurrent streams, tick {tick:g} s, window {section['window']:g} s, "
        f"load average {section['load_before']:.1f} before / {section['load_after']:.1f} after",
        HEADER,
        f"{'limit (no gateway)':<22} {floor['status_requests_per_tick']:>11.2f} {'':>10} "
        f"{floor['delay_ms'].get('p50') or 0:>8.1f} {floor['delay_ms'].get('p99') or 0:>8.1f}"
        f"{'':>55} {floor['loadgen_busiest_share']:>5.2f}",
    ]
    for label, result in section["runs"].items():
        lines.append(row(label, result, floor, result["setup_processes"]))
    return "\n".join(lines)


def lease_takeovers(logs: Path, name: str, start: float, end: float) -> int:
    """Lease takeovers the gateway processes of run ``name`` logged between ``start`` and
    ``end`` (wall clock; outside the window replicas stopping one by one hand it on too)."""
    count = 0
    for log in logs.glob(f"{name}*-gateway.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "shared polling: this process polls account" not in line:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                at = dt.datetime.fromisoformat(json.loads(line)["time"]).timestamp()
                count += start <= at <= end
    return count


def open_files_for(streams: int) -> int:
    """Raise this process's open-file limit (its children inherit it) so one process can hold
    every stream's socket and more (a one-worker gateway, the load generator); the limit set."""
    wanted = streams + 1024  # upstream pools, Redis, logs, the interpreter's own files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raise SystemExit(f"{streams} streams need {wanted} open files; the hard limit is {hard}")
    return soft


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    logs = RESULTS / f"scale-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(logs=logs, tick=args.tick, load_procs=args.load_procs, profile=False)
    window = args.window or (6.0 if args.quick else 8.0)
    counts = args.streams or ([300] if args.quick else [2000, 5000])
    redis_url = os.environ.get("REDIS_URL")
    files = open_files_for(max(counts))
    rows = setups(args.workers, args.replicas, bool(redis_url), args.alone)
    common = {"words": args.words, "wps": args.wps}
    drain = 0.5 + args.words / args.wps + args.tick  # queue + the last streams' words
    planned = estimate(counts, rows, window, drain)
    step(
        f"{len(counts) * (1 + len(rows))} runs ({', '.join(map(str, counts))} streams; "
        f"{'; '.join(s.label for s in rows)}), {window:g} s windows: about {planned / 60:.1f} min"
        f"; open files {files}"
    )
    began = time.monotonic()
    results: dict[str, Any] = {"tick": args.tick, "window": window, "sample": args.sample}
    results["by_streams"] = {}
    for streams in counts:
        section: dict[str, Any] = {"window": window, "load_before": os.getloadavg()[0]}
        results["by_streams"][str(streams)] = section
        ramp = ramp_for(streams)
        step(f"limit: {streams} streams polled inside the load generator")
        section["limit"] = await scenarios.limit(
            ctx, streams, window, ramp=ramp, settle=SETTLE, sample=args.sample, **common
        )
        section["runs"] = {}
        for setup in rows:
            step(f"{setup.label}: {streams} streams")
            result = await scenarios.streams(
                ctx, f"{streams}-{setup.name}", _factory(setup, args.tick, redis_url), streams,
                window, ramp=ramp, settle=SETTLE, sample=args.sample, metrics=False, **common,
            )  # fmt: skip
            result |= {"setup_processes": setup.processes}
            if setup.redis:
                name = f"{streams}-{setup.name}"
                result["lease_takeovers"] = lease_takeovers(logs, name, *result["window_at"])
            section["runs"][setup.label] = result
            if result["window_seconds"] < 0.8 * window:
                step(f"  the window shrank to {result['window_seconds']:g} s (a slow emulator)")
        section["load_after"] = os.getloadavg()[0]
    took = time.monotonic() - began
    results["seconds"] = round(took, 1)
    out = logs.with_suffix(".json")
    out.write_text(json.dumps(results, indent=2, default=str))
    for streams in counts:
        print(table(streams, results["by_streams"][str(streams)], args.tick), end="\n\n")
    print(
        f"{args.words} words a stream at {args.wps:g} words/s; delay from {args.sample} streams "
        f"a run; {os.cpu_count()} cores; took {took / 60:.1f} min (estimated "
        f"{planned / 60:.1f}).\nresults: {out}"
    )


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="300 streams, 6 s windows")
    parser.add_argument(
        "--streams", type=_ints, help="concurrent streams, comma-separated (2000,5000)"
    )
    parser.add_argument(
        "--workers", type=_ints, default=[1, 2, 4], help="worker counts, comma-separated (1,2,4)"
    )
    parser.add_argument("--replicas", type=int, default=3, help="one-worker replicas (3; 0: none)")
    parser.add_argument(
        "--no-alone", dest="alone", action="store_false", help="skip the rows without Redis"
    )
    parser.add_argument("--window", type=float, help="seconds measured per run (8; 6 quick)")
    parser.add_argument("--sample", type=int, default=1000, help="streams timed per run (1000)")
    parser.add_argument("--words", type=int, default=30, help="words per stream (30)")
    parser.add_argument("--wps", type=float, default=10.0, help="words per second of a job")
    parser.add_argument("--tick", type=float, default=0.25, help="poll interval")
    parser.add_argument("--load-procs", type=int, default=1, help="load-generator processes")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
