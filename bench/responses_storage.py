"""Storage per chained conversation: how the Responses store grows, turn by turn.

    .venv/bin/python bench/responses_storage.py                 # 8 turns of 900 KB items
    .venv/bin/python bench/responses_storage.py --turns 16 --item-kb 100

Starts an emulator and a gateway (SQLite store in a temporary directory), then sends a chain of
``previous_response_id`` requests, each with one hosted-tool item of ``--item-kb`` KB (stored,
never sent to the model) and a short user message. After each turn it prints the bytes of text
in the response tables and the size of the database file (WAL included). Linear growth is
about one item per turn; a store that copies the chain grows quadratically.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from pathlib import Path

import httpx

from bench.servers import start_emulator, start_gateway


def text_bytes(db: Path, table: str = "gateway_responses") -> int:
    total = 0
    with sqlite3.connect(db) as conn:
        for suffix in ("", "_items", "_events"):
            name = table + suffix
            for row in conn.execute(f"PRAGMA table_info({name})").fetchall():
                got = conn.execute(f"SELECT COALESCE(SUM(LENGTH({row[1]})), 0) FROM {name}")
                total += int(got.fetchone()[0])
    return total


def file_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--item-kb", type=int, default=900)
    args = parser.parse_args()
    size = args.item_kb * 1000
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        store = logs / "responses.db"
        with start_emulator(logs, "storage", queue_seconds=0.05) as emulator:
            system = start_gateway(
                logs,
                "storage",
                emulator.url,
                0.05,
                1,
                {
                    "responses.store_url": f"sqlite:///{store}",
                    "limits.max_body_bytes": size + 100_000,
                },
            )
            with system.server, httpx.Client(timeout=120) as http:
                previous = None
                print(f"{'turn':>4} {'text bytes':>12} {'file bytes':>12} {'per turn':>10}")
                for turn in range(args.turns):
                    body = {
                        "model": system.model,
                        "input": [
                            {
                                "type": "web_search_call",
                                "id": f"ws_{turn}",
                                "status": "completed",
                                "action": {"type": "search", "query": "q"},
                                "results_blob": "r" * size,
                            },
                            {"role": "user", "content": f"turn {turn} [[emulate:reply ok]]"},
                        ],
                    }
                    if previous:
                        body["previous_response_id"] = previous
                    answer = http.post(
                        system.server.url + "/v1/responses",
                        json=body,
                        headers={"authorization": f"Bearer {system.api_key}"},
                    )
                    answer.raise_for_status()
                    previous = answer.json()["id"]
                    text = text_bytes(store)
                    print(
                        f"{turn + 1:>4} {text:>12,} {file_bytes(store):>12,} "
                        f"{text / (turn + 1):>10,.0f}"
                    )
                print(
                    f"item: {size:,} bytes; {args.turns} turns stored {text / 1e6:.1f} MB of text"
                )


if __name__ == "__main__":
    main()
