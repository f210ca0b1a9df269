"""Micro-benchmarks of per-request steps on the hot path (issue 28 item 3), printed in us.

Each figure compares the step as the gateway runs it with the way it ran before, in one process,
so the ratio holds on a loaded machine even where the absolute figures do not.

.venv/bin/python bench/hotpath.py [--number 20000]

Run it with an older checkout first on PYTHONPATH to time that checkout's middleware stack: the
middleware figure uses whichever the code has (the one ``GatewayMiddleware``, or the stack of
four it replaced); the prompt figures need the plain-Python presets.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
import timeit
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.engine.prompts import PRESETS, PromptMessage, PromptTemplate
from gateway.ops.metrics import Metrics

CONVERSATION = [
    PromptMessage("system", "You are helpful."),
    PromptMessage("user", "Hello, how are you?"),
    PromptMessage("assistant", "Fine."),
    PromptMessage("user", "Tell me a joke about cats."),
]


def per_call_us(step: Callable[[], object], number: int) -> float:
    """The best of five runs of ``number`` calls, per call, in CPU time (the machine is shared)."""
    return min(timeit.repeat(step, number=number, repeat=5, timer=time.process_time)) / number * 1e6


def prompts(number: int) -> None:
    """Preset templates: the plain-Python twin vs the Jinja sandbox (4 messages, with guards)."""
    for name in ("transcript", "chatml", "llama3", "mistral"):
        python = PromptTemplate(PRESETS[name], name=name)
        sandbox = PromptTemplate(PRESETS[name], name=name)
        sandbox._python = None
        fast = per_call_us(lambda t=python: t.render(CONVERSATION), number)
        slow = per_call_us(lambda t=sandbox: t.render(CONVERSATION), number)
        ratio = slow / fast
        print(f"prompt {name:<10} python {fast:6.2f} us  sandbox {slow:6.2f} us  {ratio:5.1f}x")


def _middleware(metrics: Metrics) -> tuple[str, list[Middleware]]:
    if importlib.util.find_spec("gateway.ops.middleware") is not None:
        from gateway.ops.middleware import GatewayMiddleware

        return "one GatewayMiddleware", [Middleware(GatewayMiddleware, metrics=metrics)]
    from gateway.http import middleware as http_mw  # the stack before issue 28
    from gateway.ops import access, inflight

    stack: list[Any] = [
        Middleware(http_mw.RequestIdMiddleware),  # type: ignore[attr-defined]
        Middleware(access.AccessLogMiddleware),  # type: ignore[attr-defined]
        Middleware(inflight.InFlightMiddleware, metrics=metrics),  # type: ignore[attr-defined]
        Middleware(http_mw.HeaderGuardMiddleware),  # type: ignore[attr-defined]
    ]
    return "four middlewares", stack


def middleware(number: int) -> None:
    """A GET through the middleware to a route answering 204, called as ASGI (no server)."""

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    metrics = Metrics.create(CollectorRegistry())
    label, stack = _middleware(metrics)
    app = Starlette(routes=[Route("/v1/models", empty)], middleware=stack)
    headers = [
        (b"host", b"gateway"),
        (b"user-agent", b"OpenAI/Python 1.99"),
        (b"accept", b"application/json"),
        (b"authorization", b"Bearer sk-test"),
        (b"x-stainless-lang", b"python"),
        (b"content-type", b"application/json"),
    ]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run() -> float:
        best = float("inf")
        for _ in range(5):
            started = time.process_time()  # CPU time: the machine may be busy
            for _ in range(number):
                scope = {
                    "type": "http",
                    "method": "GET",
                    "path": "/v1/models",
                    "raw_path": b"/v1/models",
                    "query_string": b"",
                    "headers": headers,
                    "scheme": "http",
                    "server": ("127.0.0.1", 8000),
                    "app": app,
                }
                await app(scope, receive, send)
            best = min(best, time.process_time() - started)
        return best / number * 1e6

    print(f"middleware: {label}: {asyncio.run(run()):.2f} us CPU per request (route included)")


def idle_jobs(number: int) -> None:
    """A status answer of 200 running jobs with nothing new (2 KB logs): read as
    ``JobsClient.status`` reads it, with and without the last snapshots to compare against."""
    import orjson

    from gateway.config import UpstreamSettings
    from gateway.upstream import models

    settings = UpstreamSettings()
    rules = models.StatusRules.of(settings.finished_statuses, settings.failed_statuses)
    ids = [f"{i:032x}" for i in range(200)]
    job = {"states": {"default": {"status": "running", "log": "word " * 400}}, "vmStatus": "x"}
    raw = orjson.dumps({"jobs": dict.fromkeys(ids, job)})
    last = {i: models.parse_job(i, job, rules) for i in ids}
    same_as = getattr(models, "same_as", None)

    def tick(skip: bool) -> int:
        jobs = models.parse_json(raw)["jobs"]
        unchanged = 0
        for job_id, data in jobs.items():
            before = last[job_id]
            if skip and same_as is not None and same_as(data, before):
                snapshot = before
            else:
                snapshot = models.parse_job(job_id, data, rules)
            # The poller's test, then the watch's (a full comparison, log included).
            unchanged += snapshot is before or snapshot == before
        return unchanged

    rounds = max(1, number // 200)
    for skip in (False, True):
        us = per_call_us(lambda s=skip: tick(s), rounds) / len(ids)
        label = "skipped (same_as)" if skip else "parsed and compared"
        print(f"idle job per tick: {label:<20} {us:5.2f} us (JSON parsing included)")


def lane_churn(number: int) -> None:
    """A job ends and another starts, with 300, 600 and 1,000 in flight (status_max_ids 100):
    what ``Lanes`` costs per pair (the merge check at each end included)."""
    for live in (300, 600, 1000):
        us = per_call_us(_churn(live), number)
        print(f"lanes, a job ends and one starts: {live:>5} in flight {us:5.2f} us")


def _churn(live: int) -> Callable[[], None]:
    import itertools
    import random

    from gateway.upstream.lanes import Lanes

    rng = random.Random(1)
    lanes = Lanes(0.25, 8000, 100)
    ids = [f"{i:036x}" for i in range(live)]
    for job_id in ids:
        lanes.place(job_id, 0.0)
    serial = itertools.count(live)

    def pair() -> None:
        old = ids.pop(rng.randrange(len(ids)))
        lanes.remove(old)
        new = f"{next(serial):036x}"
        lanes.place(new, 0.0)
        ids.append(new)

    return pair


def socket_writes(number: int) -> None:
    """What one write to a socket costs, by size: a process sends to a reader (its child) that
    sleeps in ``epoll`` between reads, as a client waiting for the next chunk does. On loopback
    the sender's system call also delivers the bytes and wakes the reader: why a stream's
    pieces should leave in as few writes as they can (gateway/http/connections.py)."""
    import os
    import select
    import socket

    for size in (250, 4000):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        pid = os.fork()
        if pid == 0:  # the reader
            peer, _ = server.accept()
            poll = select.epoll()
            poll.register(peer.fileno(), select.EPOLLIN)
            while True:
                poll.poll()
                if not peer.recv(1 << 20):
                    os._exit(0)
        sender = socket.create_connection(server.getsockname())
        sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b"x" * size
        started = time.process_time()
        for i in range(number):
            sender.send(data)
            if i % 10 == 0:
                time.sleep(0.0005)  # the reader drains and sleeps again
        us = (time.process_time() - started) / number * 1e6
        sender.close()
        os.waitpid(pid, 0)
        server.close()
        print(f"a write to a socket on loopback: {size:>5} bytes {us:5.2f} us (CPU, kernel too)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    args = parser.parse_args()
    middleware(args.number // 4)
    idle_jobs(args.number)
    lane_churn(args.number)
    socket_writes(args.number)
    if importlib.util.find_spec("gateway.engine.preset_render") is not None:
        prompts(args.number)


if __name__ == "__main__":
    main()
