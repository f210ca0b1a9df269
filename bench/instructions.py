"""Instructions the gateway executes per completion, by door: a figure a shared machine cannot move.

CPU time per request moves by 15-30% on the shared 2-core machine from one minute to the next
(steal time: ``top`` shows 50% ``st`` at times), which is more than most changes to measure.
This runs the gateway under valgrind's callgrind, which counts the instructions it executes;
the count is the same whatever else the machine does. The emulator and the client run
natively. For each door: a warm-up, then callgrind's counters zeroed, ``--requests`` fresh
prompts (no cache hit), the counters dumped; printed per request and against chat completions,
with the upstream requests each completion cost (read from the emulator).

Requests go one at a time by default: then every door makes the same upstream requests (one
submission and one status request per completion: the emulator writes a million words a
second, so a job has ended by the first poll), and the figures compare the doors' own work.
(At 1,000 words a second, as before 2026-12-08, a job of 20 words sometimes outlived the first
poll: chat completions, the quickest door, then made 1.14-1.52 status requests per completion
against 1.00 for Responses, and its figure rose by up to 700k.) With
``--concurrency`` above 1 submissions are batched, but how many gather depends on timing,
and under callgrind the gateway runs about 50 times slower than natively: compare figures of
this script with each other only.

The doors take turns (``--rounds``, 3 by default) and each door's median is printed: one
door's figure moved by up to 4% between runs of the script with nothing else changed (chat
completions 6,127k to 6,368k on 2026-12-08), by 1.2% between the turns of one run.

    .venv/bin/python bench/instructions.py                  # ~8 minutes
    .venv/bin/python bench/instructions.py --doors chat,responses --requests 300
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/instructions.py  # that one's code
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.doors import DOORS, HEADERS
from tests.e2e.servers import free_port, gateway_config, running, start_emulator

NAMES = {
    "chat": "chat completions",
    "responses": "responses",
    "responses-nostore": "responses, store off",
    "messages": "messages",
    "ollama": "ollama /api/chat",
}


async def _send(url: str, path: str, bodies: list[dict[str, Any]], concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=600, limits=limits) as c:
        queue = list(bodies)

        async def worker() -> None:
            while queue:
                body = queue.pop()
                if body["stream"]:
                    async with c.stream("POST", path, json=body) as answer:
                        answer.raise_for_status()
                        async for _ in answer.aiter_bytes():
                            pass
                else:
                    (await c.post(path, json=body)).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def _callgrind(pid: int, command: str) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)


def _upstream(emulator: str) -> tuple[int, int]:
    """The emulator's submission and status requests so far."""
    stats = httpx.get(emulator + "/emulator/stats", timeout=30).json()
    return int(stats["submit_requests"]), int(stats["status_requests"])


def measure(
    args: argparse.Namespace,
) -> tuple[dict[str, float], dict[str, tuple[float, ...]]]:
    tmp = Path(tempfile.mkdtemp(prefix="instructions-"))
    job = f"[[emulate:words {args.words}]] [[emulate:queue 0]]"
    figures: dict[str, float] = {}
    upstream: dict[str, tuple[float, ...]] = {}
    extra = ("--queue-seconds", "0", "--words-per-second", "1000000")
    with running(start_emulator(tmp, *extra)) as emulator:
        config = gateway_config(
            emulator.url,
            upstream={"base_url": emulator.url, "poll_interval": 0.05},
            logging={"format": "json", "level": "info"},  # the access line, as deployed
            limits={"keepalive_interval": 30.0, "default_deadline": 600},
            # Every ledger row at once, as for a request that outlasts the batch wait (a real
            # one lasts seconds): then each door writes the same rows per completion (an
            # in-flight row, the final row in its place). With the default 50 ms, whether a
            # request of ~50 ms here had its in-flight row written moved chat completions'
            # figure by 3%.
            ledger={"url": f"sqlite:///{tmp / 'usage.db'}", "batch_wait_seconds": 0},
        )
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        out = tmp / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
        ]
        url = f"http://127.0.0.1:{port}"
        with (tmp / "gateway.log").open("wb") as log:
            gateway = subprocess.Popen(  # from tmp: -m puts the working folder first
                command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp
            )
            try:
                _wait_ready(url, gateway)
                rounds: dict[str, list[float]] = {}
                for turn in range(args.rounds):
                    for name in args.doors.split(","):
                        door = NAMES[name]
                        route, body = DOORS[door]
                        for stream in (False, True) if args.streamed else (False,):
                            if turn == 0:
                                warm = [body(f"warm {door} {n} {job}", stream) for n in range(20)]
                                asyncio.run(_send(url, route, warm, args.concurrency))
                            before = _upstream(emulator.url)
                            _callgrind(gateway.pid, "-z")
                            prompts = [
                                body(f"{door} {stream} {turn} {n} {job}", stream)
                                for n in range(args.requests)
                            ]
                            asyncio.run(_send(url, route, prompts, args.concurrency))
                            after = _upstream(emulator.url)
                            for old in tmp.glob("callgrind.out*"):
                                old.unlink()
                            _callgrind(gateway.pid, "-d")
                            name = door + (", streamed" if stream else "")
                            count = _total(_dumped(tmp)) / args.requests
                            rounds.setdefault(name, []).append(count)
                            figures[name] = statistics.median(rounds[name])
                            upstream[name] = tuple(
                                (a - b) / args.requests for a, b in zip(after, before, strict=True)
                            )
                            print(f"{name:>30}: {count / 1e3:,.0f}k", flush=True)
            finally:
                gateway.send_signal(signal.SIGINT)
                try:
                    gateway.wait(60)
                except subprocess.TimeoutExpired:
                    gateway.kill()
    shutil.rmtree(tmp, ignore_errors=True)
    return figures, upstream


def _dumped(tmp: Path, limit: float = 60.0) -> Path:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        dumps = sorted(tmp.glob("callgrind.out*"), key=os.path.getmtime)
        if dumps and dumps[-1].stat().st_size and "totals:" in dumps[-1].read_text()[-4096:]:
            return dumps[-1]
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def _wait_ready(url: str, process: subprocess.Popen[bytes], limit: float = 600.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the gateway exited under valgrind")
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the gateway was not ready under valgrind")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--doors", default="chat,responses,responses-nostore,messages,ollama")
    parser.add_argument("--requests", type=int, default=200, help="requests measured per door")
    parser.add_argument("--concurrency", type=int, default=1, help="requests at once")
    parser.add_argument("--words", type=int, default=20, help="words per answer")
    parser.add_argument("--streamed", action="store_true", help="also streamed requests")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns through the doors; each door's median"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    figures, upstream = measure(args)
    print(
        f"\nInstructions per completion ({args.requests} requests per door and round, "
        f"{args.concurrency} at a time, {args.words} words; median of {args.rounds} rounds)"
    )
    print(f"{'door':>30} {'instructions':>12} {'vs chat':>8} {'submits':>8} {'statuses':>9}")
    base = figures.get("chat completions")
    for door, count in figures.items():
        ratio = f"{count / base - 1:+.1%}" if base else ""
        submits, statuses = upstream[door]
        print(f"{door:>30} {count / 1e3:>11,.0f}k {ratio:>8} {submits:>8.2f} {statuses:>9.2f}")


if __name__ == "__main__":
    main()
