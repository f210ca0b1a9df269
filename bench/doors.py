"""Gateway CPU per completion through each front door: chat completions, Responses, Messages,
Ollama.

The doors share one lifecycle (``gateway.serving.web.serve``); what differs is the wire
request's validation and translation and the codec that writes the answer. One emulator (no
queue, 1000 words/s), one gateway; each round sends the same number of fresh prompts (no cache)
through every door in turn (Responses as clients send it: ``store`` left at its default, true,
so each answer is also stored; and with ``store: false``, which tells the door's own work from
the storage), non-streamed and streamed, ``--concurrency`` at a time, and
reads the gateway process's CPU time around each batch. Rounds interleave the doors so a busy
machine weighs on them alike; the median over rounds is printed, and each door's ratio to chat
completions.

    .venv/bin/python bench/doors.py
    .venv/bin/python bench/doors.py --requests 300 --rounds 5 --words 40
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import tree_usage
from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

HEADERS = {"authorization": f"Bearer {ALICE_KEY}", "anthropic-version": "2023-06-01"}
Body = Callable[[str, bool], dict[str, Any]]


def _chat(prompt: str, stream: bool) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    return {"model": "gemma-2b", "messages": messages, "stream": stream}


def _messages(prompt: str, stream: bool) -> dict[str, Any]:
    return {**_chat(prompt, stream), "max_tokens": 1024}


def _responses(prompt: str, stream: bool) -> dict[str, Any]:
    return {"model": "gemma-2b", "input": prompt, "stream": stream}


#: door -> (path, request body)
DOORS: dict[str, tuple[str, Body]] = {
    "chat completions": ("/v1/chat/completions", _chat),
    "responses": ("/v1/responses", _responses),
    "responses, store off": ("/v1/responses", lambda p, s: {**_responses(p, s), "store": False}),
    "messages": ("/v1/messages", _messages),
    "ollama /api/chat": ("/api/chat", lambda p, s: {**_chat(p, s), "model": "gemma:2b"}),
}


async def _one(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    if not body["stream"]:
        answer = await http.post(path, json=body)
        answer.raise_for_status()
        return
    async with http.stream("POST", path, json=body) as answer:
        answer.raise_for_status()
        async for _ in answer.aiter_bytes():
            pass


async def cpu_ms_per_completion(
    gateway: Server,
    http: httpx.AsyncClient,
    path: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
) -> float:
    queue = list(bodies)

    async def worker() -> None:
        while queue:
            await _one(http, path, queue.pop())

    before = tree_usage(gateway.process.pid).cpu
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (tree_usage(gateway.process.pid).cpu - before) * 1000 / len(bodies)


async def run(args: argparse.Namespace) -> dict[tuple[str, bool], list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="doors-"))
    extra = ("--queue-seconds", "0", "--words-per-second", "1000")
    job = f"[[emulate:words {args.words}]] [[emulate:queue 0]]"
    figures: dict[tuple[str, bool], list[float]] = {}
    counter = itertools.count()
    with running(start_emulator(tmp, *extra)) as emulator:
        config = gateway_config(
            emulator.url,
            upstream={"base_url": emulator.url, "poll_interval": 0.02},
            logging={"format": "json", "level": "warning"},
            limits={"keepalive_interval": 5.0, "default_deadline": 60},
        )
        limits = httpx.Limits(max_connections=args.concurrency)
        with running(start_gateway(tmp, config)) as gateway:
            async with httpx.AsyncClient(
                base_url=gateway.url, headers=HEADERS, timeout=60, limits=limits
            ) as http:
                for door, (path, body) in DOORS.items():  # warm every path once
                    await _one(http, path, body(f"warm {door} {job}", False))
                for _ in range(args.rounds):
                    for stream in (False, True):
                        for door, (path, body) in DOORS.items():
                            prompts = [
                                f"{door} {next(counter)} {job}" for _ in range(args.requests)
                            ]
                            cpu = await cpu_ms_per_completion(
                                gateway,
                                http,
                                path,
                                [body(p, stream) for p in prompts],
                                args.concurrency,
                            )
                            figures.setdefault((door, stream), []).append(cpu)
    return figures


def report(figures: dict[tuple[str, bool], list[float]], args: argparse.Namespace) -> None:
    print(
        f"Gateway CPU per completion by door ({args.requests} requests x {args.rounds} rounds, "
        f"{args.concurrency} at a time, {args.words} words each; median of rounds)"
    )
    print(f"{'door':>20} {'non-streamed':>14} {'vs chat':>8} {'streamed':>12} {'vs chat':>8}")
    base = {s: statistics.median(figures[("chat completions", s)]) for s in (False, True)}
    for door in DOORS:
        cells = []
        for stream in (False, True):
            ms = statistics.median(figures[(door, stream)])
            cells.append(f"{ms:>12.2f}ms {ms / base[stream] - 1:>+7.0%}")
        print(f"{door:>20} {cells[0]} {cells[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per door per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests at once")
    parser.add_argument("--words", type=int, default=40, help="words per answer")
    args = parser.parse_args()
    report(asyncio.run(run(args)), args)


if __name__ == "__main__":
    main()
