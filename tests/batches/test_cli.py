"""``gateway batches list`` / ``inspect``: every key's batches and their progress, from the
database (a real SQLite file, written by the store the runner uses)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from gateway.batches.store import BatchStore, Line, StoredBatch
from gateway.cli import main


def _seed(db: Path) -> None:
    async def seed() -> None:
        store = BatchStore(f"sqlite:///{db}", "gateway_batches")
        await store.open()
        now = time.time()
        for n, (batch_id, key, door) in enumerate(
            [("batch_a", "alice", "openai"), ("msgbatch_b", "bob", "anthropic")]
        ):
            await store.add_lines([Line(batch_id, i, f"c{i}", {}) for i in range(3)])
            body = {"endpoint": "/v1/chat/completions"}
            batch = StoredBatch(
                batch_id, key, door, "in_progress", now + n, now + 9, body, key_id=f"db:{key}:1.0"
            )
            await store.put(batch)
        first = (await store.lines("batch_a", ("queued",), 1))[0]
        await store.finish(first, "output", {"custom_id": "c0"})
        await store.claim("batch_a", "gw-1", time.time(), 30)
        await store.close()

    asyncio.run(seed())


@pytest.fixture
def config(tmp_path: Path) -> str:
    _seed(tmp_path / "ledger.db")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"}}))
    return str(path)


def test_list_shows_every_keys_batches_with_progress(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["batches", "list", "--config", config, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["key"], r["door"]) for r in rows] == [
        ("msgbatch_b", "bob", "anthropic"), ("batch_a", "alice", "openai"),
    ]  # fmt: skip
    assert (rows[1]["total"], rows[1]["done"], rows[1]["pending"]) == (3, 1, 2)
    assert main(["batches", "list", "--config", config, "--key", "alice"]) == 0
    text = capsys.readouterr().out
    assert "batch_a" in text and "msgbatch_b" not in text


def test_inspect_shows_the_runner_and_the_object(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["batches", "inspect", "batch_a", "--config", config, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["runner"] == "gw-1" and shown["lease_seconds_left"] > 20
    assert shown["object"] == {"endpoint": "/v1/chat/completions"}
    assert main(["batches", "inspect", "nope", "--config", config]) == 1
    assert "no batch nope" in capsys.readouterr().err
