"""End to end: stored responses are bounded, counted, erasable, and belong to a key's identity.

- a chain of responses stores each item once (the chain is referenced, not copied), so 8
  chained turns with a large hosted-tool item grow the store linearly;
- what is stored is what is counted: a hosted-tool item with extra fields over the item cap is a
  400, so is a response over its cap, and a key over its total gets ``storage_quota_exceeded``
  until it deletes something;
- ``DELETE`` erases a turn from what later continuations send upstream;
- a database key made with the name of a removed config key does not inherit its responses.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.e2e.conftest import job_prompt
from tests.e2e.servers import (
    ALICE_KEY,
    BOB_TOKEN,
    Server,
    gateway_config,
    running,
    start_gateway,
)

ADMIN_KEY = "sk-test-storage-admin-0123456789"
CAROL_KEY = "sk-test-carol-config-key-0123"
DATABASE_URL = os.environ.get("DATABASE_URL")
TABLES = ("", "_items", "_events")


async def _postgres(sql: str) -> Any:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres", marks=pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")
        ),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The ``responses`` config of a fresh store: a SQLite file, or tables in PostgreSQL."""
    table = f"resp_e2e_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        yield {"store_url": f"sqlite:///{tmp_path / 'r.db'}", "table": table}
        return
    yield {"store_url": str(DATABASE_URL), "table": table}
    for suffix in TABLES:
        asyncio.run(_postgres(f"DROP TABLE IF EXISTS {table}{suffix}"))


def text_bytes(store: dict[str, str]) -> int:
    """Every byte of text in the response tables, whatever their columns."""
    url, table = store["store_url"], store["table"]
    total = 0
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for suffix in TABLES:
                name = table + suffix
                for row in conn.execute(f"PRAGMA table_info({name})").fetchall():
                    got = conn.execute(f"SELECT COALESCE(SUM(LENGTH({row[1]})), 0) FROM {name}")
                    total += int(got.fetchone()[0])
        return total
    for suffix in TABLES:
        name = table + suffix
        columns = asyncio.run(
            _postgres(
                "SELECT string_agg(format('COALESCE(SUM(octet_length(%I::text)), 0)', "
                f"column_name), ' + ') FROM information_schema.columns WHERE table_name = '{name}'"
            )
        )
        total += int(asyncio.run(_postgres(f"SELECT {columns} FROM {name}")))
    return total


def hosted_item(n: int, size: int) -> dict[str, Any]:
    """A hosted tool's item: stored and counted, never sent to the model."""
    return {
        "type": "web_search_call",
        "id": f"ws_{n}",
        "status": "completed",
        "action": {"type": "search", "query": f"query {n}"},
        "results_blob": "r" * size,  # an extra field: stored, so counted
    }


def test_a_chain_stores_each_item_once(
    emulator: Server, tmp_path: Path, store: dict[str, str]
) -> None:
    size = 200_000
    config = gateway_config(emulator.url, responses=store)
    with running(start_gateway(tmp_path, config)) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        previous = None
        for n in range(8):
            made = api.responses.create(
                model="gemma-2b",
                input=[
                    hosted_item(n, size),
                    {"role": "user", "content": f"turn {n} [[emulate:reply ok{n}]]"},
                ],
                previous_response_id=previous,
            )
            assert made.output_text == f"ok{n}"
            previous = made.id
        items = api.responses.input_items.list(previous)
        assert [i.id for i in items.data][-1] == "ws_7"
    grown = text_bytes(store)
    assert grown < 8 * size * 1.2, grown  # linear: each item once, not the chain each time


def test_what_is_stored_is_counted_and_capped(
    emulator: Server, tmp_path: Path, store: dict[str, str]
) -> None:
    config = gateway_config(
        emulator.url,
        responses={
            **store,
            "max_item_bytes": 4096,
            "max_response_bytes": 16384,
            "max_key_bytes": 40000,
        },
    )
    with running(start_gateway(tmp_path, config)) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)

        with pytest.raises(openai.BadRequestError) as big_item:
            api.responses.create(
                model="gemma-2b",
                input=[hosted_item(0, 5000), {"role": "user", "content": "hi"}],
            )
        assert big_item.value.code == "item_too_large"

        with pytest.raises(openai.BadRequestError) as big_response:
            api.responses.create(
                model="gemma-2b",
                input=[
                    *(hosted_item(n, 3500) for n in range(5)),
                    {"role": "user", "content": "hi"},
                ],
            )
        assert big_response.value.code == "response_too_large"

        kept: list[str] = []
        refused = None
        for n in range(6):
            try:
                made = api.responses.create(
                    model="gemma-2b",
                    input=[
                        *(hosted_item(10 * n + i, 3000) for i in range(4)),
                        {"role": "user", "content": "[[emulate:reply ok]]"},
                    ],
                )
                kept.append(made.id)
            except openai.BadRequestError as exc:
                refused = exc
                break
        assert refused is not None and refused.code == "storage_quota_exceeded", kept
        assert 2 <= len(kept) <= 3
        # not stored: not counted
        live = api.responses.create(model="gemma-2b", input="[[emulate:reply free]]", store=False)
        assert live.output_text == "free"
        api.responses.delete(kept[0])  # erased: no longer counted
        again = api.responses.create(
            model="gemma-2b",
            input=[hosted_item(99, 3000), {"role": "user", "content": "[[emulate:reply ok]]"}],
        )
        assert again.output_text == "ok"


def test_a_deleted_turn_is_never_sent_upstream_again(
    emulator: Server, tmp_path: Path, store: dict[str, str]
) -> None:
    config = gateway_config(emulator.url, responses=store)
    with running(start_gateway(tmp_path, config)) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        first = api.responses.create(
            model="gemma-2b", input="the secret phrase tangerine [[emulate:reply one]]"
        )
        second = api.responses.create(
            model="gemma-2b",
            input="second turn [[emulate:reply two]]",
            previous_response_id=first.id,
        )
        api.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            api.responses.retrieve(first.id)
        raw = api.responses.with_raw_response.create(
            model="gemma-2b",
            input="third turn [[emulate:reply three]]",
            previous_response_id=second.id,
        )
        prompt = job_prompt(emulator, raw.headers["x-job-id"].split(",")[0])
        assert "tangerine" not in prompt
        assert "second turn" in prompt and "third turn" in prompt


def test_a_new_key_with_a_removed_keys_name_does_not_inherit_its_responses(
    emulator: Server, tmp_path: Path, store: dict[str, str]
) -> None:
    carol = {"name": "carol", "key": CAROL_KEY, "upstream_token": BOB_TOKEN}
    base = gateway_config(
        emulator.url,
        accounts=[{"name": "acct-b", "upstream_token": BOB_TOKEN}],
        admin={"keys": [{"name": "ops", "key": ADMIN_KEY, "role": "admin"}]},
        ledger={"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
        responses=store,
    )
    with running(start_gateway(tmp_path, {**base, "keys": [*base["keys"], carol]})) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=CAROL_KEY, max_retries=0)
        kept = api.responses.create(model="gemma-2b", input="carol's [[emulate:reply private]]")
        assert api.responses.retrieve(kept.id).output_text == "private"
    with running(start_gateway(tmp_path, base)) as server:  # carol is removed from the config
        made = httpx.post(
            server.url + "/admin/keys",
            json={"name": "carol", "account": "acct-b"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert made.status_code == 201, made.text
        api = openai.OpenAI(
            base_url=server.url + "/v1", api_key=made.json()["secret"], max_retries=0
        )
        with pytest.raises(openai.NotFoundError):
            api.responses.retrieve(kept.id)
        with pytest.raises(openai.NotFoundError):
            api.responses.create(model="gemma-2b", input="continue", previous_response_id=kept.id)
