"""The measurements: each starts a fresh emulator and one system, drives load, and measures.

Every run has the same shape: the load generator (own process) starts its clients at a
given wall-clock time, ramps up, and keeps going past a *measurement window*; during the
window this process resets the emulator's counters, takes the server's CPU time at both
ends and samples its memory. Figures come only from the window, i.e. from steady state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import servers
from bench.report import id_chunks, percentile
from bench.servers import Replicas, Server, System

MB = 1_000_000
JOB_ID_LENGTH = 32  # the emulator's ids (uuid4 hex); the real service's are similar
STATUS_URL_MAX = 8000  # the gateway's default upstream.status_url_max_length

SystemFactory = Callable[[Path, str, str], System]  # (logs, run name, upstream) -> System


@dataclass(frozen=True, slots=True)
class Context:
    logs: Path  # the run's folder: server logs, configs, profiles
    tick: float  # the gateway's poll_interval and the baseline's poll interval
    load_procs: int  # load-generator processes
    profile: bool
    #: (server cores, emulator + load generator cores), or None to let the scheduler place them
    placement: tuple[set[int], set[int]] | None = None

    @property
    def load_cores(self) -> set[int] | None:
        return self.placement[1] if self.placement else None


@dataclass(slots=True)
class Observation:
    """What this process saw of the server during the window."""

    start: float
    end: float
    cpu: float = 0.0  # server process tree, user + system seconds
    emulator_cpu: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into window, bytes)
    processes: int = 0
    load_cpu: list[float] = field(default_factory=list)  # per load-generator process
    stats: dict[str, Any] = field(default_factory=dict)  # emulator counters over the window
    metrics: dict[str, float] = field(default_factory=dict)  # the gateway's, over the window

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def rss_max(self) -> int:
        return max((r for _, r in self.rss), default=0)


@dataclass(slots=True)
class Load:
    records: list[dict[str, Any]]
    cpu: float  # load-generator CPU seconds (to show it was not the bottleneck)


# -- running the load generator ------------------------------------------------------------


async def start_load(
    spec: dict[str, Any], procs: int, log: Path, cores: set[int] | None = None
) -> list[asyncio.subprocess.Process]:
    total = spec["concurrency"]
    procs = max(1, min(procs, total))
    started = []
    for i in range(procs):
        share = total // procs + (1 if i < total % procs else 0)
        body = json.dumps({**spec, "concurrency": share, "seed": i}).encode()
        with log.open("ab") as errors:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.loadgen",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                cwd=servers.ROOT,
            )
        servers.pin([proc.pid], cores)
        assert proc.stdin is not None
        proc.stdin.write(body)
        await proc.stdin.drain()
        proc.stdin.close()
        started.append(proc)
    return started


async def finish_load(procs: list[asyncio.subprocess.Process]) -> Load:
    records: list[dict[str, Any]] = []
    cpu = 0.0
    for proc in procs:
        out, _ = await proc.communicate()
        try:
            result = json.loads(out)
        except ValueError:
            raise RuntimeError(
                f"the load generator failed (exit {proc.returncode}, {len(out)} bytes out)"
            ) from None
        records.extend(result["records"])
        cpu += result["cpu"]
    return Load(records, cpu)


# -- observing the window ------------------------------------------------------------------


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


async def observe(
    server: Server | Replicas,
    emulator: Server,
    start: float,
    end: float,
    *,
    sample_every: float = 0.5,
    profile_to: Path | None = None,
    load_pids: list[int] | None = None,
    metrics: bool = True,
) -> Observation:
    """The server's CPU, memory and (with ``metrics``) its /metrics (and the emulator's and
    load generator's CPU) between ``start`` and ``end``."""
    seen = Observation(start, end)
    load_pids = load_pids or []
    async with httpx.AsyncClient(base_url=emulator.url, timeout=30.0) as http:
        await _sleep_until(start)
        await http.post("/emulator/stats/reset")
        before, emu_before = server.usage(), emulator.usage()
        load_before = [servers.tree_usage(pid).cpu for pid in load_pids]
        seen.start = time.time()
        # A busy gateway may take seconds to answer /metrics: its figures are only a means
        # over the window, so the scrape must not hold the window's start back.
        scraping = asyncio.create_task(scrape(http, server) if metrics else _nothing())
        profiler = await _start_profiler(server, end - seen.start, profile_to)
        while (now := time.time()) < end:
            usage = server.usage()
            seen.rss.append((now - seen.start, usage.rss))
            seen.processes = max(seen.processes, usage.processes)
            await asyncio.sleep(min(sample_every, max(0.0, end - now)))
        after, emu_after = server.usage(), emulator.usage()
        load_after = [servers.tree_usage(pid).cpu for pid in load_pids]
        seen.stats = (await http.get("/emulator/stats")).json()
        seen.end = time.time()
        metrics_before = await scraping
        metrics_after = await scrape(http, server) if metrics else {}
    seen.metrics = {
        name: round(value - metrics_before.get(name, 0.0), 6)
        for name, value in metrics_after.items()
        if not name.startswith("gateway_jobs_in_flight")
    }
    seen.cpu = after.cpu - before.cpu
    seen.emulator_cpu = emu_after.cpu - emu_before.cpu
    seen.load_cpu = [a - b for a, b in zip(load_after, load_before, strict=True)]
    if profiler is not None:
        await profiler.wait()
    return seen


async def _nothing() -> dict[str, float]:
    return {}


_SAMPLE = re.compile(r"^(gateway_[a-z_]+?)(?:\{([^}]*)\})? ([0-9.e+-]+|NaN)$")
_WANTED = (
    "gateway_upstream_request_duration_seconds_sum",
    "gateway_upstream_request_duration_seconds_count",
    "gateway_status_request_ids_sum",
    "gateway_status_request_ids_count",
    "gateway_request_duration_seconds_sum",
    "gateway_request_duration_seconds_count",
    "gateway_time_to_first_token_seconds_sum",
    "gateway_time_to_first_token_seconds_count",
)


async def scrape(http: httpx.AsyncClient, server: Server | Replicas) -> dict[str, float]:
    """The few gateway metrics the report uses, summed over labels except ``kind`` (and over
    replicas)."""
    if server.name != "gateway":
        return {}
    texts = []
    for url in server.urls:
        try:
            texts.append((await http.get(url + "/metrics")).text)
        except httpx.HTTPError:
            continue
    found: dict[str, float] = {}
    for line in "\n".join(texts).splitlines():
        match = _SAMPLE.match(line)
        if not match or match[1] not in _WANTED:
            continue
        kind = re.search(r'kind="([a-z]+)"', match[2] or "")
        name = f"{match[1]}:{kind[1]}" if kind else match[1]
        found[name] = found.get(name, 0.0) + float(match[3])
    return found


async def _start_profiler(
    server: Server | Replicas, seconds: float, out: Path | None
) -> asyncio.subprocess.Process | None:
    """py-spy on the server (and its workers) for the window; raw collapsed stacks."""
    if out is None:
        return None
    args = [servers.venv_bin("py-spy"), "record", "--pid", str(server.pid), "--rate", "200"]
    args += ["--duration", str(max(1, int(seconds))), "--format", "raw", "--output", str(out)]
    args += ["--nonblocking", "--subprocesses"]
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def _system(
    ctx: Context, name: str, factory: SystemFactory, queue_seconds: float = 0.5
) -> Iterator[tuple[Server, System]]:
    with servers.start_emulator(ctx.logs, name, queue_seconds) as emulator:
        system = factory(ctx.logs, name, emulator.url)
        with system.server:
            if ctx.placement is not None:
                servers.pin(system.server.pids(), ctx.placement[0])
                servers.pin([emulator.pid], ctx.placement[1])
            yield emulator, system


def _spec(
    system: System, kind: str, concurrency: int, prompt: str, **times: float
) -> dict[str, Any]:
    return {
        "kind": kind,
        "host": "127.0.0.1",
        "port": system.server.port,
        "api_key": system.api_key,
        "model": system.model,
        "concurrency": concurrency,
        "prompt": prompt,
        "ports": system.server.ports,
        **times,
    }


def _in_window(t: float, seen: Observation) -> bool:
    return seen.start <= t <= seen.end


def _ok(record: dict[str, Any]) -> bool:
    return record["status"] == 200 and record["error"] is None and record["t_end"] > 0


def _common(seen: Observation, load: Load, system: System) -> dict[str, Any]:
    return {
        "system": system.name,
        "gateway_metrics": _metric_summary(seen.metrics),
        "window_seconds": round(seen.length, 3),
        "window_at": [round(seen.start, 3), round(seen.end, 3)],  # wall clock
        "server_cpu_seconds": round(seen.cpu, 3),
        "server_cpu_share": round(seen.cpu / seen.length, 3) if seen.length else None,
        "server_processes": seen.processes,
        "emulator_cpu_seconds": round(seen.emulator_cpu, 3),
        "loadgen_cpu_seconds": round(load.cpu, 3),
        # the busiest load-generator process's share of a core in the window: near 1, the
        # load generator (not the server) would be the bottleneck
        "loadgen_busiest_share": round(max(seen.load_cpu, default=0.0) / seen.length, 3)
        if seen.length
        else None,
        "rss_max_mb": round(seen.rss_max / MB, 1),
        "requests_total": len(load.records),
        "errors_total": sum(1 for r in load.records if r["t_end"] > 0 and not _ok(r)),
        "error_examples": sorted({str(r["error"])[:120] for r in load.records if r["error"]})[:5],
        "errors_by_phase": _phases([r["t0"] for r in load.records if r["error"]], seen),
    }


def _phases(times: list[float], seen: Observation) -> dict[str, int]:
    """How many of ``times`` fell before the window (the ramp), in it, and after it."""
    return {
        "before": sum(1 for t in times if t < seen.start),
        "window": sum(1 for t in times if _in_window(t, seen)),
        "after": sum(1 for t in times if t > seen.end),
    }


def _metric_summary(metrics: dict[str, float]) -> dict[str, float | None]:
    """Means over the window from the gateway's own histograms (sum / count)."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if "_count" not in key:
            continue
        total = metrics.get(key.replace("_count", "_sum"), 0.0)
        name = key.replace("_count", "").removeprefix("gateway_")
        out[f"{name}:count"] = value
        out[f"{name}:mean"] = round(total / value, 6) if value else None
    return out


# -- scenario 1 + 2: many concurrent streams -----------------------------------------------


async def streams(
    ctx: Context,
    name: str,
    factory: SystemFactory,
    concurrency: int,
    window: float,
    *,
    words: int = 30,
    wps: float = 10.0,
    ramp: float = 5.0,
    settle: float = 4.0,
    profile: bool = False,
    sample: int | None = None,
    metrics: bool = True,
) -> dict[str, Any]:
    """Upstream load (status requests per tick) and added delay per word, in one run; the
    delay from the words of ``sample`` streams drawn at random (None: all of them). Without
    ``metrics`` the gateway's /metrics is not read: merging several workers' files costs the
    gateway CPU inside the window, and a busy one took seconds to answer."""
    prompt = f"Benchmark stream {{n}}. [[emulate:words {words}]] [[emulate:wps {wps:g}]]"
    marks = [("called", time.time())]  # where a run's time goes (to size the windows)
    with _system(ctx, name, factory) as (emulator, system):
        idle = system.server.usage()
        marks.append(("started", time.time()))
        begin = time.time() + 1.0
        start = begin + ramp + settle
        end = start + window
        spec = _spec(system, "streams", concurrency, prompt, start_at=begin, ramp=ramp)
        spec.update(stop_at=end, think=ctx.tick)
        procs = await start_load(
            spec, ctx.load_procs, ctx.logs / f"{name}-loadgen.log", ctx.load_cores
        )
        out = ctx.logs / f"{name}-profile.txt" if profile and ctx.profile else None
        seen = await observe(
            system.server, emulator, start, end, profile_to=out,
            load_pids=[p.pid for p in procs], metrics=metrics,
        )  # fmt: skip
        marks.append(("window_ended", time.time()))
        load = await finish_load(procs)
        marks.append(("load_finished", time.time()))
        timelines = await _timelines(emulator, load.records, seen, sample)
        marks.append(("timelines_fetched", time.time()))
    marks.append(("stopped", time.time()))
    delays, mismatched = word_delays(load.records, timelines, seen)
    stats = seen.stats
    ticks = seen.length / ctx.tick
    status_requests = stats["status_requests"]
    budget = STATUS_URL_MAX - len(emulator.url) - len("/jobs/")
    result = _common(seen, load, system)
    result.update(
        {
            "concurrency": concurrency,
            "tick": ctx.tick,
            "idle_rss_mb": round(idle.rss / MB, 1),
            "idle_processes": idle.processes,
            "words_per_stream": words,
            "words_per_second": wps,
            "status_requests": status_requests,
            "status_requests_per_tick": round(status_requests / ticks, 3),
            "ids_per_status_request": round(stats["status_ids_total"] / status_requests, 1)
            if status_requests
            else None,
            "max_ids_per_status_request": stats["max_ids_per_status"],
            "id_chunks_for_concurrency": id_chunks(concurrency, JOB_ID_LENGTH, budget),
            "upstream_url_length": len(emulator.url),
            "submits_in_window": stats["submit_requests"],
            "streams_in_window": sum(
                1 for r in load.records if _ok(r) and _in_window(r["t_end"], seen)
            ),
            "words_measured": len(delays),
            "streams_word_count_mismatch": mismatched,
            "delay_ms": _summary([d * 1000 for d in delays]),
            "profile": str(out) if out else None,
            "phase_seconds": {
                name: round(at - before, 2) for (_, before), (name, at) in itertools.pairwise(marks)
            },
        }
    )
    return result


async def limit(
    ctx: Context,
    concurrency: int,
    window: float,
    *,
    words: int = 30,
    wps: float = 10.0,
    ramp: float = 5.0,
    settle: float = 4.0,
    sample: int | None = None,
) -> dict[str, Any]:
    """The floor for scenario 2: a coalescing poller in the load generator, no gateway, no
    second hop; words are stamped when the status answer is parsed."""
    prompt = f"Benchmark stream {{n}}. [[emulate:words {words}]] [[emulate:wps {wps:g}]]"
    with servers.start_emulator(ctx.logs, "limit") as emulator:
        begin = time.time() + 1.0
        start = begin + ramp + settle
        end = start + window
        budget = STATUS_URL_MAX - len(emulator.url) - len("/jobs/")
        spec = {
            "kind": "direct",
            "host": "127.0.0.1",
            "port": emulator.port,
            "api_key": servers.UPSTREAM_TOKEN,
            "model": "gemma:2b",
            "concurrency": concurrency,
            "prompt": prompt,
            "start_at": begin,
            "ramp": ramp,
            "stop_at": end,
            "think": ctx.tick,
            "tick": ctx.tick,
            "chunk_ids": (budget + 1) // (JOB_ID_LENGTH + 1),
        }
        servers.pin([emulator.pid], ctx.load_cores)
        procs = await start_load(spec, 1, ctx.logs / "limit-loadgen.log", ctx.load_cores)
        seen = await observe(emulator, emulator, start, end, load_pids=[p.pid for p in procs])
        load = await finish_load(procs)
        timelines = await _timelines(emulator, load.records, seen, sample)
    delays, mismatched = word_delays(load.records, timelines, seen)
    return {
        "concurrency": concurrency,
        "words_per_stream": words,
        "status_requests_per_tick": round(
            seen.stats["status_requests"] / (seen.length / ctx.tick), 3
        ),
        "emulator_cpu_seconds": round(seen.cpu, 3),
        "loadgen_cpu_seconds": round(load.cpu, 3),
        "loadgen_busiest_share": round(max(seen.load_cpu, default=0.0) / seen.length, 3),
        "words_measured": len(delays),
        "streams_word_count_mismatch": mismatched,
        "delay_ms": _summary([d * 1000 for d in delays]),
    }


async def _timelines(
    emulator: Server, records: list[dict[str, Any]], seen: Observation, sample: int | None = None
) -> dict[str, list[float]]:
    """When each word entered the log, for the jobs whose words arrived in the window (or
    ``sample`` of them at random: each costs a request to the emulator)."""
    wanted = sorted(
        {
            r["job_id"]
            for r in records
            if r["job_id"] and any(_in_window(t, seen) for t in r["words"][-1:] + r["words"][:1])
        }
    )
    if sample is not None and len(wanted) > sample:
        wanted = random.Random(0).sample(wanted, sample)
    found: dict[str, list[float]] = {}
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=emulator.url, timeout=30.0) as http:

        async def one(job_id: str) -> None:
            async with limit:
                response = await http.get(f"/emulator/jobs/{job_id}/timeline")
            if response.status_code == 200:
                found[job_id] = [w["at"] for w in response.json()["words"]]

        await asyncio.gather(*(one(j) for j in wanted))
    return found


def word_delays(
    records: list[dict[str, Any]], timelines: dict[str, list[float]], seen: Observation
) -> tuple[list[float], int]:
    """Seconds from each word entering the log to the client having it (words received in
    the window), and how many complete streams did not receive exactly the logged words."""
    delays: list[float] = []
    mismatched = 0
    for record in records:
        entered = timelines.get(record["job_id"] or "")
        if entered is None:
            continue
        received = record["words"]
        if _ok(record) and len(received) != len(entered):
            mismatched += 1
        for got, at in zip(received, entered, strict=False):
            if _in_window(got, seen):
                delays.append(got - at)
    return delays, mismatched


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p90": round(percentile(values, 90), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
        "mean": round(sum(values) / len(values), 2),
    }


# -- scenario 3 (and 5): throughput of jobs that finish at once ----------------------------


async def throughput(
    ctx: Context,
    name: str,
    factory: SystemFactory,
    concurrency: int,
    window: float,
    *,
    ramp: float = 2.0,
    settle: float = 3.0,
    profile: bool = False,
) -> dict[str, Any]:
    """Non-streamed completions/s, server CPU per completion and latency, 200 clients."""
    prompt = (
        "Benchmark completion {n}. [[emulate:queue 0]] [[emulate:wps 100000]] [[emulate:words 20]]"
    )
    with _system(ctx, name, factory, queue_seconds=0.0) as (emulator, system):
        begin = time.time() + 1.0
        start = begin + ramp + settle
        end = start + window
        spec = _spec(system, "completions", concurrency, prompt, start_at=begin, ramp=ramp)
        spec["stop_at"] = end
        procs = await start_load(
            spec, ctx.load_procs, ctx.logs / f"{name}-loadgen.log", ctx.load_cores
        )
        out = ctx.logs / f"{name}-profile.txt" if profile and ctx.profile else None
        seen = await observe(system.server, emulator, start, end, profile_to=out)
        load = await finish_load(procs)
    done = [r for r in load.records if _ok(r) and _in_window(r["t_end"], seen)]
    latencies = [(r["t_end"] - r["t0"]) * 1000 for r in done]
    result = _common(seen, load, system)
    result.update(
        {
            "concurrency": concurrency,
            "completed_in_window": len(done),
            "completions_per_second": round(len(done) / seen.length, 2),
            "cpu_ms_per_completion": round(seen.cpu * 1000 / len(done), 3) if done else None,
            "emulator_status_requests": seen.stats["status_requests"],
            "emulator_submit_requests": seen.stats["submit_requests"],
            "latency_ms": _summary(latencies),
            "profile": str(out) if out else None,
        }
    )
    return result


# -- scenario 4: memory with many open streams, and a soak ---------------------------------


async def memory(
    ctx: Context,
    name: str,
    factory: SystemFactory,
    concurrency: int,
    *,
    ramp: float = 5.0,
    settle: float = 15.0,
    hold: float = 6.0,
) -> dict[str, Any]:
    """Resident memory of the server while ``concurrency`` streams are open and waiting."""
    prompt = "Benchmark hold {n}. [[emulate:queue 0.2]] [[emulate:hang]]"
    with _system(ctx, name, factory) as (emulator, system):
        idle = system.server.usage().rss
        begin = time.time() + 1.0
        start = begin + ramp + settle
        end = start + hold
        spec = _spec(system, "hold", concurrency, prompt, start_at=begin, ramp=ramp)
        spec.update(stop_at=end, hold_until=end + 0.5)
        procs = await start_load(
            spec, ctx.load_procs, ctx.logs / f"{name}-loadgen.log", ctx.load_cores
        )
        seen = await observe(system.server, emulator, start, end)
        load = await finish_load(procs)
    opened = sum(1 for r in load.records if r["words"] and r["words"][0] <= seen.start)
    result = _common(seen, load, system)
    result.update(
        {
            "concurrency": concurrency,
            "streams_open_in_window": opened,
            "idle_rss_mb": round(idle / MB, 1),
            "rss_mb": round(seen.rss_max / MB, 1),
            "rss_per_stream_kb": round((seen.rss_max - idle) / 1000 / opened, 1)
            if opened
            else None,
        }
    )
    return result


async def soak(
    ctx: Context,
    name: str,
    factory: SystemFactory,
    concurrency: int,
    seconds: float,
    *,
    warmup: float = 60.0,
) -> dict[str, Any]:
    """Streams churning for ``seconds``: does resident memory keep growing after warm-up?"""
    prompt = "Benchmark soak {n}. [[emulate:words 30]] [[emulate:wps 10]]"
    with _system(ctx, name, factory) as (emulator, system):
        begin = time.time() + 1.0
        start = begin + min(warmup, seconds / 4)
        end = begin + seconds
        spec = _spec(system, "streams", concurrency, prompt, start_at=begin, ramp=5.0)
        spec["stop_at"] = end
        procs = await start_load(
            spec, ctx.load_procs, ctx.logs / f"{name}-loadgen.log", ctx.load_cores
        )
        seen = await observe(system.server, emulator, start, end, sample_every=5.0)
        load = await finish_load(procs)
    samples = [r for _, r in seen.rss]
    third = max(1, len(samples) // 3)
    first = sum(samples[:third]) / third
    last = sum(samples[-third:]) / third
    result = _common(seen, load, system)
    result.update(
        {
            "concurrency": concurrency,
            "seconds": seconds,
            "rss_first_third_mb": round(first / MB, 1),
            "rss_last_third_mb": round(last / MB, 1),
            "rss_growth_mb": round((last - first) / MB, 1),
            "rss_samples_mb": [round(r / MB, 1) for r in samples],
        }
    )
    return result


def coalescing_bound(concurrency: int, workers: int, upstream_url_length: int) -> int:
    """Status requests per tick when each of ``workers`` processes coalesces its own jobs:
    at most the chunks for all jobs plus one partial chunk per extra process."""
    budget = STATUS_URL_MAX - upstream_url_length - len("/jobs/")
    return id_chunks(concurrency, JOB_ID_LENGTH, budget) + workers - 1


def isfinite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
