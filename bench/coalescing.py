"""How many status requests the upstream sees for N concurrent streams on one upstream token.

Starts the emulator and the gateway on loopback, opens N streams at once, and prints the
number of status requests per tick and ids per request, next to what per-request polling
would have cost (one status request per job per tick).

    .venv/bin/python bench/coalescing.py --streams 100
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.e2e.servers import (
    ALICE_KEY,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)


async def run(streams: int, words: int, poll_interval: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="coalescing-"))
    with running(start_emulator(tmp, "--words-per-second", "10")) as emulator:
        config = gateway_config(emulator.url)
        config["upstream"]["poll_interval"] = poll_interval
        with running(start_gateway(tmp, config)) as gateway:
            client = openai.AsyncOpenAI(
                base_url=gateway.url + "/v1",
                api_key=ALICE_KEY,
                max_retries=0,
                http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=streams)),
            )
            admin = httpx.AsyncClient(base_url=emulator.url)
            await admin.post("/emulator/stats/reset")

            async def one(i: int) -> str:
                stream = await client.chat.completions.create(
                    model="gemma-2b",
                    messages=[{"role": "user", "content": f"q{i} [[emulate:words {words}]]"}],
                    stream=True,
                )
                return "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )

            started = time.perf_counter()
            texts = await asyncio.gather(*(one(i) for i in range(streams)))
            elapsed = time.perf_counter() - started
            stats = (await admin.get("/emulator/stats")).json()
            await admin.aclose()
            await client.close()
    ok = sum(1 for t in texts if t)
    ticks = elapsed / poll_interval
    status = stats["status_requests"]
    per_request_polling = streams * ticks
    print(f"streams completed:            {ok}/{streams} in {elapsed:.2f} s")
    print(f"status requests seen:         {status}")
    print(f"ticks (elapsed / interval):   {ticks:.0f}")
    print(f"status requests per tick:     {status / ticks:.2f}")
    print(f"ids per status request (max): {stats['max_ids_per_status']}")
    print(f"ids per status request (avg): {stats['status_ids_total'] / max(status, 1):.1f}")
    print(
        f"per-request polling would be: ~{per_request_polling:.0f} status requests "
        f"({per_request_polling / max(status, 1):.0f}x more)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    args = parser.parse_args()
    asyncio.run(run(args.streams, args.words, args.poll_interval))


if __name__ == "__main__":
    main()
