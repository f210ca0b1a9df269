"""A batch of many lines through the gateway: lines per second and submissions per line.

Starts the emulator and a gateway on loopback (SQLite database in a temporary folder), uploads a
JSONL file of chat lines, runs it as an OpenAI batch and prints:

* the upload's time, and the batch's from creation to ``completed`` (lines per second);
* the upstream's own counters: ``POST /jobs`` per line (multi-input submissions), jobs per
  line (1.0: no line submitted twice), status requests and ids per status request;
* a live request's time to first token while the batch runs, beside the same when idle (live
  requests wait in a class above batch lines for the account's job slots).

    .venv/bin/python bench/batches.py
    .venv/bin/python bench/batches.py --lines 2000 --cap 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.e2e.servers import ALICE_KEY, gateway_config, running, start_emulator, start_gateway

HEADERS = {"authorization": f"Bearer {ALICE_KEY}"}


def jsonl(lines: int, words: int) -> bytes:
    rows = (
        {
            "custom_id": f"l{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gemma-2b",
                "messages": [{"role": "user", "content": f"[[emulate:words {words}]] line {i}"}],
            },
        }
        for i in range(lines)
    )
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def ttft(client: httpx.Client, base: str) -> float:
    """Seconds to the first content of a live streamed chat request."""
    body = {
        "model": "gemma-2b",
        "stream": True,
        "messages": [{"role": "user", "content": "[[emulate:words 3]] live"}],
    }
    start = time.perf_counter()
    with client.stream("POST", base + "/v1/chat/completions", json=body, headers=HEADERS) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return time.perf_counter() - start
    return float("nan")


def stats(emulator: str) -> dict[str, Any]:
    got: dict[str, Any] = httpx.get(emulator + "/emulator/stats").json()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--words", type=int, default=5, help="words per answer")
    parser.add_argument("--cap", type=int, default=400, help="upstream.max_jobs_per_token")
    parser.add_argument("--share", type=float, default=0.5, help="batches.share")
    parser.add_argument("--probes", type=int, default=5, help="live requests timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        emulator_server = start_emulator(tmp, "--words-per-second", "200")
        with running(emulator_server) as emulator:
            config = gateway_config(
                emulator.url,
                ledger={"url": f"sqlite:///{tmp / 'ledger.db'}"},
                upstream={
                    "base_url": emulator.url, "poll_interval": 0.05,
                    "max_jobs_per_token": args.cap,
                },
                files={"max_lines": max(50_000, args.lines)},
                batches={"share": args.share, "scan_interval": 0.2},
            )  # fmt: skip
            with running(start_gateway(tmp, config)) as gateway, httpx.Client(timeout=120) as c:
                base = gateway.url
                idle = [ttft(c, base) for _ in range(args.probes)]
                content = jsonl(args.lines, args.words)
                before = stats(emulator.url)
                t0 = time.perf_counter()
                uploaded = c.post(
                    base + "/v1/files", headers=HEADERS, data={"purpose": "batch"},
                    files={"file": ("in.jsonl", content)},
                ).json()  # fmt: skip
                upload_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                batch = c.post(
                    base + "/v1/batches", headers=HEADERS,
                    json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                          "completion_window": "24h"},
                ).json()  # fmt: skip
                busy: list[float] = []
                while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                    if len(busy) < args.probes:
                        busy.append(ttft(c, base))
                    time.sleep(0.2)
                    batch = c.get(base + f"/v1/batches/{batch['id']}", headers=HEADERS).json()
                run_s = time.perf_counter() - t1
                after = stats(emulator.url)
        jobs = after["jobs_created"] - before["jobs_created"] - len(busy)
        posts = after["submit_requests"] - before["submit_requests"] - len(busy)
        status_requests = after["status_requests"] - before["status_requests"]
        ids = after["status_ids_total"] - before["status_ids_total"]
        counts = batch["request_counts"]
        print(f"batch of {args.lines} lines ({args.words} words each), job cap {args.cap}, "
              f"batch share {args.share}")  # fmt: skip
        print(f"  status             {batch['status']}  {counts}")
        print(f"  upload             {len(content) / 1e6:.1f} MB in {upload_s:.2f} s")
        print(f"  create -> done     {run_s:.1f} s = {args.lines / run_s:.0f} lines/s")
        print(f"  POST /jobs         {posts} = {posts / args.lines:.3f} per line "
              f"({args.lines / max(posts, 1):.1f} inputs per POST)")  # fmt: skip
        print(f"  jobs               {jobs} = {jobs / args.lines:.3f} per line")
        print(f"  status requests    {status_requests} "
              f"({ids / max(status_requests, 1):.1f} ids each)")  # fmt: skip
        print(f"  live TTFT idle     median {statistics.median(idle) * 1000:.0f} ms")
        if busy:
            print(f"  live TTFT in batch median {statistics.median(busy) * 1000:.0f} ms "
                  f"({len(busy)} requests)")  # fmt: skip


if __name__ == "__main__":
    main()
