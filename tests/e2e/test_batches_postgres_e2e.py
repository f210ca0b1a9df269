"""End to end: a batch run with the gateway's database in PostgreSQL (``DATABASE_URL``).

Files, their chunks, batches and their lines go through the one database layer to the
machine's PostgreSQL, in tables of this run's own (dropped afterwards): upload, create,
complete, and the output file read back through the openai SDK.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import openai
import pytest

from tests.e2e.servers import ALICE_KEY, Server, gateway_config, running, start_gateway
from tests.e2e.test_batches_e2e import CHAT, chat, jsonl, line, results, wait_done

DATABASE_URL = os.environ.get("DATABASE_URL")
pytestmark = pytest.mark.skipif(
    not DATABASE_URL, reason="DATABASE_URL unset (a PostgreSQL server to hold the batches)"
)


async def _postgres(sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """This run's table prefix; every table named after it is dropped afterwards."""
    run = f"bpg_{uuid.uuid4().hex[:10]}"
    yield run
    for row in asyncio.run(
        _postgres("SELECT tablename FROM pg_tables WHERE tablename LIKE $1", run + "%")
    ):
        asyncio.run(_postgres(f'DROP TABLE IF EXISTS "{row[0]}" CASCADE'))


def test_a_batch_runs_to_completion_with_postgresql(
    emulator: Server, tmp_path: Any, prefix: str
) -> None:
    config = gateway_config(
        emulator.url,
        ledger={"url": DATABASE_URL, "table": f"{prefix}_usage"},
        key_store={"table_prefix": f"{prefix}_"},
        responses={"table": f"{prefix}_responses"},
        files={"table": f"{prefix}_files", "chunk_bytes": 1024},  # several chunks per file
        batches={"table": f"{prefix}_batches", "scan_interval": 0.2},
    )
    with running(start_gateway(tmp_path, config)) as gateway:
        api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        lines = [line(f"ok-{i}", chat(f"[[emulate:reply answer {i}]]")) for i in range(40)]
        lines.append(line("unknown", chat("hello", model="no-such-model")))
        uploaded = api.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        assert api.files.content(uploaded.id).content == jsonl(lines)
        made = api.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h")
        done = wait_done(api, made.id)
        assert done.status == "completed", done
        assert done.request_counts is not None
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (41, 40, 1)
        outputs, errors = results(api, done.output_file_id), results(api, done.error_file_id)
        assert sorted(outputs) == sorted(f"ok-{i}" for i in range(40))
        for i in range(40):
            response = outputs[f"ok-{i}"]["response"]
            assert response["status_code"] == 200
            assert response["body"]["choices"][0]["message"]["content"] == f"answer {i}"
        assert list(errors) == ["unknown"]
        assert errors["unknown"]["response"]["status_code"] == 404
        assert [b.id for b in api.batches.list().data] == [made.id]
    # It all lived in PostgreSQL, owned by the key's identity.
    stored = asyncio.run(_postgres(f"SELECT key_name, key_id, status FROM {prefix}_batches"))
    assert [(r["key_name"], r["status"]) for r in stored] == [("alice", "completed")]
    assert str(stored[0]["key_id"]).startswith("sha256:")
    chunks = asyncio.run(_postgres(f"SELECT COUNT(*) FROM {prefix}_files_chunks"))
    assert chunks[0][0] > 3
    lines_done = asyncio.run(
        _postgres(f"SELECT state, COUNT(*) FROM {prefix}_batches_lines GROUP BY state")
    )
    assert {r[0]: r[1] for r in lines_done} == {"done": 41}
